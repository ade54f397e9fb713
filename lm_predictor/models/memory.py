"""Memory sizing of one forward pass on a device, and the check that it fits before building.

Weights come from the meta-built model's parameter count, the KV cache from the layout the model
really caches (`cache.cache_layout`), activations from a rough upper estimate (see
`estimate_memory`). `check_fits` refuses to build on a real device that cannot hold the model.
Limits: `check_fits` knows cpu (Linux `/proc/meminfo`) and cuda only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PretrainedConfig

from lm_predictor.errors import ModelError
from lm_predictor.models.build import build_model, count_parameters
from lm_predictor.models.cache import cache_layout

GIB = 1024**3


# ---------------------------------------------------------------------------------------------
# memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one forward pass needs on a device."""

    weights_bytes: int
    activation_bytes_estimate: int
    kv_cache_bytes: int
    total: int


def _text_dims(config: PretrainedConfig) -> dict[str, int]:
    c = config.get_text_config()
    hidden = int(c.hidden_size)
    heads = int(c.num_attention_heads)
    inter = next((getattr(c, k) for k in ("intermediate_size", "ffn_dim", "n_inner", "d_ff")
                  if isinstance(getattr(c, k, None), int)), 4 * hidden)
    top_k = getattr(c, "num_experts_per_tok", None)
    moe_inter = getattr(c, "moe_intermediate_size", None) or inter
    if isinstance(top_k, int):
        inter = max(inter, top_k * moe_inter)
    return {"hidden": hidden, "heads": heads, "inter": int(inter), "vocab": int(c.vocab_size)}


def estimate_memory(config_or_model: PretrainedConfig | torch.nn.Module, *, batch_size: int,
                    seq_len: int, kv_len: int = 0, dtype: torch.dtype = torch.float32
                    ) -> MemoryEstimate:
    """Weights, activations and KV cache of one forward pass over `seq_len` new tokens on top of
    `kv_len` cached ones, in `dtype`.

    - weights: parameter count of the meta-built model x itemsize (tied weights once).
    - KV cache: the per-layer key/value shapes the model really caches (probed by a one-token
      forward on meta, so MLA latents and sliding windows are exact) x (kv_len + seq_len) tokens,
      sliding layers capped at their window.
    - activations, a rough upper estimate of the live set at the peak of one inference forward
      pass (layers free their intermediates without autograd, so there is no factor of depth):
      B*S*(7*H + 3*I) for the residual stream, norms, q/k/v, attention output and the gated MLP
      (I = max(intermediate, top_k * expert intermediate)), + 2*B*heads*S*(S + kv) for the eager
      attention scores and their softmax (SDPA/flash kernels need less), + B*S*V for the logits.
    """
    if isinstance(config_or_model, torch.nn.Module):
        model, config = config_or_model, config_or_model.config
    else:
        config = config_or_model
        model = build_model(config, device="meta", dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    weights = count_parameters(model) * itemsize
    tokens = kv_len + seq_len
    kv = sum(lay.bytes_per_token * min(tokens, lay.window or tokens)
             for lay in cache_layout(model, dtype=dtype)) * batch_size
    dims = _text_dims(config)
    b, s = batch_size, seq_len
    act = (b * s * (7 * dims["hidden"] + 3 * dims["inter"])
           + 2 * b * dims["heads"] * s * tokens + b * s * dims["vocab"]) * itemsize
    return MemoryEstimate(weights, act, kv, weights + act + kv)


def available_bytes(device: str) -> int | None:
    """Free memory on `device`: MemAvailable for cpu, `mem_get_info` for cuda; None if unknown."""
    dev = torch.device(device)
    if dev.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(dev)[0])
    return None


def check_fits(estimate: MemoryEstimate, device: str) -> None:
    """Raise `ModelError` when `estimate.total` exceeds the free memory of `device`.

    `meta` always fits; devices whose free memory cannot be read (mps, xpu, ...) are not checked."""
    if torch.device(device).type == "meta":
        return
    free = available_bytes(device)
    if free is None or estimate.total <= free:
        return
    raise ModelError(
        f"model needs ~{estimate.total / GIB:.1f} GiB (weights {estimate.weights_bytes / GIB:.1f}, "
        f"activations {estimate.activation_bytes_estimate / GIB:.1f}, KV cache "
        f"{estimate.kv_cache_bytes / GIB:.1f}) but {device} has {free / GIB:.1f} GiB available; "
        "use --device meta to analyse without allocating")
