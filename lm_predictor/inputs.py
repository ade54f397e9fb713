"""Forward-pass inputs for a built model: prefill (a prompt) or decode (one token on a KV cache).

Semantics of `build_inputs(model, config, batch_size=B, seq_len=S, phase=..., kv_len=N)`:
- `input_ids` (B, S) of random token ids below the vocab size (seeded); on `meta`, an empty
  long tensor (meta has no values). `token_type_ids` (zeros) for models with token types (BERT);
  `decoder_input_ids` (B, S) for encoder-decoder models (T5).
- `phase="decode"` is one generation step: `seq_len` is ignored and the new-token length is 1,
  on top of a KV cache of `kv_len` tokens. `phase="prefill"` with `kv_len > 0` is a chunked
  prefill: S new tokens on top of N cached ones. Either way, a cache makes the call carry
  `cache` (`past_key_values` in older transformers) = a `DynamicCache` holding N tokens per
  layer, `use_cache=True` and `position_ids` (and `cache_position` where the model takes it)
  starting at N.
- The cache is built from `DynamicCache(config=model.config)`, so sliding-window layers keep at
  most their window just as in generation, and is filled with `cache.update(k, v, layer)` using
  the shapes the model itself caches: `cache_layout` finds them with a one-token forward on a
  meta twin (grouped KV heads, DeepSeek's compressed MLA latents, ... all come out right).
  Values are zeros (empty on meta), in the model's parameter dtype, on its device.
- `attention_mask` is all ones over the N + S visible tokens (no padding). By default it is
  omitted on `meta`: transformers' SDPA mask shortcut reads the mask's values (`.all()`), which
  meta tensors do not have, and an all-ones mask computes the same attention as no mask. Pass
  `attention_mask=True/False` to force it.

Limits: decoder-only and encoder-decoder text models; decode (and cached prefill) only for
models that generate with a cache and are not encoder-decoder; no padding or ragged batches.

Example:
    >>> from lm_predictor.models import build_model, load_preset, tiny_config
    >>> cfg = tiny_config(load_preset("meta-llama/Llama-3.1-8B"))
    >>> model = build_model(cfg, device="cpu")
    >>> kw = build_inputs(model, cfg, batch_size=2, seq_len=1, phase="decode", kv_len=16,
    ...                   device="cpu")
    >>> model(**kw).logits.shape, kw["cache"].get_seq_length()
    (torch.Size([2, 1, 128]), 17)
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import DynamicCache, PretrainedConfig

from lm_predictor.models import ModelError, build_model

Phase = Literal["prefill", "decode"]


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
    """Per-layer KV-cache geometry, probed with a one-token forward on a meta twin of `model`.

    Empty for models without a cache (encoders). `dtype` defaults to the model's dtype."""
    if not supports_cache(model):
        return []
    dtype = dtype or param_dtype(model)
    on_meta = all(p.device.type == "meta" for p in model.parameters())
    twin = model if on_meta else build_model(copy.deepcopy(model.config), device="meta",
                                             dtype=dtype)
    cache = DynamicCache(config=twin.config)
    ids = torch.empty((1, 1), dtype=torch.long, device="meta")
    with torch.inference_mode():
        twin(input_ids=ids, use_cache=True, **{cache_kwarg(twin) or "cache": cache})
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


def token_ids(batch_size: int, length: int, vocab: int, device: str | torch.device,
              generator: torch.Generator) -> torch.Tensor:
    """Random token ids (B, length) below `vocab`; an empty long tensor on meta."""
    if torch.device(device).type == "meta":
        return torch.empty((batch_size, length), dtype=torch.long, device="meta")
    return torch.randint(0, vocab, (batch_size, length), generator=generator).to(device)


def build_inputs(model: torch.nn.Module, config: PretrainedConfig, *, batch_size: int,
                 seq_len: int, phase: Phase = "prefill", kv_len: int = 0,
                 device: str | torch.device = "meta", attention_mask: bool | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for `model(**inputs)` (see the module docstring for the semantics)."""
    if phase not in ("prefill", "decode"):
        raise ModelError(f"unknown phase {phase!r}; use 'prefill' or 'decode'")
    if batch_size < 1 or kv_len < 0 or (phase == "prefill" and seq_len < 1):
        raise ModelError(f"need batch_size >= 1, seq_len >= 1 and kv_len >= 0 (got {batch_size}, "
                         f"{seq_len}, {kv_len})")
    new = 1 if phase == "decode" else seq_len
    params = forward_params(model)
    text = config.get_text_config()
    gen = torch.Generator().manual_seed(seed)
    inputs: dict[str, Any] = {"input_ids": token_ids(batch_size, new, int(text.vocab_size),
                                                     device, gen)}
    if "token_type_ids" in params and getattr(text, "type_vocab_size", 0):
        inputs["token_type_ids"] = torch.zeros((batch_size, new), dtype=torch.long, device=device)
    if getattr(config, "is_encoder_decoder", False):
        if phase == "decode" or kv_len:
            raise ModelError(f"{config.model_type} is an encoder-decoder model; only "
                             "--phase prefill without --kv-len is supported for it")
        inputs["decoder_input_ids"] = token_ids(batch_size, new, int(text.vocab_size), device,
                                                gen)
    elif phase == "decode" or kv_len:
        if not supports_cache(model):
            raise ModelError(f"{type(model).__name__} does not generate with a KV cache; use "
                             "--phase prefill without --kv-len for it")
        inputs[cache_kwarg(model) or "cache"] = filled_cache(model, batch_size=batch_size,
                                                             kv_len=kv_len, device=device)
        inputs["use_cache"] = True
        positions = torch.arange(kv_len, kv_len + new, dtype=torch.long, device=device)
        if "position_ids" in params:
            inputs["position_ids"] = positions.unsqueeze(0).expand(batch_size, new)
        if "cache_position" in params:
            inputs["cache_position"] = positions
    if attention_mask is None:
        attention_mask = torch.device(device).type != "meta"
    if attention_mask and "attention_mask" in params:
        inputs["attention_mask"] = torch.ones((batch_size, kv_len + new), dtype=torch.long,
                                              device=device)
    return inputs
