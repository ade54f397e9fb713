"""Roofline time estimates per module call, summed upward from the leaves.

The model (Williams, Waterman & Patterson, "Roofline: an insightful visual performance model",
CACM 2009), for one piece of work on a device with peaks P_mm (dense matmul, per dtype),
P_vec (non-tensor vector units) and bandwidth BW, and efficiency factors e_mm, e_vec, e_bw:

    compute_s  = flops / (P_mm * e_mm) + vector_flops / (P_vec * e_vec)
    memory_s   = (bytes_read + bytes_written) / (BW * e_bw)
    estimate_s = max(compute_s, memory_s) + ops * op_overhead_s + calls * call_overhead_s
                 (compute_s + memory_s instead of the max on a device with `overlap: false`)
    bound      = "compute" if compute_s > memory_s else "memory"
    intensity  = (flops + vector_flops) / (bytes_read + bytes_written)   [FLOP/byte]

Semantics:
- Estimates are made for *pseudo-leaves* — each call's own work (`self_counters`: what ran while
  it was the innermost call), which for a leaf module is all of its work — and summed upward: a
  call's estimate is its own plus its children's. Never from the root totals: a decode step is a
  chain of memory-bound matmuls, and the root's summed FLOPs/bytes would wrongly call it
  compute-bound. A summed estimate's `bound` is the kind of the leaves holding most of its time.
- Matmul and vector work are serialised (added), then overlapped with memory traffic (max).
  Bytes are the tracer's unfused per-op bytes, so fused kernels (flash attention) run faster
  than estimated where they avoid traffic.
- A device without a published vector peak (TPU v5e) gives vector FLOPs no compute time: they
  are assumed memory-bound. `op_overhead_us` (launch/dispatch cost per aten op) is 0 for
  datasheet devices and measured by calibration for local ones.

Limits: one device, no communication; no cache model (all bytes at memory bandwidth); ideal
peaks unless efficiency factors are fitted (`hardware.fit`). `call_overhead_us` (a fixed cost per
module call: the framework's Python per `nn.Module.__call__`, which dominates small decode steps
on CPU) is 0 unless fitted.

Example:
    >>> from hardware.catalog import load_catalog
    >>> est = estimate_totals(2 * 4096**3, 0, 3 * 2 * 4096**2, 0, load_catalog().get("H100"),
    ...                       "bf16")
    >>> est.bound, round(est.estimate_s * 1e6, 1)      # 137 GFLOP at 989.5 TFLOP/s
    ('compute', 138.9)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from hardware.catalog import Device, Efficiency, HardwareError, normalize_dtype

Bound = Literal["compute", "memory"]


@dataclass(frozen=True)
class Work:
    """Additive work of some aten ops: counts as in `tracing.records.Counters`, plus op count and
    module-call count (1 for a call's own work, 0 for work outside any call)."""

    flops: int = 0
    vector_flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    ops: int = 0
    calls: int = 0

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float | None:
        """(flops + vector_flops) / bytes; None when no bytes move."""
        return (self.flops + self.vector_flops) / self.bytes if self.bytes else None

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.vector_flops + other.vector_flops,
                    self.bytes_read + other.bytes_read, self.bytes_written + other.bytes_written,
                    self.ops + other.ops, self.calls + other.calls)


@dataclass(frozen=True)
class Peaks:
    """The roofs for one device and dtype, efficiency factors applied (FLOP/s, bytes/s, s)."""

    matmul: float
    vector: float | None
    bandwidth: float
    op_overhead_s: float = 0.0
    call_overhead_s: float = 0.0
    overlap: bool = True  # compute and memory overlap (max); False: they add

    @classmethod
    def of(cls, device: Device, dtype: object, efficiency: Efficiency | None = None,
           op_overhead_us: float | None = None,
           call_overhead_us: float | None = None) -> "Peaks":
        """Peaks of `device` for `dtype`, scaled by `efficiency` (default: the device's own)."""
        eff = efficiency or device.efficiency
        vector = device.vector_peak(dtype)
        overhead = device.op_overhead_us if op_overhead_us is None else op_overhead_us
        per_call = device.call_overhead_us if call_overhead_us is None else call_overhead_us
        return cls(matmul=device.matmul_peak(dtype) * eff.matmul,
                   vector=None if vector is None else vector * eff.vector,
                   bandwidth=device.bandwidth * eff.memory, op_overhead_s=overhead * 1e-6,
                   call_overhead_s=per_call * 1e-6, overlap=device.overlap)


