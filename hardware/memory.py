"""Inference memory arithmetic: weights + KV cache + peak activations, fit, largest batch/context.

The traced source (`TracedMemory`) lives in `lm_predictor.models.memory` (it builds and traces
models, which this layer never does); this module holds the breakdown and the plan.

The activation peak is measured, not guessed: one forward pass is traced on `meta` (nothing is
allocated; `tracing.memory` tracks the live bytes of every storage the pass creates), exactly as
`analyze` does, and split into the KV cache and the transient activations:

    traced_peak      = Trace.peak_activation_bytes (analyze's "peak activation memory")
    kv_in_trace      = bytes of every key/value tensor in the model's cache after the pass (in a
                       prefill they are created by the pass; in an eager decode step
                       transformers re-concatenates the whole cache, so the pass creates it all)
    activation_bytes = max(0, traced_peak - kv_in_trace)   (transient: hidden states, MLP
                       intermediates, logits; the cache is all alive at the end of the pass,
                       where the peak of a decoder stack lies)
    kv_cache_bytes   = batch x sum over cached layers of bytes_per_token x min(tokens, window),
                       tokens = kv_len + new tokens (one copy: paged or re-concatenated, the
                       old copy is freed as each layer replaces it)
    weights_bytes    = parameters x itemsize (tied tensors once)
    total            = weights + kv_cache + activations;  fits = total <= capacity x usable

Kernel models (`hardware.kernels`): `eager` traces the pass as `analyze` does (logits at every
position); `fused` traces it as a serving engine runs it: logits of the last position only in a
prefill (`logits="last"`, transformers' `logits_to_keep=1`), attention through SDPA (no score
matrix; the tracer never materialises SDPA scores), cache appended in place (the one copy above).

Depth: a decoder stack frees each layer's intermediates before the next, so the transient peak
does not grow with depth. `probe_layers` (default 2) traces a copy of the model truncated to that
many layers for the activations (fast for 80-layer models; binary searches trace many shapes)
while weights and KV cache come from the full model. `probe_layers=None` traces the full model.

Largest batch / longest context: binary search (doubling, then bisection) over traced memory at
the requested shape: the largest batch whose total fits; the longest context (prefill: seq_len,
decode: kv_len + 1) that fits at the requested batch, capped at the model's
`max_position_embeddings`.

Limits: no allocator fragmentation, CUDA context or framework workspace (use `usable_fraction`);
scratch memory inside kernels is invisible to the tracer; the bit widths of quantised weights,
activations and cache scale those parts linearly (no scales or zero points).

Example (a hand-made probe: 10 GB of weights, 1 MB of cache and 0.5 MB of activations per token
and sequence):
    >>> probe = lambda b, t: MemoryBreakdown("eager", b, t, 0, 10**10, b * t * 10**6,
    ...                                      b * t * 5 * 10**5, 0)
    >>> largest_fitting(lambda b: probe(b, 1000).total <= 80 * 10**9, 1, 10**6)
    46
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol

from hardware.catalog import HardwareError



@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of one forward pass: weights, KV cache (kv_len + seq_len tokens), activations."""

    kernels: str
    batch_size: int
    seq_len: int
    kv_len: int
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    traced_peak_bytes: int  # peak activation memory of the traced pass (kv_in_trace included)

    @property
    def total(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total}


@dataclass(frozen=True)
class MemoryPlan:
    """A breakdown against a capacity, with the largest batch and longest context that fit."""

    breakdown: MemoryBreakdown
    capacity_bytes: int
    usable_bytes: int
    fits: bool
    max_batch: int
    max_context: int
    context_limit: int | None  # the model's max_position_embeddings (max_context is capped)

    def to_json(self) -> dict[str, Any]:
        return {**self.breakdown.to_json(), "capacity_bytes": self.capacity_bytes,
                "usable_bytes": self.usable_bytes, "fits": self.fits,
                "max_batch": self.max_batch, "max_context": self.max_context,
                "context_limit": self.context_limit}


def largest_fitting(fits: Callable[[int], bool], low: int, cap: int) -> int:
    """Largest n in [low, cap] with `fits(n)`, for `fits` monotone (true then false); low - 1
    when `fits(low)` is false. Doubling from `low`, then bisection: O(log n) calls."""
    if not fits(low):
        return low - 1
    good, step = low, 1
    bad = None
    while bad is None:
        candidate = min(cap, low + step)
        if candidate == good:
            return good
        if fits(candidate):
            good = candidate
            step *= 2
        else:
            bad = candidate
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def _scaled(b: MemoryBreakdown, itemsize: int, w_bits: int | None, kv_bits: int | None,
            a_bits: int | None) -> MemoryBreakdown:
    def scale(value: int, bits: int | None) -> int:
        return value if bits is None else -(-value * bits // (8 * itemsize))
    return MemoryBreakdown(b.kernels, b.batch_size, b.seq_len, b.kv_len,
                           scale(b.weights_bytes, w_bits), scale(b.kv_cache_bytes, kv_bits),
                           scale(b.activation_bytes, a_bits), b.traced_peak_bytes)


class MemorySource(Protocol):
    """What `plan_memory` needs: a breakdown at any shape (e.g.
    `lm_predictor.models.memory.TracedMemory`, which traces on meta), the dtype's itemsize and
    the model's context limit."""

    itemsize: int
    context_limit: int | None

    def breakdown(self, batch_size: int, seq_len: int, kv_len: int = 0) -> MemoryBreakdown: ...


def plan_memory(source: MemorySource, capacity_bytes: int, *, batch_size: int = 1,
                seq_len: int = 1, kv_len: int = 0, usable_fraction: float = 1.0,
                w_bits: int | None = None, kv_bits: int | None = None,
                a_bits: int | None = None, max_batch_cap: int = 1 << 20) -> MemoryPlan:
    """The breakdown at the shape, whether it fits, the largest batch at this shape and the
    longest context at this batch (prefill: seq_len; decode (seq_len 1, kv_len > 0):
    kv_len + 1). Bit widths (default: the dtype's) scale weights, KV cache and activations."""
    if not 0 < usable_fraction <= 1:
        raise HardwareError(f"usable fraction must be in (0, 1], got {usable_fraction}")
    usable = int(capacity_bytes * usable_fraction)
    decode = seq_len == 1 and kv_len > 0

    def at(batch: int, new: int, cached: int) -> MemoryBreakdown:
        return _scaled(source.breakdown(batch, new, cached), source.itemsize, w_bits, kv_bits,
                       a_bits)

    here = at(batch_size, seq_len, kv_len)
    max_batch = largest_fitting(lambda b: at(b, seq_len, kv_len).total <= usable, 1,
                                max_batch_cap)
    limit = source.context_limit or (1 << 24)
    if decode:
        max_context = largest_fitting(lambda t: at(batch_size, 1, t - 1).total <= usable, 2,
                                      limit)
    else:
        max_context = largest_fitting(lambda t: at(batch_size, t, 0).total <= usable, 1, limit)
    return MemoryPlan(here, capacity_bytes, usable, here.total <= usable, max(0, max_batch),
                      max(0, max_context), source.context_limit)
