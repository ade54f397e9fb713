"""Calibration: measure the local device's roofs with microbenchmarks and make a device entry.

What is measured (best of a few repeats, each on warmed-up tensors):
- matmul peak per dtype: `torch.mm` of square matrices (512², 1024², 2048² on CPU; stopping
  early when the next size would take over `max_product_s`, e.g. bf16 on CPUs without bf16
  units), best rate over sizes: 2·n³ FLOPs per product.
- vector peak per dtype: `torch.mul(x, y, out=z)` on 2^18 elements (in cache on CPUs): 1 FLOP
  per element.
- memory bandwidth per dtype: `z.copy_(x)` on 64 MiB (read + write = 2 x bytes) and
  `torch.add(x, y, out=z)` (3 x bytes); the entry keeps the best over dtypes and kernels.
- op overhead: mean time of `torch.add` on one-element tensors (dispatch/launch cost per op).
On CUDA every timing is bracketed by `torch.cuda.synchronize()`. `clock="thread"` (cpu, one torch
thread) times with the thread's CPU time instead of wall time, so other processes on a shared
machine do not slow the measured peaks down.

A CPU entry gets `overlap: false` (time = compute + memory, which fits eager PyTorch on CPUs
better: see DESIGN.md, "Kernel models, memory and time accuracy"); a CUDA entry keeps the max.

`--quick` (tests) uses 128² and 256² matrices, 8 MiB copies and fewer repeats: the numbers are then
rough but positive and loadable. Timings on a shared machine are noisy; calibrate on an idle one.

Limits: peaks are what PyTorch reaches with these kernels on this machine and thread count, not
theoretical peaks; the DRAM-sized copy understates the speed of cache-resident tensors (small
models on CPU), which the fitted memory efficiency then corrects (`hardware.fit`).

Example:
    >>> result = calibrate("cpu", quick=True)
    >>> device = to_device(result, "my-cpu")
    >>> device.matmul_peak("fp32") > 0
    True
"""
from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from hardware.catalog import Device, Source, normalize_dtype

TORCH_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16,
                                        "fp16": torch.float16}


@dataclass(frozen=True)
class Measurement:
    """One microbenchmark: what, size, best time, and the rate it implies."""

    kind: str  # matmul | vector | copy | add | overhead
    dtype: str
    size: int  # n for matmul, elements otherwise
    best_s: float
    rate: float  # FLOP/s, bytes/s, or seconds per op for "overhead"


@dataclass
class Calibration:
    """Measured roofs of one device (SI units) and every measurement behind them."""

    device: str
    matmul: dict[str, float] = field(default_factory=dict)  # dtype -> FLOP/s
    vector: dict[str, float] = field(default_factory=dict)
    bandwidth: float = 0.0  # bytes/s
    op_overhead_s: float = 0.0
    measurements: list[Measurement] = field(default_factory=list)
    threads: int = 1
    duration_s: float = 0.0
    clock: str = "wall"


def _sync(device: str) -> Callable[[], None]:
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


