"""Benchmark: the transformers-wide sweep (`lm_predictor.sweep`) over every installed model type.

Prints the summary (types, built, traced by method, exact, fully covered & exact, mean coverage
by formula source), failures grouped by reason, the most common uncovered aten ops and the wall
time. Not a test: the full sweep takes minutes.

    uv run python benchmarks/transformers_suite.py --workers 2 [--timeout 120] [--only bart,gpt2]
        [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from lm_predictor.sweep import SweepResult, TypeResult, run_sweep, suite_types


def _progress(result: TypeResult, done: int, total: int) -> None:
    status = (f"traced ({result.method})" if result.traced else f"FAILED {result.reason}")
    print(f"[{done:3d}/{total}] {result.model_type:28s} {result.seconds:6.1f}s {status}",
          file=sys.stderr, flush=True)


def report(result: SweepResult) -> None:
    s = result.summary
    print(f"types {s.types}, built {s.built}, traced {s.traced} {s.traced_by_method}, "
          f"exact {s.exact}, fully covered & exact {s.fully_covered_exact}")
    for source, cov in sorted(s.coverage_by_source.items()):
        print(f"  coverage {source:12s} flops {cov.get('flops', 0):6.1%}  "
              f"bytes {cov.get('bytes', 0):6.1%}")
    print("failures by reason:")
    for reason, types in s.failures_by_reason.items():
        print(f"  {len(types):3d}  {reason}\n       {', '.join(types)}")
    print("uncovered aten ops (types using them):")
    print("  " + ", ".join(f"{op} {n}" for op, n in list(s.uncovered_ops.items())[:30]))
    print(f"wall time {s.wall_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model type")
    parser.add_argument("--only", help="comma-separated model types")
    parser.add_argument("--json", help="write every TypeResult and the summary here")
    args = parser.parse_args()
    types = suite_types()
    if args.only:
        wanted = set(args.only.split(","))
        types = [t for t in types if t.model_type in wanted]
    start = time.perf_counter()
    result = run_sweep(types, workers=args.workers, timeout_s=args.timeout, progress=_progress)
    report(result)
    print(f"total {time.perf_counter() - start:.0f} s with {args.workers} workers")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": asdict(result.summary),
                       "results": [asdict(r) for r in result.results]}, f, indent=1)


if __name__ == "__main__":
    main()
