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
from typing import Any

from formula_db.units import METRICS
from lm_predictor.cli._args import add_db_arg, add_dtype_arg, add_formulas_arg, int_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="trace-free prediction over a sweep of shapes",
                       description="Evaluate the model's nested formulas from its config and the "
                                   "shape alone: nothing is built or traced.")
    p.add_argument("--model-id", "--model_id", dest="model_id", required=True)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int_list, default=[1])
    p.add_argument("--seq-len", "--seq_len", dest="seq_len", type=int_list, default=None,
                   help="prompt lengths in prefill (default 128); refused with --phase decode")
    p.add_argument("--phase", choices=("prefill", "decode", "train"), default="prefill",
                   help="train: one training step (forward with labels, loss, backward) per "
                        "point; needs backward formulas (zoo, or analyze --phase train)")
    p.add_argument("--attention-backward", "--attention_backward", dest="attention_backward",
                   choices=("flash", "math"), default=None,
                   help="with --phase train: the SDPA backward counted (default flash)")
    p.add_argument("--kv-len", "--kv_len", dest="kv_len", type=int_list, default=[0])
    add_dtype_arg(p)
    add_formulas_arg(p)
    p.add_argument("--kernels", choices=("eager", "fused"),
                   help="with --hardware: kernel model of the time estimate (default fused on "
                        "accelerators, traced on meta per point; eager on CPUs, from formulas)")
    p.add_argument("--logits", choices=("last", "all"),
                   help="with --kernels fused: logits of the last position only (default) or all")
    p.add_argument("--hardware", metavar="NAME",
                   help="add roofline time per point and per token on a catalog device (totals "
                        "as one leaf: use analyze --hardware for per-call estimates)")
    add_db_arg(p)
    p.add_argument("--no-store", action="store_true", help="do not store the sweep")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--csv", action="store_true")
    p.set_defaults(handler=cmd_predict)

    f = sub.add_parser("formula", help="closed-form cost of a model in batch, seq_len, kv_len",
                       description="Expand the model's nested formulas into simplified closed "
                                   "forms (sympy) in the free shape parameters.")
    f.add_argument("--model-id", "--model_id", dest="model_id", required=True)
    f.add_argument("--metric", choices=(*METRICS, "all"), default="all")
    add_dtype_arg(f)
    add_formulas_arg(f)
    f.set_defaults(handler=cmd_formula)