@dataclass(frozen=True)
class Estimate:
    """Estimated time of some work. Sums of estimates keep the split by leaf bound."""

    work: Work
    matmul_s: float
    vector_s: float
    memory_s: float
    overhead_s: float
    compute_bound_s: float  # time of the (pseudo-)leaves that are compute-bound
    memory_bound_s: float   # time of those that are memory-bound

    @property
    def compute_s(self) -> float:
        return self.matmul_s + self.vector_s

    @property
    def estimate_s(self) -> float:
        return self.compute_bound_s + self.memory_bound_s + self.overhead_s

    @property
    def bound(self) -> Bound:
        return "compute" if self.compute_bound_s > self.memory_bound_s else "memory"

    @property
    def intensity(self) -> float | None:
        return self.work.intensity

    def __add__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.work + other.work, self.matmul_s + other.matmul_s,
                        self.vector_s + other.vector_s, self.memory_s + other.memory_s,
                        self.overhead_s + other.overhead_s,
                        self.compute_bound_s + other.compute_bound_s,
                        self.memory_bound_s + other.memory_bound_s)

    def as_dict(self) -> dict[str, Any]:
        return {"estimate_s": self.estimate_s, "compute_s": self.compute_s,
                "matmul_s": self.matmul_s, "vector_s": self.vector_s,
                "memory_s": self.memory_s, "overhead_s": self.overhead_s,
                "bound": self.bound, "intensity": self.intensity,
                "memory_bound_share": (self.memory_bound_s / (self.compute_bound_s
                                                              + self.memory_bound_s)
                                       if self.compute_bound_s + self.memory_bound_s else None)}