def best_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None],
              inner: int = 1, clock: Callable[[], float] = time.perf_counter) -> float:
    """Best time of `fn` over `repeats` (after one warm-up), per inner call."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        for _ in range(inner):
            fn()
        sync()
        best = min(best, (clock() - start) / inner)
    return best


def calibrate(device: str = "cpu", *, quick: bool = False, dtypes: tuple[str, ...] = ("fp32",
              "bf16"), max_product_s: float = 0.5, clock: str = "wall") -> Calibration:
    """Measure matmul, vector, bandwidth and per-op overhead on `device` (cpu or cuda).

    `clock="thread"` times with the calling thread's CPU time instead of wall time: on a shared
    machine it ignores time the thread spent descheduled. Only meaningful on cpu with one torch
    thread (all work then runs on the calling thread)."""
    started = time.perf_counter()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("calibrate --device cuda: no CUDA device is available")
    if clock == "thread" and (dev.type != "cpu" or torch.get_num_threads() != 1):
        raise RuntimeError("the thread clock needs --device cpu and one torch thread")
    timer = CLOCKS[clock]
    sync = _sync(device)
    result = Calibration(device=str(dev), threads=torch.get_num_threads(), clock=clock)
    repeats = 2 if quick else 3
    gen = torch.Generator(device="cpu").manual_seed(0)
    with torch.inference_mode():
        for name in dtypes:
            key = normalize_dtype(name)
            dtype = TORCH_DTYPES[key]
            sizes = ((128, 256) if quick else (512, 1024, 2048) if dev.type == "cpu"
                     else (2048, 4096, 8192))
            for n in sizes:
                a = torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype)
                b = torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype)
                t = best_time(lambda: torch.mm(a, b), repeats, sync, clock=timer)
                result.measurements.append(Measurement("matmul", key, n, t, 2 * n**3 / t))
                if 8 * t > max_product_s:  # the next size (8x the FLOPs) would take too long
                    break
            result.matmul[key] = max(m.rate for m in result.measurements
                                     if m.kind == "matmul" and m.dtype == key)
            elems = 1 << 18
            x, y, z = (torch.rand(elems, generator=gen).to(device=dev, dtype=dtype)
                       for _ in range(3))
            t = best_time(lambda: torch.mul(x, y, out=z), repeats, sync, inner=20, clock=timer)
            result.measurements.append(Measurement("vector", key, elems, t, elems / t))
            result.vector[key] = elems / t
            nbytes = (8 if quick else 64) << 20
            elems = nbytes // torch.empty((), dtype=dtype).element_size()
            x, y, z = (torch.empty(elems, device=dev, dtype=dtype).fill_(1.0) for _ in range(3))
            t = best_time(lambda: z.copy_(x), repeats, sync, clock=timer)
            result.measurements.append(Measurement("copy", key, elems, t, 2 * nbytes / t))
            t = best_time(lambda: torch.add(x, y, out=z), repeats, sync, clock=timer)
            result.measurements.append(Measurement("add", key, elems, t, 3 * nbytes / t))
            del x, y, z
        result.bandwidth = max(m.rate for m in result.measurements if m.kind in ("copy", "add"))
        one = torch.ones(1, device=dev)
        inner = 200 if quick else 2000
        t = best_time(lambda: torch.add(one, one), repeats, sync, inner=inner, clock=timer)
        result.measurements.append(Measurement("overhead", "fp32", 1, t, t))
        result.op_overhead_s = t
    result.duration_s = time.perf_counter() - started
    return result


def describe_local(device: str) -> tuple[str, str, str, float]:
    """(display name, vendor, kind, memory GB) of the local cpu or cuda device."""
    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return props.name, "NVIDIA" if torch.version.cuda else "AMD", "gpu", props.total_memory / 1e9
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = 0.0
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        memory_gb = 1.0
    vendor = name.split()[0] if name else "unknown"
    return f"{name} ({os.cpu_count()} CPUs)", vendor, "cpu", memory_gb or 1.0


def to_device(result: Calibration, name: str) -> Device:
    """A catalog entry holding the measured peaks (TFLOPS, GB/s), with its provenance."""
    display, vendor, kind, memory_gb = describe_local(result.device)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figures = "; ".join(f"{m.kind} {m.dtype} size {m.size}: {m.best_s * 1e3:.3g} ms"
                        for m in result.measurements)
    device = Device(
        display_name=display, vendor=vendor, kind=kind,  # type: ignore[arg-type]
        memory_gb=memory_gb, memory_bandwidth_gbs=result.bandwidth / 1e9,
        matmul_tflops={k: v / 1e12 for k, v in result.matmul.items()},  # type: ignore[misc]
        vector_tflops={k: v / 1e12 for k, v in result.vector.items()},  # type: ignore[misc]
        op_overhead_us=result.op_overhead_s * 1e6,
        overlap=kind != "cpu",  # one eager op at a time on a CPU core: compute + memory add
        sources=[Source(title=f"measured by 'lm-predictor hardware calibrate' on {when}",
                        figures=figures)],
        notes=f"calibrated on {result.device} with {result.threads} threads, torch "
              f"{torch.__version__}; peaks are achieved rates of torch kernels, not datasheet "
              f"figures",
        calibration={"date": when, "device": result.device, "threads": result.threads,
                     "clock": result.clock,
                     "torch": torch.__version__, "duration_s": round(result.duration_s, 3)})
    device.name = name
    return device
