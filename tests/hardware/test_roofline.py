"""Roofline arithmetic on hand-computed cases (both bounds), efficiency factors, op overhead, and
estimates summed from the leaves rather than taken from the root totals."""
from __future__ import annotations

import pytest

from hardware.catalog import Device, Efficiency, HardwareError, load_catalog
from hardware.roofline import (CallWork, Peaks, Work, estimate_calls, estimate_totals,
                               estimate_trace, estimate_work)

# A round-numbered device: 1 TFLOP/s matmul, 0.1 TFLOP/s vector, 100 GB/s; ridge 10 FLOP/B.
TOY = Device.model_validate({
    "display_name": "toy", "vendor": "test", "kind": "gpu", "memory_gb": 16,
    "memory_bandwidth_gbs": 100, "matmul_tflops": {"fp32": 1.0},
    "vector_tflops": {"fp32": 0.1}, "op_overhead_us": 5, "sources": [{"title": "test"}]})
TOY.name = "toy"


def test_compute_bound_by_hand() -> None:
    est = estimate_totals(10**9, 10**7, 6 * 10**5, 4 * 10**5, TOY, "float32")
    assert est.matmul_s == pytest.approx(1e-3)        # 1e9 / 1e12
    assert est.vector_s == pytest.approx(1e-4)        # 1e7 / 1e11
    assert est.memory_s == pytest.approx(1e-5)        # 1e6 / 1e11
    assert est.bound == "compute"
    assert est.estimate_s == pytest.approx(1.1e-3)
    assert est.intensity == pytest.approx(1010.0)     # (1e9 + 1e7) / 1e6


def test_memory_bound_by_hand() -> None:
    est = estimate_totals(10**6, 0, 8 * 10**8, 2 * 10**8, TOY, "fp32", ops=10)
    assert est.compute_s == pytest.approx(1e-6)
    assert est.memory_s == pytest.approx(1e-2)        # 1e9 B / 1e11 B/s
    assert est.overhead_s == pytest.approx(5e-5)      # 10 ops x 5 µs
    assert est.bound == "memory"
    assert est.estimate_s == pytest.approx(1e-2 + 5e-5)
    assert est.intensity == pytest.approx(1e-3)


def test_h100_gemm_and_gemv_by_hand() -> None:
    h100 = load_catalog().get("H100-SXM")
    n = 4096
    gemm = estimate_totals(2 * n**3, 0, 2 * n * n * 2, n * n * 2, h100, "bfloat16")
    assert gemm.bound == "compute"
    assert gemm.estimate_s == pytest.approx(2 * n**3 / 989.5e12)   # 138.9 µs
    gemv = estimate_totals(2 * n * n, 0, n * n * 2 + n * 2, n * 2, h100, "bfloat16")
    assert gemv.bound == "memory"
    assert gemv.estimate_s == pytest.approx((n * n * 2 + 2 * n * 2) / 3.35e12)  # 10 µs


def test_efficiency_factors_scale_each_roof() -> None:
    eff = Efficiency(matmul=0.5, vector=0.25, memory=0.8)
    compute = estimate_totals(10**9, 10**7, 10**6, 0, TOY, "fp32", efficiency=eff)
    assert compute.estimate_s == pytest.approx(1e-3 / 0.5 + 1e-4 / 0.25)
    memory = estimate_totals(0, 0, 10**9, 0, TOY, "fp32", efficiency=eff)
    assert memory.estimate_s == pytest.approx(1e-2 / 0.8)


def test_device_without_vector_peak_treats_vector_work_as_memory_bound() -> None:
    tpu = load_catalog().get("TPU-v5e")
    est = estimate_totals(0, 10**12, 10**6, 0, tpu, "bf16")
    assert est.vector_s == 0 and est.bound == "memory"
    with pytest.raises(HardwareError, match="TPU-v5e lists no fp32 matmul peak"):
        estimate_totals(1, 0, 0, 0, tpu, "float32")


def tree() -> list[CallWork]:
    """root -> [gemv-like memory-bound leaf, compute-heavy leaf with few bytes]."""
    return [
        CallWork(0, None, "", "Model", Work(ops=0), (1, 2), None),
        CallWork(1, 0, "a", "Gemv", Work(flops=10**10, bytes_read=10**10, ops=1)),
        CallWork(2, 0, "b", "Gemm", Work(flops=95 * 10**9, bytes_read=10**3, ops=1))]


