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

from typing import Any, Literal

import torch
from transformers import PretrainedConfig

from lm_predictor.errors import ModelError
from lm_predictor.models.cache import cache_kwarg, filled_cache, forward_params, supports_cache

Phase = Literal["prefill", "decode"]


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
