"""Efficiency fits on synthetic data with a known answer, the held-out split, and MAPE."""
from __future__ import annotations

import random

import numpy as np
import pytest

from hardware.catalog import Efficiency
from hardware.fit import (Factors, Sample, at_bounds, bounded_lstsq_small, estimate_sample, fit,
                          fit_factors, mape, split)
from hardware.roofline import Peaks, Work

PEAKS = Peaks(matmul=1e12, vector=1e11, bandwidth=1e11)
TRUE = Factors(Efficiency(matmul=0.6, vector=0.3, memory=0.8), op_overhead_s=4e-6)


def synthetic(n: int, seed: int = 0, noise: float = 0.0) -> list[Sample]:
    """Samples of 1-6 items each, mixing compute- and memory-bound work, timed by TRUE."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        items = []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.5:  # matmul-heavy
                items.append(Work(flops=rng.randint(10**8, 10**10), bytes_read=rng.randint(
                    10**5, 10**7), ops=rng.randint(1, 4)))
            else:  # element-wise, memory-heavy
                elems = rng.randint(10**5, 10**8)
                items.append(Work(vector_flops=elems * rng.randint(1, 8), bytes_read=4 * elems,
                                  bytes_written=4 * elems, ops=rng.randint(1, 8)))
        sample = Sample(tuple(items), 1.0, group=f"run{i:03d}", label=f"L{i % 2}")
        measured = estimate_sample(sample, PEAKS, TRUE) * (1 + rng.uniform(-noise, noise))
        out.append(Sample(sample.items, measured, sample.group, sample.label))
    return out


def test_fit_recovers_known_factors() -> None:
    samples = synthetic(60)
    factors, iterations = fit_factors(samples, PEAKS)
    assert factors.efficiency.matmul == pytest.approx(0.6, rel=1e-6)
    assert factors.efficiency.vector == pytest.approx(0.3, rel=1e-6)
    assert factors.efficiency.memory == pytest.approx(0.8, rel=1e-6)
    assert factors.op_overhead_s == pytest.approx(4e-6, rel=1e-6)
    assert iterations >= 2  # the bounds moved from the ideal-peak assignment
    assert mape(samples, PEAKS, factors) == pytest.approx(0.0, abs=1e-6)


def test_fit_reports_held_out_mape_before_and_after() -> None:
    samples = synthetic(90, seed=1, noise=0.05)
    result = fit(samples, PEAKS)
    assert result.held_out_samples == 30 and result.fit_samples == 60
    assert result.mape_held_out_before > 30           # ideal peaks are far too optimistic
    assert result.mape_held_out_after < 5             # noise is +-5%
    assert result.factors.efficiency.matmul == pytest.approx(0.6, rel=0.1)
    assert set(result.by_label) == {"L0", "L1"}
    assert all(row["mape_held_out_after"] < 5 for row in result.by_label.values())


def test_fit_without_overhead_and_unused_columns_keep_their_start() -> None:
    samples = [Sample((Work(flops=10**9 * k, bytes_read=10),), 4e-3 * k, f"g{k}")
               for k in range(1, 7)]
    start = Factors(Efficiency(matmul=1, vector=0.7, memory=0.9), op_overhead_s=1e-6)
    factors, _ = fit_factors(samples, PEAKS, start, fit_overhead=False)
    assert factors.efficiency.matmul == pytest.approx(0.25)
    assert (factors.efficiency.vector, factors.efficiency.memory) == (0.7, 0.9)
    assert factors.op_overhead_s == 1e-6


def test_split_holds_out_every_third_group() -> None:
    samples = synthetic(9)
    fit_part, held = split(samples)
    assert [s.group for s in held] == ["run001", "run004", "run007"]
    assert len(fit_part) == 6
    with pytest.raises(ValueError, match="no samples"):
        fit_factors([Sample((Work(flops=1),), 0.0)], PEAKS)


def test_bounded_lstsq_small_is_exact() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    inf = np.array([np.inf, np.inf])
    assert bounded_lstsq_small(a, np.array([1.0, 2.0, 3.0]), np.zeros(2), inf) == pytest.approx(
        [1.0, 2.0])
    assert bounded_lstsq_small(a, np.array([-1.0, 2.0, 1.0]), np.zeros(2), inf) == pytest.approx(
        [0.0, 1.5])
    capped = bounded_lstsq_small(a, np.array([1.0, 2.0, 3.0]), np.zeros(2), np.array([5, 1.0]))
    assert capped == pytest.approx([1.5, 1.0])  # x1 at its upper bound, x0 refitted


def test_implausible_answers_end_on_a_bound() -> None:
    # times that only a 5x-faster-than-peak matmul could explain: capped at efficiency 2
    samples = [Sample((Work(flops=10**9 * k),), 2e-4 * k, f"g{k}") for k in range(1, 7)]
    result = fit(samples, PEAKS)
    assert result.factors.efficiency.matmul == pytest.approx(2.0)
    assert result.at_bound == ["matmul"]
    assert at_bounds(TRUE) == []
