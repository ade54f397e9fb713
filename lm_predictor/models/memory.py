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
from typing import Any

import torch
from transformers import PretrainedConfig

from lm_predictor.errors import ModelError
from lm_predictor.models.build import build_model, count_parameters
from hardware.memory import MemoryBreakdown
from lm_predictor.fallback import truncated_config
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
    - KV cache: on meta, the per-layer key/value shapes the model really caches (probed by a
      one-token forward, so MLA latents and sliding windows are exact) x (kv_len + seq_len)
      tokens, sliding layers capped at their window; for a config (sizing before a real
      device is used) config arithmetic, an upper bound: layers x 2 x kv heads x head dim
      (no forward pass at all, so `--device cpu` never probes on meta).
    - activations, a rough upper estimate of the live set at the peak of one inference forward
      pass (layers free their intermediates without autograd, so there is no factor of depth):
      B*S*(7*H + 3*I) for the residual stream, norms, q/k/v, attention output and the gated MLP
      (I = max(intermediate, top_k * expert intermediate)), + 2*B*heads*S*(S + kv) for the eager
      attention scores and their softmax (SDPA/flash kernels need less), + B*S*V for the logits.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    tokens = kv_len + seq_len
    if isinstance(config_or_model, torch.nn.Module):
        model, config = config_or_model, config_or_model.config
        kv = sum(lay.bytes_per_token * min(tokens, lay.window or tokens)
                 for lay in cache_layout(model, dtype=dtype)) * batch_size
    else:
        config = config_or_model
        model = build_model(config, device="meta", dtype=dtype)  # parameters only: no forward
        kv = kv_bytes_from_config(config, tokens, itemsize) * batch_size
    weights = count_parameters(model) * itemsize
    dims = _text_dims(config)
    b, s = batch_size, seq_len
    act = (b * s * (7 * dims["hidden"] + 3 * dims["inter"])
           + 2 * b * dims["heads"] * s * tokens + b * s * dims["vocab"]) * itemsize
    return MemoryEstimate(weights, act, kv, weights + act + kv)