def cmd_predict(args: argparse.Namespace) -> int:
    import itertools

    from lm_predictor.errors import UsageError

    if args.phase == "decode":
        seqs = [1]
        if args.seq_len not in (None, [1]):
            raise UsageError("--seq-len is not used with --phase decode (one new token per "
                             "step); drop it, or sweep --kv-len instead")
        if args.kv_len == [0]:
            raise UsageError("--phase decode needs --kv-len N[,M...] (tokens already in the KV "
                             "cache), e.g. --kv-len 1024")
    else:
        seqs = args.seq_len or [128]
    if args.attention_backward and args.phase != "train":
        raise UsageError("--attention-backward is for --phase train; drop it")
    if args.phase == "train" and args.hardware:
        raise UsageError("--hardware times a forward pass here; for a training step use "
                         "'lm-predictor analyze --phase train --hardware NAME'")
    if args.phase == "train" and args.kv_len != [0]:
        raise UsageError("a training step has no KV cache: drop --kv-len with --phase train")
    if (args.kernels or args.logits) and not args.hardware:
        raise UsageError("--kernels and --logits shape the time estimate: add --hardware NAME")
    if 0 in args.batch_size or (args.phase == "prefill" and 0 in seqs):
        raise UsageError("batch sizes and sequence lengths must be >= 1")
    from lm_predictor.models.presets import check_model_id
    from lm_predictor.predict.points import predict_points

    check_model_id(args.model_id)
    points = list(itertools.product(args.batch_size, seqs, args.kv_len))
    from rich.console import Console

    err = Console(stderr=True)
    status = err.status("predicting")
    started = False

    def say(message: str) -> None:  # a spinner only when the work takes a while (cache miss)
        nonlocal started
        if not started:
            status.start()
            started = True
        status.update(message)

    try:
        prediction = predict_points(args.model_id, points, phase=args.phase, dtype=args.dtype,
                                    formulas=args.formulas, progress=say,
                                    attention_backward=args.attention_backward or "flash")
    finally:
        if started:
            status.stop()
            started = False
    rows = prediction.rows
    args.dtype = prediction.dtype  # the config's dtype when --dtype was not given
    if args.hardware:
        from hardware.catalog import load_catalog
        from hardware.roofline import estimate_totals

        from lm_predictor.predict.footprint import fit_check, footprint

        device = load_catalog().get(args.hardware)
        say("sizing weights and KV cache (a meta build, once per config and dtype)")
        fp, unsized = None, ""
        try:
            fp = footprint(args.model_id, args.dtype)
        except Exception as exc:  # noqa: BLE001 - a model that cannot be built on meta still gets times
            unsized = f"memory fit not checked ({' '.join(str(exc).split())[:200]})"
        finally:
            if started:
                status.stop()
        from hardware.kernels import kernel_default

        kernels = args.kernels or kernel_default(device.kind)
        for row in rows:
            if kernels == "fused":  # serving-engine kernels: costed from a meta trace of the point
                say(f"fused kernels: tracing batch {row['batch_size']}, seq {row['seq_len']}, "
                    f"kv {row['kv_len']} on meta")
                est = _fused_estimate(args, row, device)
            else:  # eager: the traced op sequence, which the formulas predict without a trace
                est = estimate_totals(row["flops"], row["vector_flops"], row["bytes_read"],
                                      row["bytes_written"], device, args.dtype)
            row["kernels"] = kernels
            tokens = row["batch_size"] * row["seq_len"]
            fit = {"fits": None, "memory": unsized}
            if fp is not None:
                fit = fit_check(fp, device.capacity_bytes, batch=row["batch_size"],
                                seq_len=row["seq_len"], kv_len=row["kv_len"],
                                activation_bytes=row["activation_bytes"]).to_json()
            row.update(hardware=device.name, time_s=est.estimate_s, bound=est.bound,
                       ms_per_step=1e3 * est.estimate_s,
                       ms_per_token=1e3 * est.estimate_s / tokens,
                       tokens_per_s=tokens / est.estimate_s if est.estimate_s else None, **fit)
        if unsized:
            print(unsized, file=sys.stderr)
    run_id = None
    if not args.no_store:
        from lm_predictor.predict.cache import installed_version
        from lm_predictor.results import RunMeta
        from lm_predictor.store import Store
        from lm_predictor.version import __version__

        meta = RunMeta(model_id=args.model_id, config_hash=prediction.config_hash,
                       phase=args.phase, batch_size=points[0][0], seq_len=points[0][1],
                       kv_len=points[0][2], dtype=args.dtype, device="none", counter="formula",
                       tool_version=__version__,
                       torch_version=installed_version("torch"),
                       transformers_version=installed_version("transformers"))
        store = Store(args.db)
        run_id = store.write_predicted_run(meta, rows)
    if args.json:
        out: dict[str, Any] = {"run_id": run_id, "model_id": args.model_id, "points": rows}
        if args.hardware:
            out["notes"] = HARDWARE_NOTES
        print(json.dumps(out, default=str, indent=2))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    else:
        print_points(args, rows, Console())
    if prediction.note:
        print(prediction.note, file=sys.stderr)
    if run_id:
        print(f"stored predicted run {run_id} in {store.path}", file=sys.stderr)
    else:
        print("not stored (--no-store)", file=sys.stderr)
    return 0


def _fused_estimate(args: argparse.Namespace, row: dict, device: Any) -> Any:
    """The roofline estimate of one point under the fused kernel model: the point is traced on
    meta (no weights) and costed by `hardware.kernels` (FlashAttention, fused norms and
    activations, KV appended in place, last-position logits in prefill)."""
    from hardware.kernels import estimate_kernels
    from lm_predictor.run import RunSpec, trace_run

    spec = RunSpec(args.model_id, batch_size=row["batch_size"], seq_len=row["seq_len"],
                   phase=args.phase, kv_len=row["kv_len"], dtype=args.dtype)
    trace = trace_run(spec, None).trace
    return estimate_kernels(trace, device, args.dtype, "fused", args.logits).trace_estimate.total


HARDWARE_NOTES = {
    "kernels": "eager: the unfused op sequence transformers runs (what the formulas predict, no "
               "trace); fused (default on accelerators): FlashAttention, fused norms, "
               "activations and rotary, KV cache appended in place, last-position logits in "
               "prefill, costed from a meta trace of each point",
    "ms_per_step": "one forward pass of the whole batch (roofline estimate on the device)",
    "ms_per_token": "throughput cost: ms_per_step / (batch x seq_len) tokens of the batch, not "
                    "the latency of one request",
    "tokens_per_s": "batch x seq_len / the step time (throughput)",
    "fits": "weights + KV cache (kv_len + seq_len tokens x batch) + activations outside the "
            "cache <= the device's memory; weights and cache from a meta build, activations "
            "from the formulas (no trace); no allocator or runtime overheads",
}