ZERO = Estimate(Work(), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def estimate_work(work: Work, peaks: Peaks) -> Estimate:
    """Roofline time of one pseudo-leaf (see the module docstring)."""
    matmul_s = work.flops / peaks.matmul
    vector_s = work.vector_flops / peaks.vector if peaks.vector else 0.0
    memory_s = work.bytes / peaks.bandwidth
    compute_s = matmul_s + vector_s
    compute_bound = compute_s > memory_s
    overhead_s = work.ops * peaks.op_overhead_s + work.calls * peaks.call_overhead_s
    busy = max(compute_s, memory_s) if peaks.overlap else compute_s + memory_s
    return Estimate(work, matmul_s, vector_s, memory_s, overhead_s,
                    busy if compute_bound else 0.0, 0.0 if compute_bound else busy)


def estimate_totals(flops: int, vector_flops: int, bytes_read: int, bytes_written: int,
                    device: Device, dtype: object, *, ops: int = 0,
                    efficiency: Efficiency | None = None) -> Estimate:
    """Roofline time of totals treated as ONE leaf (for `predict` sweeps without a call tree).

    Prefer `estimate_calls` when per-call counts exist: totals of a whole model blur the
    compute- and memory-bound parts together."""
    return estimate_work(Work(int(flops), int(vector_flops), int(bytes_read), int(bytes_written),
                              int(ops)), Peaks.of(device, dtype, efficiency))


@dataclass(frozen=True)
class CallWork:
    """What the estimator needs of one module call (a plain copy of a `CallRecord`'s fields)."""

    call_id: int
    parent_call_id: int | None
    module_path: str
    class_name: str
    self_work: Work
    children: tuple[int, ...] = ()
    wall_time_s: float | None = None


def work_of(counters: Any, ops: Any = None, calls: int = 0) -> Work:
    """`Work` from anything with flops/vector_flops/bytes_read/bytes_written attributes; `ops`
    is a mapping of op name -> stat with a `count` (as `CallRecord.ops`)."""
    count = sum(getattr(s, "count", 0) for s in ops.values()) if ops else 0
    return Work(int(counters.flops), int(counters.vector_flops), int(counters.bytes_read),
                int(counters.bytes_written), int(count), calls)


def calls_from_records(records: Iterable[Any]) -> list[CallWork]:
    """`CallWork`s from `tracing.records.CallRecord`-like objects (read by attribute only)."""
    return [CallWork(r.call_id, r.parent_call_id, r.module_path, r.class_name,
                     work_of(r.self_counters, r.ops, calls=1), tuple(r.children), r.wall_time_s)
            for r in records]


@dataclass(frozen=True)
class CallEstimate:
    """One call's own (pseudo-leaf) estimate and its subtree's summed estimate."""

    call: CallWork
    own: Estimate
    total: Estimate


@dataclass
class ClassTime:
    """Time of one module class: its calls' own work (children excluded, so classes add up)."""

    class_name: str
    calls: int = 0
    estimate: Estimate = ZERO
    measured_self_s: float | None = None


@dataclass
class TraceEstimate:
    """Estimates of every call of a trace on one device, and the run total."""

    device: Device
    dtype: str
    calls: list[CallEstimate]
    outside: Estimate = ZERO  # ops outside any module call
    efficiency: Efficiency = field(default_factory=Efficiency)

    @property
    def total(self) -> Estimate:
        """Roots' summed estimates plus the work outside any call."""
        total = self.outside
        for c in self.calls:
            if c.call.parent_call_id is None:
                total = total + c.total
        return total

    @property
    def measured_s(self) -> float | None:
        """Sum of the roots' measured wall times (None unless all were measured)."""
        roots = [c.call.wall_time_s for c in self.calls if c.call.parent_call_id is None]
        return None if not roots or None in roots else float(sum(roots))  # type: ignore[arg-type]

    def measured_self_s(self) -> dict[int, float | None]:
        """Per call id: measured time minus the children's (None unless all were measured)."""
        wall = {c.call.call_id: c.call.wall_time_s for c in self.calls}
        out: dict[int, float | None] = {}
        for c in self.calls:
            times = [wall[c.call.call_id], *(wall[i] for i in c.call.children)]
            out[c.call.call_id] = (None if None in times else
                                   max(0.0, times[0] - sum(times[1:])))  # type: ignore[operator,arg-type]
        return out

    def by_class(self) -> list[ClassTime]:
        """Own time per module class, largest first; the classes' estimates sum to the total
        minus the outside work."""
        groups: dict[str, ClassTime] = {}
        measured: dict[str, list[float | None]] = defaultdict(list)
        self_times = self.measured_self_s()
        for c in self.calls:
            group = groups.setdefault(c.call.class_name, ClassTime(c.call.class_name))
            group.calls += 1
            group.estimate = group.estimate + c.own
            measured[c.call.class_name].append(self_times[c.call.call_id])
        for name, times in measured.items():
            if None not in times:
                groups[name].measured_self_s = float(sum(times))  # type: ignore[arg-type]
        return sorted(groups.values(), key=lambda g: -g.estimate.estimate_s)

    def rows(self) -> list[dict[str, Any]]:
        """One row per call for the `estimates` table (see lm_predictor/schema.sql)."""
        return [{"call_id": c.call.call_id, "hardware": self.device.name, "dtype": self.dtype,
                 "compute_s": c.total.compute_s, "memory_s": c.total.memory_s,
                 "overhead_s": c.total.overhead_s, "estimate_s": c.total.estimate_s,
                 "self_estimate_s": c.own.estimate_s, "bound": c.total.bound,
                 "intensity": c.total.intensity, "wall_time_s": c.call.wall_time_s}
                for c in self.calls]


def estimate_calls(calls: list[CallWork], device: Device, dtype: object, *,
                   outside: Work | None = None, efficiency: Efficiency | None = None,
                   op_overhead_us: float | None = None) -> TraceEstimate:
    """Estimate every call from its own work and sum upward through `children`."""
    peaks = Peaks.of(device, dtype, efficiency, op_overhead_us)
    own = {c.call_id: estimate_work(c.self_work, peaks) for c in calls}
    by_id = {c.call_id: c for c in calls}
    total: dict[int, Estimate] = {}
    for call in calls:  # iterative post-order: deep models must not hit the recursion limit
        stack: list[tuple[int, bool]] = [(call.call_id, False)]
        while stack:
            call_id, expanded = stack.pop()
            if call_id in total:
                continue
            children = by_id[call_id].children
            if expanded:
                summed = own[call_id]
                for child in children:
                    summed = summed + total[child]
                total[call_id] = summed
                continue
            stack.append((call_id, True))
            stack.extend((child, False) for child in children if child not in total)
    missing = [i for c in calls for i in c.children if i not in by_id]
    if missing:
        raise HardwareError(f"calls name children that are not in the trace: {missing[:5]}")
    return TraceEstimate(device, normalize_dtype(dtype),
                         [CallEstimate(c, own[c.call_id], total[c.call_id]) for c in calls],
                         estimate_work(outside, peaks) if outside else ZERO,
                         efficiency or device.efficiency)


def estimate_trace(trace: Any, device: Device, dtype: object, *,
                   efficiency: Efficiency | None = None) -> TraceEstimate:
    """`estimate_calls` for a `tracing.Trace` (read by attribute: calls, outside, outside_ops)."""
    outside = work_of(trace.outside, getattr(trace, "outside_ops", None))
    return estimate_calls(calls_from_records(trace.calls), device, dtype, outside=outside,
                          efficiency=efficiency)


def with_efficiency(device: Device, efficiency: Efficiency,
                    op_overhead_us: float | None = None) -> Device:
    """A copy of `device` with other efficiency factors (and op overhead)."""
    update: dict[str, Any] = {"efficiency": efficiency}
    if op_overhead_us is not None:
        update["op_overhead_us"] = op_overhead_us
    copy = device.model_copy(update=update)
    copy.name = device.name
    return copy


__all__ = ["Bound", "CallEstimate", "CallWork", "ClassTime", "Estimate", "Peaks",
           "TraceEstimate", "Work", "calls_from_records", "estimate_calls", "estimate_totals",
           "estimate_trace", "estimate_work", "with_efficiency", "work_of"]
