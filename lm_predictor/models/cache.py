"""KV-cache geometry and filled caches, probed from the model itself.

`cache_layout(model)` runs a one-token forward on a meta twin of the model with a fresh
`DynamicCache` and reads back what each layer keeps per token (grouped KV heads, DeepSeek's
compressed MLA latents, sliding windows all come out right). `filled_cache` builds a
`DynamicCache` holding N tokens per layer with those shapes (zeros; empty on meta), the way
generation would have left it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass(frozen=True)
class CacheLayer:
    """What one layer keeps per cached token: keys (heads x dim) and values (heads x dim)."""

    index: int  # the layer's index in the cache
    key_heads: int
    key_dim: int
    value_heads: int
    value_dim: int
    window: int | None  # sliding-window layers keep at most this many tokens
    itemsize: int

    @property
    def bytes_per_token(self) -> int:
        """Bytes per cached token per sequence."""
        return (self.key_heads * self.key_dim + self.value_heads * self.value_dim) * self.itemsize


def forward_params(model: torch.nn.Module) -> set[str]:
    """Names of the keyword arguments `model.forward` accepts."""
    return set(inspect.signature(model.forward).parameters)


def cache_kwarg(model: torch.nn.Module) -> str | None:
    """The forward argument that takes a KV cache: `cache` (transformers >= 5.2x) or
    `past_key_values` (older); None when the model takes neither."""
    params = forward_params(model)
    return next((k for k in ("cache", "past_key_values") if k in params), None)


def supports_cache(model: torch.nn.Module) -> bool:
    """Whether the model is a decoder that generates with a KV cache (not encoder-decoder)."""
    config = getattr(model, "config", None)
    can_generate = getattr(model, "can_generate", lambda: False)()
    return (bool(can_generate) and cache_kwarg(model) is not None
            and not getattr(config, "is_encoder_decoder", False))


def param_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 if none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def cache_layout(model: torch.nn.Module, *, dtype: torch.dtype | None = None) -> list[CacheLayer]:
    """Per-layer KV-cache geometry, probed with a one-token forward of `model` itself: on meta
    (value reads of boolean masks answered, see `lm_predictor.fallback.MetaScalarAnswers`), or
    on the real device the model lives on (a model on cpu/cuda is never probed on meta).

    Empty for models without a cache (encoders). `dtype` defaults to the model's dtype."""
    if not supports_cache(model):
        return []
    dtype = dtype or param_dtype(model)
    device = next((p.device for p in model.parameters()), torch.device("meta"))
    cache = DynamicCache(config=model.config)
    make = torch.empty if device.type == "meta" else torch.zeros
    ids = make((1, 1), dtype=torch.long, device=device)
    kwargs = {"input_ids": ids, "use_cache": True, cache_kwarg(model) or "cache": cache}
    with torch.inference_mode():
        if device.type == "meta":
            from lm_predictor.fallback import MetaScalarAnswers

            with MetaScalarAnswers():
                model(**kwargs)
        else:
            model(**kwargs)
    itemsize = torch.empty((), dtype=dtype).element_size()
    out = []
    for index, layer in enumerate(cache.layers):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None or keys.dim() != 4:
            continue  # a layer that shares another's cache or keeps none
        out.append(CacheLayer(index, keys.shape[1], keys.shape[-1], values.shape[1],
                              values.shape[-1],
                              getattr(layer, "sliding_window", None), itemsize))
    return out


def filled_cache(model: torch.nn.Module, *, batch_size: int, kv_len: int,
                 device: str | torch.device) -> DynamicCache:
    """A `DynamicCache` for `model` holding `kv_len` tokens per layer (zeros; empty on meta)."""
    dtype = param_dtype(model)
    cache = DynamicCache(config=model.config)
    make = torch.empty if torch.device(device).type == "meta" else torch.zeros
    for lay in cache_layout(model):
        k = make((batch_size, lay.key_heads, kv_len, lay.key_dim), dtype=dtype, device=device)
        v = make((batch_size, lay.value_heads, kv_len, lay.value_dim), dtype=dtype,
                 device=device)
        cache.update(k, v, lay.index)
    return cache


