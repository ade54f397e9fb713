"""Model FLOPs utilisation of a training step: the PaLM definition beside the measured one.

PaLM (Chowdhery et al. 2022, appendix B): model FLOPs per token = 6N + 12·L·H·Q·T, with N the
parameter count (nanoGPT's `estimate_mfu` passes its non-position-embedding count), L layers,
H heads, Q head dimension, T sequence length; the 12·L·H·Q·T term is the attention
score and value matmuls, forward and backward (self-attention's 2·T·d per layer, x3 for backward,
x2 FLOPs per multiply-accumulate). MFU = model FLOPs per second / peak FLOP/s, with FLOP/s =
FLOPs per token x tokens per second. Rematerialisation (activation checkpointing) is not counted,
by definition.

Measured utilisation (also called hardware FLOPs utilisation) uses the FLOPs a traced step
really ran (`tracing.Trace.step_totals().measured.flops`: forward + recompute + backward), so it
includes recomputation and counts attention as the kernels do (no causal discount, like PaLM's
formula).

Example (nanoGPT's GPT-2 124M setting: 12 layers, 12 heads, 64 per head, 1024 tokens):
    >>> palm_flops_per_token(124_000_000, layers=12, heads=12, head_dim=64, seq_len=1024)
    857246208
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hardware.errors import HardwareError


def palm_flops_per_token(parameters: int, *, layers: int, heads: int, head_dim: int,
                         seq_len: int) -> int:
    """6N + 12·L·H·Q·T: training FLOPs per token by the PaLM definition."""
    for name, value in (("parameters", parameters), ("layers", layers), ("heads", heads),
                        ("head_dim", head_dim), ("seq_len", seq_len)):
        if value < 0:
            raise HardwareError(f"{name} must be >= 0, not {value}")
    return 6 * parameters + 12 * layers * heads * head_dim * seq_len


@dataclass(frozen=True)
class Utilisation:
    """MFU by the PaLM definition and utilisation of the measured step FLOPs."""

    tokens_per_step: int
    step_time_s: float
    tokens_per_s: float
    peak_flops: float
    palm_flops_per_token: int
    palm_flops_per_step: int
    mfu: float
    measured_flops_per_step: int | None
    measured_utilisation: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def utilisation(*, palm_per_token: int, tokens_per_step: int, peak_flops: float,
                step_time_s: float | None = None, tokens_per_s: float | None = None,
                measured_flops_per_step: int | None = None) -> Utilisation:
    """MFU (and measured utilisation) from a step time or a token rate and a device peak (FLOP/s,
    e.g. `hardware.catalog.Device.matmul_peak('bf16')` times the device count)."""
    if (step_time_s is None) == (tokens_per_s is None):
        raise HardwareError("give exactly one of step time (seconds) or tokens per second")
    if tokens_per_step <= 0:
        raise HardwareError(f"tokens per step must be > 0, not {tokens_per_step}")
    if peak_flops <= 0:
        raise HardwareError(f"device peak must be > 0 FLOP/s, not {peak_flops}")
    if step_time_s is not None:
        if step_time_s <= 0:
            raise HardwareError(f"step time must be > 0 s, not {step_time_s}")
        tokens_per_s = tokens_per_step / step_time_s
    else:
        assert tokens_per_s is not None
        if tokens_per_s <= 0:
            raise HardwareError(f"tokens per second must be > 0, not {tokens_per_s}")
        step_time_s = tokens_per_step / tokens_per_s
    mfu = palm_per_token * tokens_per_s / peak_flops
    measured = (None if measured_flops_per_step is None
                else measured_flops_per_step / step_time_s / peak_flops)
    return Utilisation(tokens_per_step=tokens_per_step, step_time_s=step_time_s,
                       tokens_per_s=tokens_per_s, peak_flops=peak_flops,
                       palm_flops_per_token=palm_per_token,
                       palm_flops_per_step=palm_per_token * tokens_per_step, mfu=mfu,
                       measured_flops_per_step=measured_flops_per_step,
                       measured_utilisation=measured)


def transformer_shape(config: dict[str, Any]) -> dict[str, int]:
    """(layers, heads, head_dim) from a transformers config dict (GPT-2 and Llama spellings)."""
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    heads = config.get("num_attention_heads", config.get("n_head"))
    hidden = config.get("hidden_size", config.get("n_embd"))
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    if not (layers and heads and head_dim):
        raise HardwareError("the config lacks layers/heads/hidden size (num_hidden_layers, "
                            "num_attention_heads, hidden_size or GPT-2's n_layer, n_head, n_embd)")
    return {"layers": int(layers), "heads": int(heads), "head_dim": int(head_dim)}
