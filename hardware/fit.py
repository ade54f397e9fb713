"""Fitting efficiency factors (and per-op overhead) to measured times; MAPE before and after.

The roofline of `hardware.roofline` has one efficiency factor per class of work — matmul
(`e_mm`), vector (`e_vec`), memory (`e_bw`) — a fixed cost per aten op (`o`) and, optionally
(`fit_call_overhead=True`), a fixed cost per module call (`c`: the framework's Python per
`nn.Module.__call__`, which dominates small decode steps on CPU; the estimate adds c x N_calls).
With `Factors(overlap=False)` every item pays compute + memory instead of the max (a CPU
running eager ops one at a time overlaps them poorly); the estimate is then linear in the
unknowns without any bound assignment. For a sample
(a call, or a whole forward pass) made of pseudo-leaf work items, once each item's bound is
fixed the estimate is LINEAR in x = (1/e_mm, 1/e_vec, 1/e_bw, o):

    estimate = x_mm * T_mm + x_vec * T_vec + x_bw * T_bw + o * N_ops

where T_mm, T_vec are the matmul and vector times at the raw peaks of the compute-bound items,
T_bw the memory time of the memory-bound items and N_ops the op count. The fit alternates:
(1) assign each item's bound with the current factors; (2) solve the bounded least squares
problem on *relative* residuals, min Σ ((estimate_s − measured_s) / measured_s)², which is the
smooth cousin of MAPE and keeps long samples from drowning short ones; until the bounds stop
changing (at most `max_iterations`). A factor whose column never matters (e.g. no vector work)
keeps its starting value. The alternation can stall in a local fixed point, so it is started
from the given factors and from a small grid of starting efficiencies, keeping the best fit.

Plausibility bounds (`BOUNDS`) keep collinear data (matmul and vector work both grow with the
token count) from producing absurd factors such as free matmuls: efficiency in [0.01, 2] for
matmul (peaks are datasheet or measured rates: beating them twice means the model is wrong),
[0.01, 10] for vector (the vector peak is calibrated on one op, while the FLOP conventions of
exp, GELU or softmax differ), [0.01, 100] for memory (small models run from caches, far above
DRAM bandwidth), and 0..1 ms per op. With at most four unknowns the bounded problem is solved
exactly: every assignment of each unknown to {lower bound, upper bound, free} is solved and the
best feasible one kept. `FitResult.at_bound` names the factors that ended on a bound.

MAPE = mean over samples of |estimate − measured| / measured, in percent. `split` holds out
every third group (run, or shape) so "after" is reported on samples not used for fitting.
`fit` refuses (`NotEnoughSamples`) data too thin for that: each factor that is free (its work
occurs in the samples) needs one fit sample, and the held-out error needs one held-out sample;
k factors fitted to k or fewer samples reproduce them exactly, and a 0% error would be reported.

Example:
    >>> peaks = Peaks(matmul=1e12, vector=1e11, bandwidth=1e11)
    >>> s = [Sample((Work(flops=10**9 * k, bytes_read=10**6),), 2e-3 * k) for k in (1, 2, 3)]
    >>> round(fit(s, peaks).factors.efficiency.matmul, 3)      # measured at half the peak
    0.5
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from hardware.catalog import Device, Efficiency, HardwareError
from hardware.roofline import Peaks, Work

ROOFS = ("matmul", "vector", "memory")
# plausible ranges: efficiency per roof, and seconds per op (see the module docstring)
BOUNDS: dict[str, tuple[float, float]] = {"matmul": (0.01, 2.0), "vector": (0.01, 10.0),
                                          "memory": (0.01, 100.0), "op_overhead_s": (0.0, 1e-3),
                                          "call_overhead_s": (0.0, 1e-3)}
OVERHEADS = ("op_overhead_s", "call_overhead_s")
START_GRID = (1.0, 0.3, 0.1)  # starting efficiencies per roof for the multi-start search


class NotEnoughSamples(HardwareError):
    """Too few samples to fit the free factors and still hold one out (see `check_enough`)."""

    def __init__(self, message: str, *, needed: int, have: int, free: list[str]) -> None:
        super().__init__(message)
        self.needed, self.have, self.free = needed, have, free


@dataclass(frozen=True)
class Sample:
    """Measured time of some work items (pseudo-leaves), with labels for grouping and splits."""

    items: tuple[Work, ...]
    measured_s: float
    group: str = ""  # fit/held-out split unit (run id, shape)
    label: str = ""  # what MAPE is broken down by (phase, module class)


@dataclass(frozen=True)
class Factors:
    """Efficiency factors and per-op overhead: what a fit produces."""

    efficiency: Efficiency
    op_overhead_s: float = 0.0
    call_overhead_s: float = 0.0  # per module call (framework Python time; 0 unless fitted)
    overlap: bool = True  # compute and memory overlap (max); False: they add (not fitted: chosen)


@dataclass
class FitResult:
    """Fitted factors and the error before (starting factors) and after, on fit and held-out."""

    factors: Factors
    start: Factors
    iterations: int
    fit_samples: int
    held_out_samples: int
    mape_fit_before: float | None
    mape_fit_after: float | None
    mape_held_out_before: float | None
    mape_held_out_after: float | None
    by_label: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    at_bound: list[str] = field(default_factory=list)


class _Times:
    """A sample's items as arrays of raw-peak times (matmul, vector, memory) and op counts."""

    def __init__(self, sample: Sample, peaks: Peaks) -> None:
        items = sample.items
        self.mm = np.array([w.flops for w in items], dtype=float) / peaks.matmul
        self.vec = (np.array([w.vector_flops for w in items], dtype=float) / peaks.vector
                    if peaks.vector else np.zeros(len(items)))
        self.bw = np.array([w.bytes for w in items], dtype=float) / peaks.bandwidth
        self.ops = float(sum(w.ops for w in items))
        self.calls = float(sum(w.calls for w in items))

    def row(self, factors: Factors) -> tuple[np.ndarray, np.ndarray]:
        """(T_mm, T_vec, T_bw, N_ops, N_calls) with bounds chosen under `factors`; the bound
        mask."""
        e = factors.efficiency
        compute = self.mm / e.matmul + self.vec / e.vector > self.bw / e.memory
        if not factors.overlap:  # every item pays compute + memory: linear, no bounds to assign
            return (np.array([self.mm.sum(), self.vec.sum(), self.bw.sum(), self.ops,
                              self.calls]), compute)
        return (np.array([self.mm[compute].sum(), self.vec[compute].sum(),
                          self.bw[~compute].sum(), self.ops, self.calls]), compute)


