"""`lm-predictor predict` and `lm-predictor formula`: cost from formulas alone, no trace.

`predict` evaluates the model's nested formulas for every combination of the given batch sizes,
sequence lengths and cache lengths (comma-separated lists), prints a table (or `--json`/`--csv`)
and stores the sweep as a predicted-only run. `formula` prints each metric as a simplified closed
form in batch, seq_len and kv_len (sympy, built from the formula AST).

Example:
    $ lm-predictor predict --model-id meta-llama/Llama-3.1-8B --batch-size 1,8 --seq-len 128,2048
    $ lm-predictor formula --model-id gpt2 --metric flops
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys

from rich.console import Console
from rich.table import Table



def int_list(text: str) -> list[int]:
    """'1,8,64' -> [1, 8, 64] (each >= 0)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="trace-free prediction over a sweep of shapes",
                       description="Evaluate the model's nested formulas from its config and the "
                                   "shape alone: nothing is built or traced.")
    p.add_argument("--model-id", "--model_id", dest="model_id", required=True)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int_list, default=[1])
    p.add_argument("--seq-len", "--seq_len", dest="seq_len", type=int_list, default=[128])
    p.add_argument("--phase", choices=("prefill", "decode"), default="prefill")
    p.add_argument("--kv-len", "--kv_len", dest="kv_len", type=int_list, default=[0])
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--formulas", metavar="PATH", help="user formula database")
    p.add_argument("--hardware", metavar="NAME",
                   help="add roofline time per point and per token on a catalog device (totals "
                        "as one leaf: use analyze --hardware for per-call estimates)")
    p.add_argument("--db", help="DuckDB file for the predicted-only run")
    p.add_argument("--no-store", action="store_true", help="do not store the sweep")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--csv", action="store_true")
    p.set_defaults(handler=run_predict)

    f = sub.add_parser("formula", help="closed-form cost of a model in batch, seq_len, kv_len",
                       description="Expand the model's nested formulas into simplified closed "
                                   "forms (sympy) in the free shape parameters.")
    f.add_argument("--model-id", "--model_id", dest="model_id", required=True)
    f.add_argument("--metric", choices=("flops", "vector_flops", "bytes_read", "bytes_written",
                                        "activation_bytes", "all"), default="all")
    f.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    f.add_argument("--formulas", metavar="PATH", help="user formula database")
    f.set_defaults(handler=run_formula)


def run_predict(args: argparse.Namespace) -> int:
    import os

    import torch
    import transformers

    from formula_db.registry import Registry
    from lm_predictor.models import config_hash, resolve_config
    from lm_predictor.predict import Predictor
    from lm_predictor.results import METRICS, RunMeta

    if args.phase == "decode":
        seqs = [1]
        if args.kv_len == [0]:
            print("lm-predictor: error: --phase decode needs --kv-len N[,M...]", file=sys.stderr)
            return 2
    else:
        seqs = args.seq_len
    if 0 in args.batch_size or (args.phase == "prefill" and 0 in seqs):
        print("lm-predictor: error: batch sizes and sequence lengths must be >= 1", file=sys.stderr)
        return 2
    resolved = resolve_config(args.model_id, hf_token=os.environ.get("HF_TOKEN") or None)
    predictor = Predictor.for_config(resolved.config, args.model_id,
                                     Registry.default(args.formulas), args.dtype)
    points = list(itertools.product(args.batch_size, seqs, args.kv_len))
    values = predictor.sweep(points)
    rows = [{"phase": args.phase, "batch_size": b, "seq_len": s, "kv_len": k,
             **{m: v[m] for m in METRICS}} for (b, s, k), v in zip(points, values)]
    if args.hardware:
        from hardware.catalog import load_catalog
        from hardware.roofline import estimate_totals

        device = load_catalog().get(args.hardware)
        dtype = getattr(torch, args.dtype)
        for row in rows:
            est = estimate_totals(row["flops"], row["vector_flops"], row["bytes_read"],
                                  row["bytes_written"], device, dtype)
            tokens = row["batch_size"] * row["seq_len"]
            row.update(hardware=device.name, time_s=est.estimate_s, bound=est.bound,
                       ms_per_token=1e3 * est.estimate_s / tokens)
    run_id = None
    if not args.no_store:
        from lm_predictor.store import Store, db_path

        meta = RunMeta(model_id=args.model_id, config_hash=config_hash(resolved.config),
                       phase=args.phase, batch_size=points[0][0], seq_len=points[0][1],
                       kv_len=points[0][2], dtype=args.dtype, device="none", counter="formula",
                       torch_version=torch.__version__,
                       transformers_version=transformers.__version__)
        run_id = Store(db_path(args.db)).write_predicted_run(meta, rows)
    if args.json:
        print(json.dumps({"run_id": run_id, "model_id": args.model_id, "points": rows},
                         default=str, indent=2))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    else:
        from lm_predictor.report import human

        table = Table(title=f"{args.model_id} · {args.phase} · predicted from formulas"
                      + (f" · run {run_id}" if run_id else ""))
        timed = ("time", "ms/token", "bound") if args.hardware else ()
        for col in ("batch", "seq", "kv", *METRICS, *timed):
            table.add_column(col, justify="right")
        for r in rows:
            extra = ((f"{r['time_s'] * 1e3:.3g} ms", f"{r['ms_per_token']:.3g}", r["bound"])
                     if args.hardware else ())
            table.add_row(str(r["batch_size"]), str(r["seq_len"]), str(r["kv_len"]),
                          *[human(r[m]) for m in METRICS], *extra)
        Console().print(table)
        if resolved.note:
            Console(stderr=True).print(resolved.note)
    return 0


def run_formula(args: argparse.Namespace) -> int:
    import os

    from formula_db.registry import Registry
    from lm_predictor.models import resolve_config
    from lm_predictor.predict import Predictor
    from lm_predictor.results import METRICS

    resolved = resolve_config(args.model_id, hf_token=os.environ.get("HF_TOKEN") or None)
    predictor = Predictor.for_config(resolved.config, args.model_id,
                                     Registry.default(args.formulas), args.dtype)
    metrics = METRICS if args.metric == "all" else (args.metric,)
    for m in metrics:
        print(f"{m} = {predictor.closed_form(m)}")
    return 0
