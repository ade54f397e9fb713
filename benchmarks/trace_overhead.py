"""Trace overhead: LM-Predictor's trace + reconcile versus a bare forward and FlopCounterMode.

For a Llama-3.1-70B-sized config on `meta` (batch 1, seq 4096 by default) it times, in one
process, the median of several runs of:
  (a) a bare forward pass,
  (b) a forward under torch.utils.flop_counter.FlopCounterMode,
  (c) lm_predictor's trace + reconcile, without storage, and (d) with the run stored in DuckDB,
and reports the ratios (c)/(b), (d)/(b) and the process's peak RSS. Target: (c) <= 1.5 x (b),
peak RSS under 2 GB.

Run:  uv run python benchmarks/trace_overhead.py [--model-id ...] [--seq-len 4096] [--repeats 5]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from formula_db.registry import Registry
from lm_predictor.api import formulas_used, run_trace
from lm_predictor.models.inputs import build_inputs
from lm_predictor.models import build_model, resolve_config
from lm_predictor.reconcile import reconcile
from lm_predictor.results import RunMeta
from lm_predictor.store import Store
from timing import median_time  # benchmarks/timing.py (script directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default="meta-llama/Llama-3.1-70B")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    resolved = resolve_config(args.model_id, allow_hub=False)
    model = build_model(resolved.config, device="meta", dtype=torch.bfloat16)
    inputs = build_inputs(model, resolved.config, batch_size=args.batch_size, seq_len=args.seq_len,
                          device="meta")
    registry = Registry.default(include_user=False)

    def bare() -> None:
        with torch.inference_mode():
            model(**inputs)

    def flop_counter() -> None:
        with torch.inference_mode(), FlopCounterMode(display=False):
            model(**inputs)

    def ours() -> None:
        reconcile(run_trace(model, inputs), registry)

    tmp = Path(tempfile.mkdtemp())

    def ours_stored() -> None:
        t = run_trace(model, inputs)
        recon = reconcile(t, registry)
        meta = RunMeta(args.model_id, resolved.config_hash, "prefill", args.batch_size,
                       args.seq_len, 0, "bfloat16", "meta")
        Store(tmp / "bench.duckdb").write_run(meta, t, recon, formulas_used(t, registry))

    a = median_time(bare, args.repeats, warmup=True)
    b = median_time(flop_counter, args.repeats, warmup=True)
    c = median_time(ours, args.repeats, warmup=True)
    d = median_time(ours_stored, args.repeats, warmup=True)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"model {args.model_id} on meta, batch {args.batch_size}, seq {args.seq_len}, "
          f"median of {args.repeats} (torch {torch.__version__})")
    print(f"(a) bare forward                  {a:8.3f} s")
    print(f"(b) FlopCounterMode               {b:8.3f} s")
    print(f"(c) trace + reconcile             {c:8.3f} s   (c)/(b) = {c / b:.2f}  (target <= 1.5)")
    print(f"(d) trace + reconcile + DuckDB    {d:8.3f} s   (d)/(b) = {d / b:.2f}")
    print(f"peak RSS                          {rss_gb:8.3f} GiB (target < 2)")


if __name__ == "__main__":
    main()