def _unknowns(factors: Factors) -> np.ndarray:
    e = factors.efficiency
    return np.array([1 / e.matmul, 1 / e.vector, 1 / e.memory, factors.op_overhead_s,
                     factors.call_overhead_s])


def estimate_sample(sample: Sample, peaks: Peaks, factors: Factors) -> float:
    """Estimated seconds of a sample under `factors` (raw `peaks`, efficiencies applied here)."""
    return float(_Times(sample, peaks).row(factors)[0] @ _unknowns(factors))


def bounded_lstsq_small(a: np.ndarray, b: np.ndarray, lower: np.ndarray,
                        upper: np.ndarray) -> np.ndarray:
    """Exact min ||a x - b||² subject to lower <= x <= upper, for a few columns: every
    assignment of each unknown to {lower, upper, free} is solved; the best feasible one wins."""
    n = a.shape[1]
    best, best_cost = np.clip(np.zeros(n), lower, upper), float("inf")
    for states in itertools.product((0, 1, 2), repeat=n):  # 0: at lower, 1: at upper, 2: free
        if any(s < 2 and not np.isfinite((lower, upper)[s][i]) for i, s in enumerate(states)):
            continue
        x = np.where(np.array(states) == 1, upper, lower).astype(float)
        free = [i for i, s in enumerate(states) if s == 2]
        if free:
            fixed = [i for i, s in enumerate(states) if s < 2]
            rest = b - a[:, fixed] @ x[fixed]
            x[free], *_ = np.linalg.lstsq(a[:, free], rest, rcond=None)
            if np.any(x < lower - 1e-12) or np.any(x > upper + 1e-12):
                continue
        cost = float(np.sum((a @ x - b) ** 2))
        if cost < best_cost - 1e-15:
            best, best_cost = x, cost
    return best