def kv_bytes_from_config(config: PretrainedConfig, tokens: int, itemsize: int) -> int:
    """Upper bound of one sequence's KV cache from the config alone: layers x (keys + values) x
    kv heads x head dim x tokens x itemsize (0 for models without a cache)."""
    c = config.get_text_config()
    if getattr(config, "is_encoder_decoder", False) or not getattr(c, "use_cache", True):
        return 0
    layers = next((getattr(c, k) for k in ("num_hidden_layers", "n_layer", "num_layers")
                   if isinstance(getattr(c, k, None), int)), 0)
    heads = next((getattr(c, k) for k in ("num_attention_heads", "n_head", "num_heads")
                  if isinstance(getattr(c, k, None), int)), 0)
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    hidden = next((getattr(c, k) for k in ("hidden_size", "n_embd", "d_model")
                   if isinstance(getattr(c, k, None), int)), 0)
    head_dim = getattr(c, "head_dim", None) or (hidden // heads if heads else 0)
    return 2 * layers * int(kv_heads) * int(head_dim) * tokens * itemsize


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


# --- memory from the trace (hardware memory, analyze's sizing) -----------------------------



class TracedMemory:
    """Memory of one model in one dtype under one kernel model, from meta traces (memoised)."""

    def __init__(self, config: Any, dtype: Any = None, kernels: str = "fused",
                 logits: str | None = None, *, probe_layers: int | None = 2) -> None:
        import torch

        from hardware.kernels import check_kernels

        check_kernels(kernels, logits)
        self.kernels = kernels
        self.logits = logits or ("last" if kernels == "fused" else "all")
        self.dtype = dtype or torch.float32
        self.config = config
        full = build_model(config, device="meta", dtype=self.dtype)
        self.itemsize = torch.empty((), dtype=self.dtype).element_size()
        self.weights_bytes = sum(p.numel() for p in full.parameters()) * self.itemsize
        self.layout = cache_layout(full, dtype=self.dtype)
        self.model = full if probe_layers is None else build_model(
            truncated_config(config, probe_layers), device="meta", dtype=self.dtype)
        del full
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.context_limit: int | None = getattr(text, "max_position_embeddings", None)
        self._memo: dict[tuple[int, int, int], tuple[int, int]] = {}

    def kv_cache_bytes(self, batch: int, tokens: int) -> int:
        """One copy of the full model's KV cache for `tokens` tokens per sequence."""
        return batch * sum(lay.bytes_per_token * min(tokens, lay.window or tokens)
                           for lay in self.layout)

    def _trace(self, batch: int, seq_len: int, kv_len: int) -> tuple[int, int]:
        """(traced peak, KV bytes created in the pass) of the probe model, memoised."""
        key = (batch, seq_len, kv_len)
        if key not in self._memo:
            import torch

            from lm_predictor.models.cache import forward_params
            from lm_predictor.models.inputs import build_inputs
            from tracing import trace

            phase = "decode" if kv_len and seq_len == 1 else "prefill"
            inputs = build_inputs(self.model, self.config, batch_size=batch, seq_len=seq_len,
                                  phase=phase, kv_len=kv_len, device="meta",
                                  attention_mask=False)
            if (self.logits == "last" and seq_len > 1
                    and "logits_to_keep" in forward_params(self.model)):
                inputs["logits_to_keep"] = 1
            with torch.inference_mode(), trace(self.model, device_timing=False) as t:
                out = self.model(**inputs)
            cache = getattr(out, "past_key_values", None)
            kv = 0
            for layer in getattr(cache, "layers", []) or []:
                for name in ("keys", "values"):
                    tensor = getattr(layer, name, None)
                    if isinstance(tensor, torch.Tensor):
                        kv += tensor.numel() * tensor.element_size()
            self._memo[key] = (t.peak_activation_bytes, kv)
        return self._memo[key]

    def breakdown(self, batch_size: int, seq_len: int, kv_len: int = 0) -> MemoryBreakdown:
        """Weights, KV cache and transient activations of one pass over `seq_len` new tokens on
        `kv_len` cached ones."""
        if batch_size < 1 or seq_len < 1 or kv_len < 0:
            raise ModelError(f"need batch >= 1, seq_len >= 1, kv_len >= 0 (got {batch_size}, "
                                f"{seq_len}, {kv_len})")
        peak, kv_in_trace = self._trace(batch_size, seq_len, kv_len)
        return MemoryBreakdown(self.kernels, batch_size, seq_len, kv_len, self.weights_bytes,
                               self.kv_cache_bytes(batch_size, kv_len + seq_len),
                               max(0, peak - kv_in_trace), peak)


def memory_estimate(config: Any, *, batch_size: int, seq_len: int, kv_len: int = 0,
                    dtype: Any = None, kernels: str = "eager") -> MemoryBreakdown:
    """One breakdown (for `lm_predictor.models.estimate_memory`): weights, KV cache and traced
    activations of a pass; `eager` by default (what `analyze` traces)."""
    return TracedMemory(config, dtype, kernels).breakdown(batch_size, seq_len, kv_len)


def saved_activation_bytes(config: Any, dtype: Any, *, batch_size: int, seq_len: int,
                           checkpointing: bool = False) -> int:
    """Bytes autograd saves for backward in one training step (saved-tensor hooks on a meta
    trace), for the full depth: measured on copies of the model with 1 and 2 layers and
    extrapolated linearly (layers are identical, so per-layer saved bytes are constant), or
    traced at full depth when the model has at most 2 layers."""
    import torch

    from lm_predictor.models.build import build_model
    from lm_predictor.models.inputs import build_inputs
    from tracing.train import trace_training_step

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = next((getattr(text, k) for k in ("num_hidden_layers", "n_layer", "num_layers")
                   if isinstance(getattr(text, k, None), int)), None)

    def saved(cfg: Any) -> int:
        model = build_model(cfg, device="meta", dtype=dtype)
        inputs = build_inputs(model, cfg, batch_size=batch_size, seq_len=seq_len,
                              device="meta", attention_mask=False)
        t = trace_training_step(model, inputs, checkpointing=checkpointing,
                                device_timing=False)
        return int(t.saved_activation_bytes)

    if layers is None or layers <= 2:
        return saved(config)
    one, two = saved(truncated_config(config, 1)), saved(truncated_config(config, 2))
    return one + (two - one) * (layers - 1)
