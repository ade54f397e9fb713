"""`lm-predictor analyze`: trace a model, reconcile against formulas, store and report the run.

Flags follow the concept notes' spellings too (`--model_id`, `--batch_size`, `--seq_len`, and a
no-op `--analyze`). Progress is shown on stderr while work runs; `--json` prints a
machine-readable summary with run_id, totals (measured and predicted) and coverage.

Example:
    $ lm-predictor analyze --model-id gpt2 --batch-size 2 --seq-len 128
"""
from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model and shape flags shared by analyze-like commands."""
    p.add_argument("--model-id", "--model_id", dest="model_id", required=True,
                   help="preset name or hub id (gpt2, meta-llama/Llama-3.1-8B), local directory, "
                        "or config.json path")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=1)
    p.add_argument("--seq-len", "--seq_len", dest="seq_len", type=positive_int, default=128)
    p.add_argument("--phase", choices=("prefill", "decode"), default="prefill",
                   help="decode traces one new token against a KV cache of --kv-len tokens")
    p.add_argument("--kv-len", "--kv_len", dest="kv_len", type=non_negative_int, default=0)
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    p.add_argument("--device", default="meta",
                   help="meta (default: no weights, no memory), cpu or cuda")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="trace, reconcile and store one run",
                       description="Trace one forward pass, measure every module call at the aten "
                                   "level, predict it from the formula database, reconcile and store.")
    add_model_args(p)
    p.add_argument("--counter", choices=("dispatch", "fvcore"), default="dispatch",
                   help="fvcore: also count matmul FLOPs with fvcore's FlopCountAnalysis and show "
                        "where it differs (needs --device cpu)")
    p.add_argument("--rtol", type=float, default=0.0,
                   help="relative tolerance for 'within_tolerance' (default 0: exact)")
    p.add_argument("--db", help="DuckDB file (default $LM_PREDICTOR_DB or ./lm_predictor.duckdb)")
    p.add_argument("--no-store", action="store_true", help="do not write the run to DuckDB")
    p.add_argument("--formulas", metavar="PATH", help="user formula database")
    p.add_argument("--fill-gaps", action="store_true",
                   help="run the formula agent for every class without a formula (deepest "
                        "first; needs Claude credentials) and reconcile again")
    p.add_argument("--hardware", metavar="NAME",
                   help="add roofline time estimates per call on this device (lm-predictor "
                        "hardware list), stored in the estimates table")
    p.add_argument("--plot", metavar="FILE.png",
                   help="with --hardware: write a roofline chart and a time breakdown by class "
                        "(two panels, one PNG)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the report")
    p.add_argument("--top", type=positive_int, default=10, help="worst mismatches to show")
    p.add_argument("--analyze", action="store_true", help=argparse.SUPPRESS)  # concept-notes alias
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lm_predictor.api import analyze
    from lm_predictor.report import render, render_cross_check, summary

    if args.phase == "decode" and args.kv_len < 1:
        print("lm-predictor: error: --phase decode needs --kv-len N (tokens already in the KV "
              "cache), e.g. --kv-len 1024", file=sys.stderr)
        return 2
    if args.rtol < 0:
        print("lm-predictor: error: --rtol must be >= 0", file=sys.stderr)
        return 2
    if args.plot and not args.hardware:
        print("lm-predictor: error: --plot needs --hardware NAME (the device whose roofline to "
              "draw), e.g. --hardware H100-SXM", file=sys.stderr)
        return 2
    err = Console(stderr=True)
    with err.status("starting") as status:
        result = analyze(args.model_id, batch_size=args.batch_size, seq_len=args.seq_len,
                         phase=args.phase, kv_len=args.kv_len, dtype=args.dtype,
                         device=args.device, rtol=args.rtol,
                         db=None if args.no_store else (args.db or ""),
                         counter=args.counter, formulas=args.formulas,
                         fill_gaps=args.fill_gaps, hardware=args.hardware,
                         progress=status.update)
    if result.note:
        err.print(result.note)
    if args.json:
        out = summary(result.run_id, result.meta, result.trace, result.recon)
        if result.cross_check:
            out["fvcore"] = [{"module_path": r.module_path, "dispatch_flops": r.dispatch_flops,
                              "fvcore_flops": r.fvcore_flops} for r in result.cross_check]
        if result.estimates is not None:
            from hardware.report import time_summary

            out["estimates"] = time_summary(result.estimates)
        print(json.dumps(out, indent=2))
    else:
        console = Console()
        render(result.meta, result.trace, result.recon, console, result.run_id, args.top)
        if result.cross_check:
            render_cross_check(result.cross_check, console, args.top)
        if result.estimates is not None:
            from hardware.report import render_time

            render_time(result.estimates, console, run_device=result.meta.device)
    if args.plot and result.estimates is not None:
        from hardware.plot import plot_estimates
        from hardware.report import comparable

        written = plot_estimates(result.estimates, args.plot,
                                 show_measured=comparable(result.estimates.device,
                                                          result.meta.device))
        err.print(f"wrote {written}")
    return 0
