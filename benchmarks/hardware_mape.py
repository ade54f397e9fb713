"""Estimated vs measured forward time on this CPU, per phase, for small GPT-2 and Llama configs.

Steps:
1. Calibrate the CPU (`hardware.calibrate`, full sizes) with `--threads` torch threads (default
   1: on a shared machine one thread gives the steadiest timings).
2. For each config (GPT-2 and Llama shapes scaled to hidden 256/512/768, 2-4 layers, vocab 4096)
   and each shape (prefill: batch x seq; decode: one token on a KV cache of kv_len), count the
   work by tracing on `meta` (the counts equal CPU's) and time the *untraced* forward on CPU
   with random weights under `torch.inference_mode` (best of `--repeats` after a warm-up; a decode
   step gets fresh inputs every time since it appends to its cache). `--clock thread` (default)
   times with the thread's CPU time, so other processes on a shared machine do not inflate the
   numbers; on an idle machine it equals wall time (`--clock wall`).
3. The estimate of a forward pass is the roofline summed over its pseudo-leaves
   (`hardware.roofline`): first with the calibrated peaks ("before"), then with efficiency
   factors and a per-op overhead fitted (`hardware.fit.fit_factors`, one fit for both phases)
   on the fit shapes: every shape except each config's 2nd, 5th, 8th... (held out).
4. Report the MAPE per phase on held-out shapes (and on fit shapes), before and after.
Target: held-out prefill MAPE under 25%.

Run:  uv run python benchmarks/hardware_mape.py [--threads 1] [--repeats 3] [--quick]
          [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from hardware.calibrate import CLOCKS, calibrate, to_device
from hardware.catalog import Efficiency
from hardware.fit import Factors, Sample, at_bounds, estimate_sample, fit_factors, mape
from hardware.roofline import Peaks, calls_from_records, work_of
from lm_predictor.models.inputs import build_inputs
from lm_predictor.models import build_model, load_preset, tiny_config
from tracing import trace

VOCAB = 4096
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2-256x2": ("gpt2", dict(n_embd=256, n_layer=2, n_head=4, vocab_size=VOCAB)),
    "gpt2-512x4": ("gpt2", dict(n_embd=512, n_layer=4, n_head=8, vocab_size=VOCAB)),
    "gpt2-768x4": ("gpt2", dict(n_embd=768, n_layer=4, n_head=12, vocab_size=VOCAB)),
    "llama-256x2": ("meta-llama/Llama-3.1-8B", dict(
        hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, vocab_size=VOCAB)),
    "llama-512x4": ("meta-llama/Llama-3.1-8B", dict(
        hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, head_dim=64, vocab_size=VOCAB)),
    "llama-768x4": ("meta-llama/Llama-3.1-8B", dict(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=12,
        num_key_value_heads=4, head_dim=64, vocab_size=VOCAB)),
}
PREFILL = [(1, 32), (1, 64), (2, 32), (1, 128), (2, 64), (4, 32), (1, 256), (2, 128), (4, 64)]
DECODE = [(1, 64), (4, 64), (8, 64), (1, 256), (4, 256), (8, 256)]


@dataclass
class Point:
    """One measured shape."""

    config: str
    phase: str
    batch: int
    length: int  # seq_len for prefill, kv_len for decode
    held_out: bool
    measured_s: float
    before_s: float = 0.0
    after_s: float = 0.0


def time_forward(model: torch.nn.Module, config: Any, phase: str, batch: int, length: int,
                 repeats: int, clock: Callable[[], float]) -> float:
    """Best wall time of an untraced forward (fresh inputs each time for decode)."""
    def inputs() -> dict[str, Any]:
        if phase == "decode":
            return build_inputs(model, config, batch_size=batch, seq_len=1, phase="decode",
                                kv_len=length, device="cpu", attention_mask=False)
        return build_inputs(model, config, batch_size=batch, seq_len=length, phase="prefill",
                            device="cpu", attention_mask=False)

    best = float("inf")
    prefill_inputs = inputs() if phase == "prefill" else None
    with torch.inference_mode():
        for i in range(repeats + 1):  # the first run warms up
            kw = prefill_inputs if prefill_inputs is not None else inputs()
            start = clock()
            model(**kw)
            elapsed = clock() - start
            if i:
                best = min(best, elapsed)
    return best


def work_items(meta_model: torch.nn.Module, config: Any, phase: str, batch: int,
               length: int) -> tuple[Any, ...]:
    """Pseudo-leaf work of one forward, counted by tracing on meta."""
    if phase == "decode":
        kw = build_inputs(meta_model, config, batch_size=batch, seq_len=1, phase="decode",
                          kv_len=length, device="meta", attention_mask=False)
    else:
        kw = build_inputs(meta_model, config, batch_size=batch, seq_len=length,
                          phase="prefill", device="meta", attention_mask=False)
    with torch.inference_mode(), trace(meta_model, device_timing=False) as t:
        meta_model(**kw)
    calls = calls_from_records(t.calls)
    return tuple(c.self_work for c in calls) + (work_of(t.outside, t.outside_ops),)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="thread",
                        help="thread (default): the thread's CPU time, immune to other "
                             "processes on a shared machine (needs --threads 1); wall: wall time")
    parser.add_argument("--quick", action="store_true", help="two configs, fewer shapes")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()

    calibration = calibrate("cpu", clock=args.clock)
    device = to_device(calibration, "bench-cpu")
    print(f"calibrated {device.display_name} on {args.threads} thread(s), {args.clock} clock, in "
          f"{calibration.duration_s:.1f} s: fp32 matmul {device.matmul_tflops['fp32'] * 1e3:.1f}"
          f" GFLOP/s, vector {device.vector_tflops['fp32'] * 1e3:.2f} GFLOP/s, bandwidth "
          f"{device.memory_bandwidth_gbs:.1f} GB/s, op overhead {device.op_overhead_us:.2f} µs")
    peaks = Peaks.of(device, "fp32", Efficiency(), op_overhead_us=0.0)
    calibrated = Factors(Efficiency(), device.op_overhead_us * 1e-6)

    configs = dict(list(CONFIGS.items())[::3]) if args.quick else CONFIGS
    prefill = PREFILL[:6] if args.quick else PREFILL
    decode = DECODE[:3] if args.quick else DECODE
    points: list[Point] = []
    samples: list[Sample] = []
    for name, (preset, overrides) in configs.items():
        config = tiny_config(load_preset(preset), **overrides)
        model = build_model(config, device="cpu")
        meta_model = build_model(config, device="meta")
        for phase, shapes in (("prefill", prefill), ("decode", decode)):
            for index, (batch, length) in enumerate(shapes):
                items = work_items(meta_model, config, phase, batch, length)
                measured = time_forward(model, config, phase, batch, length, args.repeats,
                                        CLOCKS[args.clock])
                points.append(Point(name, phase, batch, length, index % 3 == 1, measured))
                samples.append(Sample(items, measured, f"{name}/{phase}/{index}", phase))
        print(f"  {name}: {len(prefill) + len(decode)} shapes timed "
              f"({time.perf_counter() - started:.0f} s so far)", flush=True)

    fit_samples = [s for s, p in zip(samples, points) if not p.held_out]
    fitted, iterations = fit_factors(fit_samples, peaks, calibrated)
    for s, p in zip(samples, points):
        p.before_s = estimate_sample(s, peaks, calibrated)
        p.after_s = estimate_sample(s, peaks, fitted)

    eff = fitted.efficiency
    bounded = at_bounds(fitted)
    print(f"\nfitted on {len(fit_samples)} shapes ({iterations} iterations): efficiency matmul "
          f"{eff.matmul:.3g}, vector {eff.vector:.3g}, memory {eff.memory:.3g}; op overhead "
          f"{fitted.op_overhead_s * 1e6:.2f} µs (calibrated {device.op_overhead_us:.2f} µs)"
          + (f"; on a plausibility bound: {', '.join(bounded)}" if bounded else ""))
    results: dict[str, Any] = {}
    print(f"\n{'phase':8} {'set':9} {'n':>3} {'MAPE before':>12} {'MAPE after':>11}")
    for phase in ("prefill", "decode"):
        for held in (True, False):
            chosen = [s for s, p in zip(samples, points) if p.phase == phase and p.held_out == held]
            before, after = mape(chosen, peaks, calibrated), mape(chosen, peaks, fitted)
            label = "held-out" if held else "fit"
            results[f"{phase}_{label}"] = {"n": len(chosen), "mape_before": before,
                                           "mape_after": after}
            print(f"{phase:8} {label:9} {len(chosen):3d} {before:11.1f}% {after:10.1f}%")
    print("\nheld-out shapes (measured vs estimated after the fit):")
    for p in points:
        if p.held_out:
            err = 100 * (p.after_s - p.measured_s) / p.measured_s
            what = f"seq {p.length}" if p.phase == "prefill" else f"kv {p.length}"
            print(f"  {p.config:12} {p.phase:7} batch {p.batch} {what:8} measured "
                  f"{p.measured_s * 1e3:8.2f} ms  estimated {p.after_s * 1e3:8.2f} ms  "
                  f"({err:+.0f}%)")
    median_err = statistics.median(abs(p.after_s - p.measured_s) / p.measured_s for p in points
                                   if p.held_out)
    print(f"\nmedian held-out error {100 * median_err:.1f}%; total "
          f"{time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"device": device.model_dump(mode="json"), "clock": args.clock,
                       "threads": args.threads, "fitted": {
                           **fitted.efficiency.model_dump(),
                           "op_overhead_us": fitted.op_overhead_s * 1e6},
                       "results": results, "points": [asdict(p) for p in points]}, handle,
                      indent=2)


if __name__ == "__main__":
    main()
