"""Llama-2-7B fp16 on A100: the legacy LLM-Viewer-style figures beside ours, eager and fused.

Traces the Llama-2-7B preset on `meta` (batch 1, float16) for a 2048-token prefill and a decode
step on 2048 cached tokens, estimates both under the `eager` and `fused` kernel models
(`hardware.kernels`) on the A100 40GB (1555 GB/s, 312 TFLOP/s fp16: the A100 figures the
legacy analyzer uses), and prints totals, the per-class split of bytes that explains the
differences, and the memory breakdown (`hardware.memory`) of both kernel models.

Run:  uv run python benchmarks/side_by_side.py [--hardware A100-40GB-SXM] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

import torch

from hardware.catalog import load_catalog
from hardware.kernels import category_of, estimate_kernels, kernel_calls
from hardware.memory import TracedMemory
from lm_predictor.models import load_preset
from lm_predictor.testing import trace_config

LEGACY = {"prefill": {"ops": 2.875e13, "bytes": 65.9e9, "time_s": 112.5e-3},
          "decode": {"time_s": 9.20e-3}}
PRESET = "meta-llama/Llama-2-7b-hf"


def by_category(trace: Any, kernels: str) -> dict[str, dict[str, float]]:
    """Own work per fused-rule category (attention, norm, ...), FLOPs and bytes."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"flops": 0, "vector_flops": 0,
                                                            "bytes": 0})
    calls = kernel_calls(trace.calls, kernels, config=trace.config)  # type: ignore[arg-type]
    for record, call in zip(trace.calls, calls):
        cat = category_of(record)
        if cat == "other":
            name = record.class_name.rsplit(".", 1)[-1]
            cat = "linear" if name in ("Linear", "Conv1D") else "other"
        w = call.self_work
        out[cat]["flops"] += w.flops
        out[cat]["vector_flops"] += w.vector_flops
        out[cat]["bytes"] += w.bytes
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="A100-40GB-SXM")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    device = load_catalog().get(args.hardware)
    config = load_preset(PRESET)
    results: dict[str, Any] = {"hardware": device.name, "model": PRESET, "dtype": "fp16"}
    for phase, seq, kv in (("prefill", 2048, 0), ("decode", 1, 2048)):
        t = trace_config(config, 1, seq, phase=phase, kv_len=kv, dtype=torch.float16)
        legacy = LEGACY[phase]
        print(f"\n== {phase}: batch 1, {'seq 2048' if seq > 1 else 'kv 2048'}, fp16, "
              f"{device.name} ==")
        print(f"{'':8} {'FLOPs+vec':>11} {'matmul FLOPs':>13} {'bytes GB':>9} {'time ms':>8}")
        if "ops" in legacy:
            print(f"{'legacy':8} {legacy['ops']:11.4g} {'':>13} {legacy['bytes'] / 1e9:9.2f} "
                  f"{legacy['time_s'] * 1e3:8.2f}")
        else:
            print(f"{'legacy':8} {'':>11} {'':>13} {'':>9} {legacy['time_s'] * 1e3:8.2f}")
        results[phase] = {"legacy": legacy}
        for kernels, logits in (("eager", "all"), ("eager", "last"), ("fused", "last")):
            est = estimate_kernels(t, device, "fp16", kernels, logits)  # type: ignore[arg-type]
            tot = est.total
            label = f"{kernels}/{logits}"
            print(f"{label:8} {tot.flops + tot.vector_flops:11.4g} {tot.flops:13.4g} "
                  f"{tot.bytes / 1e9:9.2f} {tot.estimate_s * 1e3:8.2f}")
            results[phase][label] = est.to_json()
        for kernels in ("eager", "fused"):
            cats = by_category(t, kernels)
            results[phase][f"{kernels}_by_category"] = cats
            print(f"  {kernels} by category: " + ", ".join(
                f"{c} {v['flops'] / 1e12:.3f} TF {v['bytes'] / 1e9:.2f} GB"
                for c, v in sorted(cats.items())))
        print(f"  weights {t.weight_bytes / 1e9:.2f} GB; traced peak activations "
              f"{t.peak_activation_bytes / 1e9:.3f} GB")
        for kernels in ("eager", "fused"):
            mem = TracedMemory(config, torch.float16, kernels).breakdown(1, seq, kv)
            results[phase][f"memory_{kernels}"] = mem.to_json()
            print(f"  memory {kernels}: weights {mem.weights_bytes / 1e9:.2f} GB, KV "
                  f"{mem.kv_cache_bytes / 1e9:.3f} GB, activations "
                  f"{mem.activation_bytes / 1e9:.3f} GB, total {mem.total / 1e9:.2f} GB")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
