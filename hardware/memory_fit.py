"""Memory fit: weights + KV cache + peak activations against a device's capacity.

Bit widths follow the concept notes' legacy analyzer (`w_bit`, `a_bit`, `kv_bit`):

    weights_bytes     = parameters * w_bits / 8
    kv_bytes(B)       = B * kv_elements_per_sequence * kv_bits / 8
    activation_bytes  = B * activation_elements_per_sequence * a_bits / 8
    total(B)          = weights + ceil(B * (kv_elements * kv_bits + act_elements * a_bits) / 8)
    max_batch         = floor((usable - weights) * 8 / (kv_elements * kv_bits
                                                        + act_elements * a_bits))
    usable            = capacity * usable_fraction

Element counts are per sequence at the requested lengths; the caller derives them from the
model (lm_predictor's `hardware memory` command: parameter count and KV-cache shapes probed on
`meta`, the activation peak of `lm_predictor.models.estimate_memory`). KV cache and activations
grow linearly with the batch; that is what makes `max_batch` a closed form.

Limits: no allocator fragmentation, framework workspace or CUDA context (set
`usable_fraction`, e.g. 0.9); quantised weights' scales and zero points are not counted.

Example:
    >>> needs = MemoryNeeds(parameters=7_000_000_000, kv_elements_per_sequence=4096 * 262144,
    ...                     activation_elements_per_sequence=0)
    >>> fit = fit_memory(needs, capacity_bytes=80 * 10**9, batch_size=1)
    >>> fit.weights_bytes, fit.kv_bytes, fit.max_batch
    (14000000000, 2147483648, 30)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class MemoryNeeds:
    """What one model needs, in elements: weights once, KV cache and activations per sequence."""

    parameters: int
    kv_elements_per_sequence: int
    activation_elements_per_sequence: int


@dataclass(frozen=True)
class MemoryFit:
    """The fit at `batch_size`, and the largest batch that fits."""

    capacity_bytes: int
    usable_bytes: int
    batch_size: int
    weights_bytes: int
    kv_bytes: int
    activation_bytes: int
    total_bytes: int
    fits: bool
    max_batch: int | None  # None: nothing grows with the batch
    w_bits: int
    a_bits: int
    kv_bits: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bits_to_bytes(bits: int) -> int:
    return -(-bits // 8)  # ceil


def fit_memory(needs: MemoryNeeds, capacity_bytes: int, *, batch_size: int = 1, w_bits: int = 16,
               a_bits: int = 16, kv_bits: int = 16, usable_fraction: float = 1.0) -> MemoryFit:
    """Bytes at `batch_size` and the largest batch for `capacity_bytes` (see module docstring)."""
    for name, bits in (("w_bits", w_bits), ("a_bits", a_bits), ("kv_bits", kv_bits)):
        if not 1 <= bits <= 64:
            raise ValueError(f"{name} must be between 1 and 64, got {bits}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < usable_fraction <= 1:
        raise ValueError(f"usable_fraction must be in (0, 1], got {usable_fraction}")
    usable = int(capacity_bytes * usable_fraction)
    weights = _bits_to_bytes(needs.parameters * w_bits)
    kv = _bits_to_bytes(batch_size * needs.kv_elements_per_sequence * kv_bits)
    act = _bits_to_bytes(batch_size * needs.activation_elements_per_sequence * a_bits)
    per_sequence_bits = (needs.kv_elements_per_sequence * kv_bits
                         + needs.activation_elements_per_sequence * a_bits)
    total = weights + _bits_to_bytes(batch_size * per_sequence_bits)
    if per_sequence_bits == 0:
        max_batch = None if weights <= usable else 0
    else:
        max_batch = max(0, (usable - weights) * 8 // per_sequence_bits)
    return MemoryFit(capacity_bytes, usable, batch_size, weights, kv, act, total, total <= usable,
                     max_batch, w_bits, a_bits, kv_bits)