def _alternate(times: list[_Times], measured: np.ndarray, factors: Factors, fit_overhead: bool,
               max_iterations: int, fit_calls: bool = False) -> tuple[Factors, int]:
    """From `factors`: assign bounds, solve the bounded relative least squares, repeat until
    the bounds are stable."""
    previous: list[bytes] | None = None
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        designed = [t.row(factors) for t in times]
        bounds = [mask.tobytes() for _, mask in designed]
        if bounds == previous:
            break
        previous = bounds
        a = np.array([row for row, _ in designed]) / measured[:, None]
        current = _unknowns(factors)
        # unknowns are x = 1/efficiency, so an efficiency's upper bound is x's lower bound
        lower = np.array([1 / BOUNDS[r][1] for r in ROOFS] + [BOUNDS[o][0] for o in OVERHEADS])
        upper = np.array([1 / BOUNDS[r][0] for r in ROOFS] + [BOUNDS[o][1] for o in OVERHEADS])
        for i in range(5):  # an unused column teaches nothing; a fixed overhead stays
            if not np.any(a[:, i]) or (i >= 3 and not fit_overhead) or (
                    i == 4 and not fit_calls):
                lower[i] = upper[i] = current[i]
        x = bounded_lstsq_small(a, np.ones(len(times)), lower, upper)
        efficiency = {r: (float(getattr(factors.efficiency, r)) if lower[i] == upper[i]
                          else float(1 / x[i])) for i, r in enumerate(ROOFS)}
        factors = Factors(Efficiency(**efficiency),
                          float(x[3]) if lower[3] != upper[3] else factors.op_overhead_s,
                          float(x[4]) if lower[4] != upper[4] else factors.call_overhead_s,
                          factors.overlap)
    return factors, iterations


def _objective(times: list[_Times], measured: np.ndarray, factors: Factors) -> float:
    """Sum of squared relative errors of the (max-model) estimates."""
    x = _unknowns(factors)
    estimates = np.array([t.row(factors)[0] @ x for t in times])
    return float(np.sum(((estimates - measured) / measured) ** 2))


def fit_factors(samples: Sequence[Sample], peaks: Peaks, start: Factors | None = None, *,
                fit_overhead: bool = True, max_iterations: int = 20,
                fit_call_overhead: bool = False) -> tuple[Factors, int]:
    """Fit (efficiencies, op overhead) to `samples`: alternate bounds and bounded relative least
    squares from `start` and from every combination of `START_GRID` per roof, keeping the
    result with the smallest squared relative error. Returns it with its iteration count."""
    start = start or Factors(Efficiency())
    usable = [s for s in samples if s.measured_s > 0]
    if not usable:
        raise ValueError("no samples with a positive measured time to fit")
    times = [_Times(s, peaks) for s in usable]
    measured = np.array([s.measured_s for s in usable])
    starts = [start] + [Factors(Efficiency(matmul=m, vector=v, memory=b), start.op_overhead_s,
                                start.call_overhead_s, start.overlap)
                        for m, v, b in itertools.product(START_GRID, repeat=3)]
    best: tuple[float, Factors, int] | None = None
    for first in starts:
        factors, iterations = _alternate(times, measured, first, fit_overhead, max_iterations,
                                         fit_call_overhead)
        cost = _objective(times, measured, factors)
        if best is None or cost < best[0] - 1e-12:
            best = (cost, factors, iterations)
    assert best is not None
    return best[1], best[2]


def at_bounds(factors: Factors) -> list[str]:
    """Names of the factors lying on a plausibility bound (the model fits the data poorly).
    A zero op overhead is not reported: no overhead is a plausible answer."""
    values = {**factors.efficiency.model_dump(), "op_overhead_s": factors.op_overhead_s,
              "call_overhead_s": factors.call_overhead_s}
    out = []
    for name, value in values.items():
        low, high = BOUNDS[name]
        edges = (high,) if name in OVERHEADS else (low, high)
        if any(abs(value - edge) <= 1e-9 * max(1e-9, abs(edge)) for edge in edges):
            out.append(name)
    return out


def mape(samples: Iterable[Sample], peaks: Peaks, factors: Factors) -> float | None:
    """Mean absolute percentage error of the estimates; None without samples."""
    errors = [abs(estimate_sample(s, peaks, factors) - s.measured_s) / s.measured_s
              for s in samples if s.measured_s > 0]
    return 100 * sum(errors) / len(errors) if errors else None


def split(samples: Sequence[Sample], every: int = 3) -> tuple[list[Sample], list[Sample]]:
    """(fit, held-out): the groups in sorted order, every `every`-th one held out (the 2nd, 5th,
    ...). With a single group, every `every`-th sample is held out instead."""
    groups = sorted({s.group for s in samples})
    if len(groups) > 1:
        held = {g for i, g in enumerate(groups) if i % every == 1}
        return ([s for s in samples if s.group not in held],
                [s for s in samples if s.group in held])
    return ([s for i, s in enumerate(samples) if i % every != 1],
            [s for i, s in enumerate(samples) if i % every == 1])


