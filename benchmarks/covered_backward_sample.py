"""Backward for covered entries over a sample of non-zoo causal-LM types (meta, tiny, float32).

Usage: uv run python benchmarks/covered_backward_sample.py [model_type ...]
Per type: seconds for forward coverage (`cover_model(..., backward=False)`) and with backward
(the same inference samples), the backward outcomes (kept / retransferred / derived / exact /
forward only), and a training step at (2, 9) with the flash backward reconciled call by call
with the covered entries: calls whose forward and backward are both exact. Nothing is stored.
"""
from __future__ import annotations

import sys
import time
import warnings

import torch
from transformers import CONFIG_MAPPING

from formula_db.registry import Registry
from lm_predictor.coverage import cover_model
from lm_predictor.derive import sample_traces, with_entries
from lm_predictor.models import build_model, tiny_config
from lm_predictor.reconcile import reconcile
from tracing.train import trace_training_step

DEFAULT_TYPES = ["olmo", "olmo2", "olmoe", "granite", "granitemoe", "stablelm", "starcoder2",
                 "cohere", "gemma", "glm", "helium", "nemotron", "phi", "smollm3", "arcee",
                 "qwen3_moe", "seed_oss", "exaone4", "ernie4_5"]


def exact_calls(config: object, registry: Registry) -> tuple[int, int]:
    """(calls exact forward and backward, calls) of a (2, 9) flash training step."""
    model = build_model(config, device="meta", dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = trace_training_step(model, {"input_ids": torch.zeros((2, 9), dtype=torch.long,
                                                                 device="meta")})
    recon = reconcile(t, registry)
    good = sum(1 for r in recon.calls if r.status == "exact" and r.backward is not None
               and r.backward.status == "exact")
    return good, len(recon.calls)


def main(types: list[str]) -> None:
    base = Registry.default(include_user=False)
    for model_type in types:
        try:
            config = tiny_config(CONFIG_MAPPING[model_type]())
            samples = sample_traces(config)
            t0 = time.perf_counter()
            cover_model(config, base, store=False, samples=samples, backward=False)
            forward_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = cover_model(config, base, store=False, samples=samples)
            both_s = time.perf_counter() - t0
            good, calls = exact_calls(config, with_entries(base, report.entries))
        except Exception as exc:  # noqa: BLE001 - a sample reports and goes on
            print(f"{model_type:16s} FAILED {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        bw = report.backward
        counts = {s: bw.count(s) for s in ("kept", "retransferred", "derived", "exact",
                                           "forward_only")} if bw else {}
        only = [o.class_name.rsplit(".", 1)[-1] + ": " + o.reason[:80]
                for o in (bw.outcomes if bw else []) if o.status == "forward_only"]
        print(f"{model_type:16s} forward {forward_s:5.1f}s, with backward {both_s:5.1f}s | "
              f"{counts} | train step (2, 9) exact calls {good}/{calls} | {'; '.join(only)[:200]}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT_TYPES)
