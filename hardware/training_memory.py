"""Training memory per device: weights, gradients, optimizer states and saved activations, with
ZeRO partitioning over data-parallel ranks (Rajbhandari et al., "ZeRO: Memory Optimizations
Toward Training Trillion Parameter Models", SC20, section 3.1 and figure 1).

Model states per parameter (bytes):

| precision | weights | gradients | optimizer (adam/adamw) | sgd (momentum) | adafactor |
|---|---|---|---|---|---|
| mixed (bf16/fp16 compute, fp32 master) | 2 | 2 | 12 = master 4 + m 4 + v 4 | 8 = master + momentum | 4 (master) + factored v |
| fp32 | 4 | 4 | 8 = m + v | 4 (momentum) | factored v |

Mixed-precision Adam is 16 bytes per parameter before activations (the paper's 2 + 2 + K with
K = 12). Adafactor (Shazeer & Stern 2018, no first moment, as transformers' default) keeps for a
parameter of shape (..., r, c) the row and column statistics, prod(shape[:-1]) +
prod(shape[:-2]) * c fp32 values, and a full fp32 second moment for vectors; it needs the
parameter shapes (`parameter_shapes`); without them it is refused.

ZeRO stage s over N data-parallel ranks divides, per device: stage >= 1 the optimizer states,
>= 2 the gradients, 3 the weights, by N (ceil). Stage 0 is plain data parallelism (replicated).
Activations are per device (its micro-batch) and never partitioned by ZeRO; they come from a
trace (`tracing.Trace.saved_activation_bytes`: bytes autograd saved for backward, measured with
saved-tensor hooks; smaller under activation checkpointing).

Example (the paper's: 7.5B parameters, 64 GPUs, mixed-precision Adam):
    >>> m = training_memory(7_500_000_000, optimizer="adam", zero_stage=1, data_parallel=64)
    >>> round(m.model_state_bytes / 1e9, 1)
    31.4
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import prod
from typing import Any, Literal

from hardware.errors import HardwareError

Optimizer = Literal["adam", "adamw", "sgd", "adafactor"]
Precision = Literal["mixed", "fp32"]
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd", "adafactor")
PRECISIONS: tuple[str, ...] = ("mixed", "fp32")
FP32 = 4
HALF = 2


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes per device of one training configuration."""

    parameters: int
    optimizer: str
    precision: str
    zero_stage: int
    data_parallel: int
    weights_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int

    @property
    def model_state_bytes(self) -> int:
        """Weights + gradients + optimizer states (what ZeRO partitions)."""
        return self.weights_bytes + self.gradient_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> int:
        return self.model_state_bytes + self.activation_bytes

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model_state_bytes"] = self.model_state_bytes
        out["total_bytes"] = self.total_bytes
        return out


def adafactor_state_elements(shapes: Sequence[Sequence[int]]) -> int:
    """Second-moment elements Adafactor keeps: factored row + column statistics for tensors of
    2+ dimensions, the full vector otherwise (transformers.optimization.Adafactor)."""
    total = 0
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        if len(shape) >= 2:
            total += prod(shape[:-1]) + prod(shape[:-2]) * shape[-1]
        else:
            total += prod(shape)
    return total


def optimizer_state_bytes(parameters: int, optimizer: str, precision: str,
                          parameter_shapes: Sequence[Sequence[int]] | None = None,
                          momentum: bool = True) -> int:
    """Optimizer-state bytes for the whole model (before ZeRO partitioning)."""
    master = FP32 * parameters if precision == "mixed" else 0
    if optimizer in ("adam", "adamw"):
        return master + 2 * FP32 * parameters
    if optimizer == "sgd":
        return master + (FP32 * parameters if momentum else 0)
    if parameter_shapes is None:
        raise HardwareError("adafactor's state depends on the parameter shapes; pass "
                            "parameter_shapes (e.g. [p.shape for p in model.parameters()])")
    return master + FP32 * adafactor_state_elements(parameter_shapes)


def _check(optimizer: str, precision: str, zero_stage: int, data_parallel: int) -> None:
    if optimizer not in OPTIMIZERS:
        raise HardwareError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if precision not in PRECISIONS:
        raise HardwareError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if zero_stage not in (0, 1, 2, 3):
        raise HardwareError(f"ZeRO stage must be 0, 1, 2 or 3, not {zero_stage}")
    if data_parallel < 1:
        raise HardwareError(f"data parallel size must be >= 1, not {data_parallel}")


def _shard(nbytes: int, ranks: int) -> int:
    return -(-nbytes // ranks)


def training_memory(parameters: int, *, optimizer: str = "adamw", precision: str = "mixed",
                    zero_stage: int = 0, data_parallel: int = 1, activation_bytes: int = 0,
                    parameter_shapes: Sequence[Sequence[int]] | None = None,
                    momentum: bool = True) -> TrainingMemory:
    """Per-device training memory of a model with `parameters` parameters (see module doc)."""
    _check(optimizer, precision, zero_stage, data_parallel)
    if parameters < 0:
        raise HardwareError(f"parameter count must be >= 0, not {parameters}")
    width = HALF if precision == "mixed" else FP32
    weights, grads = width * parameters, width * parameters
    states = optimizer_state_bytes(parameters, optimizer, precision, parameter_shapes, momentum)
    n = data_parallel
    return TrainingMemory(
        parameters=parameters, optimizer=optimizer, precision=precision, zero_stage=zero_stage,
        data_parallel=n,
        weights_bytes=_shard(weights, n) if zero_stage >= 3 else weights,
        gradient_bytes=_shard(grads, n) if zero_stage >= 2 else grads,
        optimizer_bytes=_shard(states, n) if zero_stage >= 1 else states,
        activation_bytes=activation_bytes)