def free_factors(samples: Sequence[Sample], peaks: Peaks, fit_overhead: bool = True
                 ) -> list[str]:
    """The factors a fit of `samples` can move: a roof whose work occurs in some sample, and
    the op overhead when fitted and some sample runs ops (as `_alternate` decides)."""
    items = [w for s in samples if s.measured_s > 0 for w in s.items]
    used = {"matmul": any(w.flops for w in items),
            "vector": bool(peaks.vector) and any(w.vector_flops for w in items),
            "memory": any(w.bytes for w in items),
            "op_overhead": fit_overhead and any(w.ops for w in items)}
    return [name for name, on in used.items() if on]


def _split_sizes(n_groups: int, every: int) -> tuple[int, int]:
    """(fit, held-out) group counts `split` gives for `n_groups` groups of one sample each."""
    held = sum(1 for i in range(n_groups) if i % every == 1) if every > 1 else 0
    return n_groups - held, held


def check_enough(samples: Sequence[Sample], peaks: Peaks, hold_out_every: int = 3,
                 fit_overhead: bool = True) -> tuple[list[Sample], list[Sample]]:
    """The (fit, held-out) split of `samples`, or `NotEnoughSamples` when the fit part has fewer
    samples than free factors, or (with `hold_out_every` > 1) nothing is held out. `needed` is
    the least number of samples (one per group, as at run level) that would do."""
    usable = [s for s in samples if s.measured_s > 0]
    free = free_factors(usable, peaks, fit_overhead)
    k = max(1, len(free))
    fit_part, held = split(usable, hold_out_every) if hold_out_every > 1 else (usable, [])
    if len(fit_part) >= k and (held or hold_out_every == 1):
        return fit_part, held
    needed = next(n for n in range(1, 10 * (k + hold_out_every))
                  if _split_sizes(n, hold_out_every)[0] >= k
                  and (hold_out_every == 1 or _split_sizes(n, hold_out_every)[1] >= 1))
    held_text = (f" and 1 held out (every {hold_out_every}-th group)" if hold_out_every > 1
                 else "")
    raise NotEnoughSamples(
        f"{len(usable)} sample(s) ({len(fit_part)} fit, {len(held)} held out) are too few: "
        f"{k} free factor(s) ({', '.join(free) or 'none'}) need at least {k} fit sample(s)"
        f"{held_text}, i.e. {needed} samples", needed=needed, have=len(usable), free=free)


def fit(samples: Sequence[Sample], peaks: Peaks, start: Factors | None = None, *,
        hold_out_every: int = 3, fit_overhead: bool = True) -> FitResult:
    """Split, fit on the fit part, and report MAPE before/after overall and per label.
    Raises `NotEnoughSamples` when the split leaves fewer fit samples than free factors or no
    held-out sample (`hold_out_every=1` asks for no hold-out)."""
    start = start or Factors(Efficiency())
    fit_part, held = check_enough(samples, peaks, hold_out_every, fit_overhead)
    factors, iterations = fit_factors(fit_part, peaks, start, fit_overhead=fit_overhead)
    by_label: dict[str, dict[str, float | int | None]] = {}
    for label in sorted({s.label for s in samples}):
        f = [s for s in fit_part if s.label == label]
        h = [s for s in held if s.label == label]
        by_label[label] = {"fit_samples": len(f), "held_out_samples": len(h),
                           "mape_fit_before": mape(f, peaks, start),
                           "mape_fit_after": mape(f, peaks, factors),
                           "mape_held_out_before": mape(h, peaks, start),
                           "mape_held_out_after": mape(h, peaks, factors)}
    return FitResult(factors, start, iterations, len(fit_part), len(held),
                     mape(fit_part, peaks, start), mape(fit_part, peaks, factors),
                     mape(held, peaks, start), mape(held, peaks, factors), by_label,
                     at_bounds(factors))


def with_kernel_factors(device: Device, kernels: str, factors: Factors) -> Device:
    """A copy of `device` holding `factors` for one kernel model (`Device.kernel_efficiency`,
    read by `hardware.kernels.estimate_kernels`) and the fitted op and call overheads."""
    if kernels not in ("eager", "fused"):
        raise HardwareError(f"unknown kernel model {kernels!r}; use 'eager' or 'fused'")
    copy = device.model_copy(update={
        "kernel_efficiency": {**device.kernel_efficiency, kernels: factors.efficiency},
        "op_overhead_us": factors.op_overhead_s * 1e6,
        "call_overhead_us": factors.call_overhead_s * 1e6, "overlap": factors.overlap})
    copy.name = device.name
    return copy
