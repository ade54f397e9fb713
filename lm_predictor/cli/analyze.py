"""`lm-predictor analyze`: trace a model, reconcile against formulas, store and report the run.

Flags follow the concept notes' spellings too (`--model_id`, `--batch_size`, `--seq_len`, and a
no-op `--analyze`). Progress is shown on stderr while work runs, and where the run was stored
(run id and database) is said on stderr at the end. `--json` prints a machine-readable summary
(run_id, totals, coverage, parameters, MACs, per-class and per-call rows); `--csv` one row per
module call.

Example:
    $ lm-predictor analyze --model-id gpt2 --batch-size 2 --seq-len 128
"""
from __future__ import annotations

import argparse
import json
import sys

from lm_predictor.cli._args import (add_db_arg, add_formulas_arg, add_model_args, output_file,
                                    positive_float, positive_int, tolerance)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="trace, reconcile and store one run",
                       description="Trace one forward pass, measure every module call at the aten "
                                   "level, predict it from the formula database, reconcile and store.")
    add_model_args(p)
    p.add_argument("--counter", choices=("dispatch", "fvcore"), default="dispatch",
                   help="fvcore: also count matmul FLOPs with fvcore's FlopCountAnalysis and show "
                        "where it differs (needs --device cpu)")
    p.add_argument("--rtol", type=tolerance, default=0.0,
                   help="relative tolerance for 'within_tolerance' (default 0: exact)")
    add_db_arg(p)
    p.add_argument("--no-store", action="store_true", help="do not write the run to DuckDB")
    add_formulas_arg(p)
    p.add_argument("--no-cover", action="store_true",
                   help="do not transfer or derive formulas for classes without one (by default "
                        "they are filled from meta traces, verified exact, and stored in the "
                        "user formula database)")
    p.add_argument("--fill-gaps", action="store_true",
                   help="run the formula agent for every class without a formula (deepest "
                        "first; needs Claude credentials) and reconcile again")
    p.add_argument("--hardware", metavar="NAME",
                   help="add roofline time estimates per call on this device (lm-predictor "
                        "hardware list), stored in the estimates table")
    p.add_argument("--attention-backward", choices=("flash", "math"),
                   help="--phase train: which SDPA backward to count (default flash, what CPUs "
                        "and GPUs run; math: 2x forward instead of 2.5x)")
    p.add_argument("--checkpointing", action="store_true",
                   help="--phase train: activation checkpointing (the recomputed forward is "
                        "counted)")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--step-time", type=positive_float, metavar="SECONDS",
                        help="--phase train with --hardware: your measured step time, for MFU "
                             "(PaLM definition) and utilisation from the measured FLOPs")
    timing.add_argument("--tokens-per-s", type=positive_float, metavar="N",
                        help="like --step-time, as a token rate")
    p.add_argument("--kernels", choices=("eager", "fused"),
                   help="kernel model of the time estimate: eager (the unfused ops the trace "
                        "measures) or fused (FlashAttention, fused norms/activations/rotary, KV "
                        "appended in place); default fused on accelerators, eager on CPUs")
    p.add_argument("--logits", choices=("last", "all"),
                   help="logits of the last position only (generation prefill; fused default) "
                        "or of every position (eager default)")
    p.add_argument("--plot", metavar="FILE.png", type=output_file,
                   help="with --hardware: write a roofline chart and a time breakdown by class "
                        "(two panels, one PNG)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="print a JSON summary instead of the report: totals, parameters, MACs, "
                          "per-class rows (by_class) and per-call rows (by_module), inclusive "
                          "and self figures")
    out.add_argument("--csv", action="store_true",
                     help="print one CSV row per module call (inclusive and self figures)")
    p.add_argument("--top", type=positive_int, default=10, help="worst mismatches to show")
    p.add_argument("--analyze", action="store_true", help=argparse.SUPPRESS)  # concept-notes alias
    p.set_defaults(handler=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    from lm_predictor.errors import UsageError

    if args.phase == "decode" and args.kv_len < 1:
        raise UsageError("--phase decode needs --kv-len N (tokens already in the KV cache), "
                         "e.g. --kv-len 1024")
    if args.phase == "decode" and args.seq_len not in (None, 1):
        raise UsageError("--seq-len is not used with --phase decode (one new token per step); "
                         "drop it, or use --phase prefill with --kv-len for a chunked prefill")
    args.seq_len = args.seq_len or 128
    train_only = [f for f, v in (("--attention-backward", args.attention_backward),
                                 ("--checkpointing", args.checkpointing),
                                 ("--step-time", args.step_time),
                                 ("--tokens-per-s", args.tokens_per_s)) if v]
    if train_only and args.phase != "train":
        raise UsageError(f"{', '.join(train_only)} only apply to --phase train")
    if (args.step_time or args.tokens_per_s) and not args.hardware:
        raise UsageError("MFU needs the device's peak: add --hardware NAME")
    if (args.kernels or args.logits) and not args.hardware:
        raise UsageError("--kernels and --logits shape the time estimate: add --hardware NAME")
    if args.plot and not args.hardware:
        raise UsageError("--plot needs --hardware NAME (the device whose roofline to draw), "
                         "e.g. --hardware H100-SXM")
    from lm_predictor.models.presets import check_model_id

    check_model_id(args.model_id)  # a missing path answers before torch is imported
    from rich.console import Console

    from lm_predictor.api import analyze
    from lm_predictor.report import render, render_cross_check, summary

    err = Console(stderr=True)
    with err.status("starting") as status:
        result = analyze(args.model_id, batch_size=args.batch_size, seq_len=args.seq_len,
                         phase=args.phase, kv_len=args.kv_len, dtype=args.dtype,
                         device=args.device, rtol=args.rtol,
                         db=None if args.no_store else (args.db or ""),
                         counter=args.counter, formulas=args.formulas,
                         fill_gaps=args.fill_gaps, hardware=args.hardware,
                         kernels=args.kernels, logits=args.logits,
                         attention_backward=args.attention_backward,
                         checkpointing=args.checkpointing, cover=not args.no_cover,
                         progress=status.update)
    if result.note:
        err.print(result.note)
    training = None
    if args.phase == "train":
        from hardware.catalog import load_catalog
        from lm_predictor.training import step_summary

        device = load_catalog().get(args.hardware) if args.hardware else None
        training = step_summary(result, step_time_s=args.step_time,
                                tokens_per_s=args.tokens_per_s, device=device)
    if args.json:
        out = summary(result.run_id, result.meta, result.trace, result.recon,
                      parameters=result.parameters, db=result.db)
        out["trace_method"] = result.trace_method
        if result.coverage is not None:
            out["coverage_by_source"] = result.coverage.as_dict()
        if training is not None:
            out["training"] = training
            out["totals"]["forward"] = training["totals"]["forward"]
            out["totals"]["backward"] = training["totals"]["backward"]
            out["totals"]["recompute"] = training["totals"]["recompute"]
            out["totals"]["measured_forward_only"] = out["totals"]["measured"]
            out["totals"]["measured"] = training["totals"]["measured"]
            out["unattributed"] = training["totals"]["unattributed"]
        if result.cross_check:
            out["fvcore"] = [{"module_path": r.module_path, "dispatch_flops": r.dispatch_flops,
                              "fvcore_flops": r.fvcore_flops} for r in result.cross_check]
        if result.estimates is not None:
            from hardware.report import kernel_summary

            out["estimates"] = kernel_summary(result.kernel_estimates)
        print(json.dumps(out, indent=2))
    elif args.csv:
        import csv

        from lm_predictor.report import csv_rows

        header, rows = csv_rows(result.trace, result.recon)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    else:
        console = Console()
        if result.coverage is not None:
            for line in result.coverage.lines():
                err.print(line)
        render(result.meta, result.trace, result.recon, console, None, args.top,
               parameters=result.parameters)
        if training is not None:
            from lm_predictor.training import render_step

            render_step(training, console)
        if result.cross_check:
            render_cross_check(result.cross_check, console, args.top)
        if result.estimates is not None:
            from hardware.report import render_time

            render_time(result.estimates, console, run_device=result.meta.device,
                        kernels=result.kernel_estimates.kernels)
    if result.run_id:
        err.print(f"stored run {result.run_id} in {result.db}", highlight=False, soft_wrap=True)
    else:
        err.print("not stored (--no-store)", highlight=False)
    if args.plot and result.estimates is not None:
        from hardware.plot import plot_estimates
        from hardware.report import comparable

        written = plot_estimates(result.estimates, args.plot,
                                 show_measured=comparable(result.estimates.device,
                                                          result.meta.device))
        err.print(f"wrote {written}")
    return 0