def test_estimates_are_summed_from_the_leaves_not_the_root_totals() -> None:
    est = estimate_calls(tree(), TOY, "fp32", op_overhead_us=0)
    root = est.calls[0].total
    # the leaves: 0.1 s memory-bound (1e10 B / 1e11) + 0.095 s compute-bound (9.5e10 / 1e12)
    assert [c.own.bound for c in est.calls[1:]] == ["memory", "compute"]
    assert root.estimate_s == pytest.approx(0.195)
    assert root.bound == "memory"
    # the root's totals alone would look compute-bound and half as long
    totals = est.calls[0].total.work
    naive = estimate_totals(totals.flops, 0, totals.bytes_read, 0, TOY, "fp32")
    assert naive.bound == "compute" and naive.estimate_s == pytest.approx(0.105)
    assert est.total.estimate_s == pytest.approx(0.195)


def test_composite_own_work_is_a_pseudo_leaf() -> None:
    calls = tree()
    calls[0] = CallWork(0, None, "", "Model", Work(vector_flops=10**8, bytes_read=10**5), (1, 2))
    est = estimate_calls(calls, TOY, "fp32", op_overhead_us=0)
    assert est.calls[0].own.estimate_s == pytest.approx(1e-3)  # 1e8 vector FLOPs at 1e11
    assert est.calls[0].total.estimate_s == pytest.approx(0.196)
    by_class = {g.class_name: g.estimate.estimate_s for g in est.by_class()}
    assert by_class == pytest.approx({"Model": 1e-3, "Gemv": 0.1, "Gemm": 0.095})


def test_rows_and_measured_self_times() -> None:
    calls = [CallWork(c.call_id, c.parent_call_id, c.module_path, c.class_name, c.self_work,
                      c.children, wall) for c, wall in zip(tree(), (0.5, 0.2, 0.1))]
    est = estimate_calls(calls, TOY, "fp32")
    assert est.measured_s == 0.5
    assert est.measured_self_s() == pytest.approx({0: 0.2, 1: 0.2, 2: 0.1})
    rows = est.rows()
    assert [r["call_id"] for r in rows] == [0, 1, 2]
    assert rows[0]["hardware"] == "toy" and rows[0]["wall_time_s"] == 0.5
    assert rows[0]["estimate_s"] == pytest.approx(0.195 + 2 * 5e-6)
    assert rows[1]["bound"] == "memory" and rows[2]["bound"] == "compute"


def test_deep_call_chains_do_not_recurse() -> None:
    depth = 5000
    calls = [CallWork(i, i - 1 if i else None, str(i), "Block", Work(bytes_read=100),
                      (i + 1,) if i + 1 < depth else ()) for i in range(depth)]
    est = estimate_calls(calls, TOY, "fp32", op_overhead_us=0)
    assert est.total.estimate_s == pytest.approx(depth * 100 / 1e11)


def test_a_real_trace_sums_consistently() -> None:
    import torch

    from tracing import trace

    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(),
                                torch.nn.Linear(256, 64))
    with torch.inference_mode(), trace(model) as t:
        model(torch.ones(8, 64))
    est = estimate_trace(t, TOY, "float32")
    own_sum = sum(c.own.estimate_s for c in est.calls) + est.outside.estimate_s
    assert est.total.estimate_s == pytest.approx(own_sum)
    assert est.total.work.flops == t.totals.flops
    assert Peaks.of(TOY, "fp32").op_overhead_s == pytest.approx(5e-6)
    assert estimate_work(Work(), Peaks.of(TOY, "fp32")).estimate_s == 0


def test_devices_without_overlap_add_compute_and_memory() -> None:
    cpu = TOY.model_copy(update={"overlap": False, "call_overhead_us": 40})
    cpu.name = "toy-cpu"
    est = estimate_work(Work(flops=10**9, bytes_read=10**9, ops=3, calls=1),
                        Peaks.of(cpu, "fp32"))
    # 1 ms of matmul + 10 ms of memory, added; 3 ops x 5 µs; one call x 40 µs
    assert est.estimate_s == pytest.approx(1e-3 + 1e-2 + 15e-6 + 40e-6)
    assert est.bound == "memory"
    overlapped = estimate_work(Work(flops=10**9, bytes_read=10**9, ops=3, calls=1),
                               Peaks.of(TOY, "fp32"))
    assert overlapped.estimate_s == pytest.approx(1e-2 + 15e-6)  # no call overhead by default
