"""Efficiency fits on synthetic data with a known answer, the held-out split, and MAPE."""
from __future__ import annotations

import random

import numpy as np
import pytest

from hardware.catalog import Efficiency
from hardware.fit import (Factors, NotEnoughSamples, Sample, at_bounds, bounded_lstsq_small, estimate_sample, fit,
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


def test_call_overhead_is_recovered_and_applied_per_kernel_model() -> None:
    from hardware.catalog import Device
    from hardware.fit import with_kernel_factors
    from hardware.kernels import estimate_kernels
    from hardware.roofline import estimate_work

    truth = Factors(Efficiency(matmul=0.5, vector=1.0, memory=0.25), 2e-6, 30e-6)
    rng = random.Random(1)
    samples = []
    for i in range(30):  # decode-like samples: many calls with little work each
        items = tuple(Work(flops=rng.randint(10**6, 10**9), bytes_read=rng.randint(10**4, 10**8),
                           ops=rng.randint(1, 6), calls=1) for _ in range(rng.randint(5, 40)))
        sample = Sample(items, 1.0, group=f"g{i}")
        samples.append(Sample(items, estimate_sample(sample, PEAKS, truth), f"g{i}"))
    factors, _ = fit_factors(samples, PEAKS, fit_call_overhead=True)
    assert factors.call_overhead_s == pytest.approx(30e-6, rel=1e-6)
    assert factors.op_overhead_s == pytest.approx(2e-6, rel=1e-6)
    assert factors.efficiency.memory == pytest.approx(0.25, rel=1e-6)
    # the same factors through a device: 1 call, 2 ops, 1e8 bytes at 25% of 100 GB/s
    toy = Device.model_validate({
        "display_name": "toy", "vendor": "test", "kind": "cpu", "memory_gb": 1,
        "memory_bandwidth_gbs": 100, "matmul_tflops": {"fp32": 1.0},
        "vector_tflops": {"fp32": 0.1}, "sources": [{"title": "test"}]})
    toy.name = "toy"
    tuned = with_kernel_factors(toy, "eager", factors)
    assert tuned.efficiency_for("eager").memory == pytest.approx(0.25)
    assert tuned.efficiency_for("fused") == Efficiency()
    est = estimate_work(Work(bytes_read=10**8, ops=2, calls=1),
                        Peaks.of(tuned, "fp32", tuned.efficiency_for("eager")))
    assert est.estimate_s == pytest.approx(10**8 / (1e11 * 0.25) + 2 * 2e-6 + 30e-6)
    # estimate_kernels picks the kernel model's factors: a memory-bound Linear on 1 row
    import torch

    from tracing import trace
    model = torch.nn.Sequential(torch.nn.Linear(512, 512))
    with torch.inference_mode(), trace(model) as t:
        model(torch.ones(1, 512))
    eager = estimate_kernels(t, tuned, "fp32", "eager").total.estimate_s
    fused = estimate_kernels(t, tuned, "fp32", "fused").total.estimate_s
    moved = t.totals.bytes_read + t.totals.bytes_written  # same work in both kernel models
    assert moved >= (512 * 512 + 512 + 2 * 512) * 4
    assert eager - fused == pytest.approx(moved / 1e11 * (1 / 0.25 - 1))


def test_additive_model_is_recovered() -> None:
    truth = Factors(Efficiency(matmul=0.9, vector=0.5, memory=0.4), 1e-6, 45e-6, overlap=False)
    samples = [Sample(s.items, estimate_sample(s, PEAKS, truth), s.group)
               for s in synthetic(40, seed=3)]
    start = Factors(Efficiency(), overlap=False)
    factors, _ = fit_factors(samples, PEAKS, start, fit_call_overhead=True)
    assert not factors.overlap
    assert factors.efficiency.memory == pytest.approx(0.4, rel=1e-6)
    assert factors.efficiency.matmul == pytest.approx(0.9, rel=1e-6)
    assert mape(samples, PEAKS, factors) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_fit_refuses_too_few_samples_for_a_held_out_error(n: int) -> None:
    # 4 free factors (matmul, vector, memory, op overhead): 1 sample used to give a 0% error
    samples = synthetic(30)
    with pytest.raises(NotEnoughSamples, match="too few") as info:
        fit(samples[:n], PEAKS)
    # every 3rd of n groups held out: 6 = 4 fit + 2 held out is the least that works
    assert info.value.needed == 6 and info.value.have == n
    assert info.value.free == ["matmul", "vector", "memory", "op_overhead"]
    result = fit(samples[:6], PEAKS)
    assert (result.fit_samples, result.held_out_samples) == (4, 2)
    assert result.mape_held_out_after is not None
    # without an overhead 3 factors: 5 samples (3 fit, 2 held out) are enough
    assert fit(samples[:5], PEAKS, fit_overhead=False).fit_samples == 3
