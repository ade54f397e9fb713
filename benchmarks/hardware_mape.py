"""Estimated vs measured forward time on this CPU, per phase and kernel model, on held-out shapes
and held-out model families.

Steps:
1. Calibrate the CPU (`hardware.calibrate`, full sizes) with `--threads` torch threads (default
   1: on a shared machine one thread gives the steadiest timings).
2. Configs: GPT-2 and Llama shapes (the FIT families, hidden 256/512/768, 2-4 layers) and Qwen2
   and OPT shapes (the HELD-OUT families, never used for fitting), vocab 4096. For each config
   and shape (prefill: batch x seq; decode: one token on a KV cache of kv_len), the work is
   counted by tracing on `meta` (the counts equal CPU's) and the *untraced* forward is timed on
   CPU with random weights under `torch.inference_mode`: the median of `--repeats` runs after a
   warm-up (a decode step gets fresh inputs every time since it appends to its cache).
   `--clock thread` (default) times with the thread's CPU time, so other processes on a shared
   machine do not inflate the numbers; on an idle machine it equals wall time.
3. For each kernel model (`hardware.kernels`: `eager`, what the CPU runs; `fused`, a serving
   engine's kernels, logits at every position as the timed forward computes them) and each
   roofline mode (`max`: compute and memory overlap, the GPU default; `sum`: they add, as a CPU
   running one eager op at a time), the estimate of a pass is the roofline summed over its
   pseudo-leaves: first at the calibrated peaks and op overhead ("uncalibrated"), then with
   efficiency factors, a per-op and a per-module-call overhead fitted
   (`hardware.fit.fit_factors`, one fit for both phases) on the fit shapes of the fit families:
   every shape except each config's 2nd, 5th, 8th...
4. MAPE per phase on: fit shapes, held-out shapes (fit families), held-out families (all their
   shapes), before and after the fit.
Targets (issue 11): eager, after the fit, held-out prefill under 10% and decode under 15%, on
held-out shapes and on held-out families.

Run:  uv run python benchmarks/hardware_mape.py [--threads 1] [--repeats 5] [--quick]
          [--json results.json] [--measured earlier.json]
`--measured` re-uses the device and measured times of an earlier `--json` (no calibration or
timing; the work is traced again on meta) to refit without the machine's noise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from hardware.calibrate import CLOCKS, calibrate, to_device
from hardware.catalog import Device, Efficiency
from hardware.fit import Factors, Sample, at_bounds, estimate_sample, fit_factors, mape
from hardware.kernels import KERNEL_MODELS, kernel_calls
from hardware.roofline import Peaks, Work, work_of
from lm_predictor.models.inputs import build_inputs
from lm_predictor.models import build_model, load_preset, tiny_config
from tracing import trace

VOCAB = 4096
LLAMA = "meta-llama/Llama-3.1-8B"
QWEN2 = "Qwen/Qwen2.5-7B"
# name -> (preset, overrides, family role)
CONFIGS: dict[str, tuple[str, dict[str, Any], str]] = {
    "gpt2-256x2": ("gpt2", dict(n_embd=256, n_layer=2, n_head=4, vocab_size=VOCAB), "fit"),
    "gpt2-512x4": ("gpt2", dict(n_embd=512, n_layer=4, n_head=8, vocab_size=VOCAB), "fit"),
    "gpt2-768x4": ("gpt2", dict(n_embd=768, n_layer=4, n_head=12, vocab_size=VOCAB), "fit"),
    "llama-256x2": (LLAMA, dict(
        hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, vocab_size=VOCAB), "fit"),
    "llama-512x4": (LLAMA, dict(
        hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, head_dim=64, vocab_size=VOCAB), "fit"),
    "llama-768x4": (LLAMA, dict(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=12,
        num_key_value_heads=4, head_dim=64, vocab_size=VOCAB), "fit"),
    "qwen2-384x3": (QWEN2, dict(
        hidden_size=384, intermediate_size=1024, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=2, head_dim=64, vocab_size=VOCAB), "held-out"),
    "qwen2-640x4": (QWEN2, dict(
        hidden_size=640, intermediate_size=1792, num_hidden_layers=4, num_attention_heads=10,
        num_key_value_heads=2, head_dim=64, vocab_size=VOCAB), "held-out"),
    "opt-384x3": ("facebook/opt-125m", dict(
        hidden_size=384, word_embed_proj_dim=384, ffn_dim=1536, num_hidden_layers=3,
        num_attention_heads=6, vocab_size=VOCAB), "held-out"),
    "opt-640x4": ("facebook/opt-125m", dict(
        hidden_size=640, word_embed_proj_dim=640, ffn_dim=2560, num_hidden_layers=4,
        num_attention_heads=10, vocab_size=VOCAB), "held-out"),
}
PREFILL = [(1, 32), (1, 64), (2, 32), (1, 128), (2, 64), (4, 32), (1, 256), (2, 128), (4, 64)]
DECODE = [(1, 64), (4, 64), (8, 64), (1, 256), (4, 256), (8, 256)]
SETS = ("fit", "held-out shapes", "held-out families")


@dataclass
class Point:
    """One measured shape, and its estimates per kernel model (before/after the fit)."""

    config: str
    family_role: str  # fit | held-out
    phase: str
    batch: int
    length: int  # seq_len for prefill, kv_len for decode
    held_out_shape: bool
    measured_s: float
    estimates: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def set(self) -> str:
        if self.family_role == "held-out":
            return "held-out families"
        return "held-out shapes" if self.held_out_shape else "fit"


def inputs_for(model: torch.nn.Module, config: Any, phase: str, batch: int, length: int,
               device: str) -> dict[str, Any]:
    if phase == "decode":
        return build_inputs(model, config, batch_size=batch, seq_len=1, phase="decode",
                            kv_len=length, device=device, attention_mask=False)
    return build_inputs(model, config, batch_size=batch, seq_len=length, phase="prefill",
                        device=device, attention_mask=False)


def time_forward(model: Any, config: Any, phase: str, batch: int, length: int,
                 repeats: int, clock: Callable[[], float]) -> float:
    """Median time of an untraced forward after a warm-up (fresh inputs each time for decode)."""
    times = []
    prefill_inputs = inputs_for(model, config, phase, batch, length, "cpu") \
        if phase == "prefill" else None
    with torch.inference_mode():
        for i in range(repeats + 1):  # the first run warms up
            kw = prefill_inputs if prefill_inputs is not None else \
                inputs_for(model, config, phase, batch, length, "cpu")
            start = clock()
            model(**kw)
            elapsed = clock() - start
            if i:
                times.append(elapsed)
    return statistics.median(times)


def work_items(meta_model: torch.nn.Module, config: Any, phase: str, batch: int,
               length: int) -> dict[str, tuple[Work, ...]]:
    """Pseudo-leaf work of one forward per kernel model, counted by tracing on meta (logits at
    every position, as the timed forward computes them)."""
    kw = inputs_for(meta_model, config, phase, batch, length, "meta")
    with torch.inference_mode(), trace(meta_model, device_timing=False) as t:
        meta_model(**kw)
    outside = work_of(t.outside, t.outside_ops)
    return {k: tuple(c.self_work for c in kernel_calls(t.calls, k, "all", config=t.config))
            + (outside,) for k in KERNEL_MODELS}  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="thread",
                        help="thread (default): the thread's CPU time, immune to other "
                             "processes on a shared machine (needs --threads 1); wall: wall time")
    parser.add_argument("--quick", action="store_true", help="four configs, fewer shapes")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--measured", help="re-use the device and times of an earlier --json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()

    earlier: dict[tuple[str, str, int, int], float] = {}
    if args.measured:
        with open(args.measured, encoding="utf-8") as handle:
            saved = json.load(handle)
        device = Device.model_validate(saved["device"])
        device.name = "bench-cpu"
        earlier = {(p["config"], p["phase"], p["batch"], p["length"]): p["measured_s"]
                   for p in saved["points"]}
        print(f"re-using {args.measured}: {len(earlier)} measured shapes")
    else:
        calibration = calibrate("cpu", clock=args.clock)
        device = to_device(calibration, "bench-cpu")
        print(f"calibrated {device.display_name} on {args.threads} thread(s), {args.clock} "
              f"clock, in {calibration.duration_s:.1f} s")
    print(f"peaks: fp32 matmul {device.matmul_tflops['fp32'] * 1e3:.1f} GFLOP/s, vector "
          f"{device.vector_tflops['fp32'] * 1e3:.2f} GFLOP/s, bandwidth "
          f"{device.memory_bandwidth_gbs:.1f} GB/s, op overhead {device.op_overhead_us:.2f} µs")
    peaks = Peaks.of(device, "fp32", Efficiency(), op_overhead_us=0.0)

    names = list(CONFIGS)
    configs = {n: CONFIGS[n] for n in (names[0], names[3], names[6], names[8])} if args.quick \
        else CONFIGS
    prefill = PREFILL[:6] if args.quick else PREFILL
    decode = DECODE[:3] if args.quick else DECODE
    points: list[Point] = []
    samples: dict[str, list[Sample]] = {k: [] for k in KERNEL_MODELS}
    for name, (preset, overrides, role) in configs.items():
        config = tiny_config(load_preset(preset), **overrides)
        model = None if earlier else build_model(config, device="cpu")
        meta_model = build_model(config, device="meta")
        for phase, shapes in (("prefill", prefill), ("decode", decode)):
            for index, (batch, length) in enumerate(shapes):
                items = work_items(meta_model, config, phase, batch, length)
                key = (name, phase, batch, length)
                measured = earlier[key] if earlier else time_forward(
                    model, config, phase, batch, length, args.repeats, CLOCKS[args.clock])
                points.append(Point(name, role, phase, batch, length, index % 3 == 1, measured))
                for k in KERNEL_MODELS:
                    samples[k].append(Sample(items[k], measured, f"{name}/{phase}/{index}",
                                             phase))
        print(f"  {name} ({role}): {len(prefill) + len(decode)} shapes timed "
              f"({time.perf_counter() - started:.0f} s so far)", flush=True)

    results: dict[str, Any] = {}
    for k in KERNEL_MODELS:
        for mode, overlap in (("max", True), ("sum", False)):
            label = f"{k}/{mode}"
            calibrated = Factors(Efficiency(), device.op_overhead_us * 1e-6, overlap=overlap)
            fit_samples = [s for s, p in zip(samples[k], points) if p.set == "fit"]
            fitted, iterations = fit_factors(fit_samples, peaks, calibrated,
                                             fit_call_overhead=True)
            for s, p in zip(samples[k], points):
                p.estimates[label] = {"before_s": estimate_sample(s, peaks, calibrated),
                                      "after_s": estimate_sample(s, peaks, fitted)}
            eff = fitted.efficiency
            bounded = at_bounds(fitted)
            print(f"\n[{k} kernels, roofline {mode}] fitted on {len(fit_samples)} shapes of "
                  f"GPT-2 and Llama ({iterations} iterations): efficiency matmul "
                  f"{eff.matmul:.3g}, vector {eff.vector:.3g}, memory {eff.memory:.3g}; op "
                  f"overhead {fitted.op_overhead_s * 1e6:.2f} µs (calibrated "
                  f"{device.op_overhead_us:.2f} µs); call overhead "
                  f"{fitted.call_overhead_s * 1e6:.1f} µs"
                  + (f"; on a plausibility bound: {', '.join(bounded)}" if bounded else ""))
            table: dict[str, Any] = {"fitted": {**eff.model_dump(),
                                                "op_overhead_us": fitted.op_overhead_s * 1e6,
                                                "call_overhead_us": fitted.call_overhead_s * 1e6,
                                                "overlap": overlap}}
            print(f"{'phase':8} {'set':18} {'n':>3} {'MAPE uncalibrated':>18} "
                  f"{'MAPE fitted':>12}")
            for phase in ("prefill", "decode"):
                for which in SETS:
                    chosen = [s for s, p in zip(samples[k], points)
                              if p.phase == phase and p.set == which]
                    if not chosen:
                        continue
                    before = mape(chosen, peaks, calibrated)
                    after = mape(chosen, peaks, fitted)
                    table[f"{phase}/{which}"] = {"n": len(chosen), "mape_before": before,
                                                 "mape_after": after}
                    print(f"{phase:8} {which:18} {len(chosen):3d} {before:17.1f}% "
                          f"{after:11.1f}%")
            results[label] = table
    print("\nheld-out points, eager kernels, roofline sum (measured vs estimated after the fit):")
    for p in points:
        if p.set != "fit":
            after = p.estimates["eager/sum"]["after_s"]
            err = 100 * (after - p.measured_s) / p.measured_s
            what = f"seq {p.length}" if p.phase == "prefill" else f"kv {p.length}"
            print(f"  {p.config:12} {p.phase:7} batch {p.batch} {what:8} measured "
                  f"{p.measured_s * 1e3:8.2f} ms  estimated {after * 1e3:8.2f} ms  "
                  f"({err:+.0f}%)")
    held = [p for p in points if p.set != "fit"]
    median_err = statistics.median(abs(p.estimates["eager/sum"]["after_s"] - p.measured_s)
                                   / p.measured_s for p in held)
    print(f"\nmedian held-out error (eager, sum) {100 * median_err:.1f}%; total "
          f"{time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"device": device.model_dump(mode="json"), "clock": args.clock,
                       "threads": args.threads, "repeats": args.repeats, "results": results,
                       "points": [asdict(p) for p in points]}, handle, indent=2)


if __name__ == "__main__":
    main()
