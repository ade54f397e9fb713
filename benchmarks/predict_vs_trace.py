"""Trace-free prediction versus tracing: one new shape, and a 10,000-point sweep.

For Llama-3.1-70B (bundled preset) it measures, in one process:
  (a) tracing one new shape on `meta` under torch.utils.flop_counter.FlopCounterMode,
  (b) predicting the same shape from the nested formulas with the config already bound:
      exact AST evaluation (`Predictor.point`), and (b') the compiled closed form
      (`Predictor.sweep` of one point, after the one-off sympy reduction, timed separately),
  (c) a sweep of 10,000 (batch, seq_len) points (`Predictor.sweep`: closed-form polynomial
      coefficients when the metric is a polynomial in the shape),
and checks that (b) equals the traced FLOPs. Targets: (a)/(b) >= 1,000; (c) under one second.

Run:  uv run python benchmarks/predict_vs_trace.py [--model-id ...] [--repeats 5]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from formula_db.registry import Registry
from lm_predictor.models.inputs import build_inputs
from lm_predictor.models import build_model, resolve_config
from lm_predictor.predict.predictor import Predictor
from timing import median_time  # benchmarks/timing.py (script directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default="meta-llama/Llama-3.1-70B")
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=1021)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = resolve_config(args.model_id, allow_hub=False).config
    model = build_model(config, device="meta")
    inputs = build_inputs(model, config, batch_size=args.batch_size, seq_len=args.seq_len,
                          device="meta", attention_mask=False)
    predictor = Predictor.for_config(config, args.model_id, Registry.default(include_user=False))
    counted: dict[str, int] = {}

    def trace_once() -> None:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(**inputs)
        counted["flops"] = counter.get_total_flops()

    def predict_once() -> None:
        predictor.point(args.batch_size, args.seq_len, 0)

    trace_once()
    predicted = predictor.point(args.batch_size, args.seq_len, 0)["flops"]
    a = median_time(trace_once, args.repeats)
    b = median_time(predict_once, max(args.repeats, 20))
    start = time.perf_counter()
    for metric in ("flops", "vector_flops", "bytes_read", "bytes_written", "activation_bytes"):
        predictor.compiled(metric)  # closed forms: sympy expansion + compilation, once per model
    prep = time.perf_counter() - start
    points = [(b_, s_, 0) for b_ in range(1, 101) for s_ in range(1, 101)]
    start = time.perf_counter()
    rows = predictor.sweep(points)
    c = time.perf_counter() - start
    one = median_time(lambda: predictor.sweep([(args.batch_size, args.seq_len + 2, 0)]),
                      max(args.repeats, 20))
    assert predictor.sweep([(args.batch_size, args.seq_len, 0)])[0]["flops"] == predicted
    print(f"{args.model_id}: batch {args.batch_size}, seq {args.seq_len} (torch {torch.__version__})")
    print(f"FLOPs traced {counted['flops']:,} vs predicted {predicted:,}: "
          f"{'equal' if counted['flops'] == predicted else 'DIFFERENT'}")
    print(f"(a) trace under FlopCounterMode on meta   {a * 1e3:10.2f} ms")
    print(f"(b) predict one shape, AST evaluation     {b * 1e3:10.3f} ms   (a)/(b) = {a / b:,.0f}x")
    print(f"(b') predict one shape, compiled form     {one * 1e3:10.3f} ms   (a)/(b') = {a / one:,.0f}x "
          f"(target >= 1,000; closed forms prepared once per model in {prep:.2f} s)")
    print(f"(c) sweep of {len(rows):,} points              {c:10.3f} s    (target < 1 s)")


if __name__ == "__main__":
    main()