def print_points(args: argparse.Namespace, rows: list[dict], console: Any) -> None:
    """The sweep as a table that reads at 80 columns: units in the headers, SI numbers
    (3 significant digits); with --hardware, the memory a point needs, time per step, tokens per
    second and the bound, or 'no fit' and no time where the memory exceeds the device's (each
    such point explained below the table); bytes read and written merged into 'moved' and the
    activations left to the memory column below 120 columns."""
    from rich import box
    from rich.table import Table

    from lm_predictor.fmt import LEGEND, si

    narrow = bool(args.hardware) and console.width < 120
    table = Table(title=f"{args.model_id} · {args.phase} · {args.dtype} · predicted from formulas"
                        + (f" · {rows[0]['hardware']}, {rows[0]['kernels']} kernels"
                           if args.hardware else ""),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    columns = ["batch", "seq", "kv", "FLOP", "vector\nFLOP"]
    columns += ["moved\nB"] if narrow else ["read\nB", "written\nB"]
    columns += [] if narrow else ["activ.\nB"]
    if args.hardware:
        columns += ["memory\nB", "ms per\nstep", "tokens\nper s", "bound"]
    for col in columns:
        table.add_column(col, justify="left" if col == "bound" else "right", no_wrap=True)
    misfits: list[str] = []
    for r in rows:
        cells = [str(r["batch_size"]), str(r["seq_len"]), str(r["kv_len"]), si(r["flops"]),
                 si(r["vector_flops"])]
        if narrow:
            moved = (None if r["bytes_read"] is None or r["bytes_written"] is None
                     else r["bytes_read"] + r["bytes_written"])
            cells.append(si(moved))
        else:
            cells += [si(r["bytes_read"]), si(r["bytes_written"]), si(r["activation_bytes"])]
        if args.hardware and r["fits"] is not False:
            cells += [si(r.get("memory_bytes")), si(r["time_s"] * 1e3),
                      si(r.get("tokens_per_s")), r["bound"]]
        elif args.hardware:
            cells += [f"[red]{si(r['memory_bytes'])}[/red]", "—", "—", "[red]no fit[/red]"]
            misfits.append(f"batch {r['batch_size']} · seq {r['seq_len']} · kv {r['kv_len']}: "
                           f"does not fit {r['hardware']}: {r['memory']}")
        table.add_row(*cells)
    console.print(table)
    for line in misfits:
        console.print(f"[red]{line}[/red]", highlight=False)
    notes = [LEGEND]
    if args.phase == "train":
        notes.insert(0, "train: one step, forward + backward (+ the loss's seed gradient); "
                        "activ. B: forward activations, what autograd saves included; "
                        "forward_* and backward_* in --json")
    if args.hardware:
        notes.insert(0, "memory B: weights + KV cache + activations outside the cache (weights "
                        "and cache geometry from a meta build, activations from the formulas; "
                        "no trace, no runtime overheads); no fit: no time is given")
        notes.insert(0, "ms per step: one forward pass of the whole batch (roofline estimate on "
                        "the device); tokens per s: batch × seq tokens / that time (throughput, "
                        "not latency per request; ms_per_token in --json = 1000 / tokens per s)")
    for note in notes:
        console.print(f"[dim]{note}[/dim]", highlight=False)


def cmd_formula(args: argparse.Namespace) -> int:
    from formula_db.registry import Registry
    from lm_predictor import settings
    from lm_predictor.models.presets import check_model_id
    from lm_predictor.models.resolve import resolve_config
    from lm_predictor.predict.predictor import Predictor

    check_model_id(args.model_id)
    resolved = resolve_config(args.model_id, hf_token=settings.hf_token())
    from formula_db.units import config_dtype_name

    dtype = args.dtype or config_dtype_name(resolved.config)
    predictor = Predictor.for_config(resolved.config, args.model_id,
                                     Registry.default(args.formulas), dtype)
    print(f"{resolved.model_id}, {dtype}: closed forms in batch, seq_len, kv_len",
          file=sys.stderr)
    metrics = METRICS if args.metric == "all" else (args.metric,)
    for m in metrics:
        print(f"{m} = {predictor.closed_form(m)}")
    return 0
