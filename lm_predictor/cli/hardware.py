"""`lm-predictor hardware ...`: the device catalog, calibration, efficiency fits, memory fit.

Subcommands:
- `list` / `show NAME`: the catalog (builtin `hardware/devices.json` + user devices) with
  sources.
- `calibrate [--device cpu|cuda] [--name NAME] [--quick]`: microbenchmarks of the local device,
  saved as a user device (`$LM_PREDICTOR_DEVICES` or the user data dir; `--devices PATH`).
- `fit --hardware NAME [--db PATH] [--level run|call]`: efficiency factors and per-op overhead
  fitted to stored runs with measured wall times (`analyze --device cpu|cuda`); MAPE before and
  after on runs held out of the fit; `--save` writes the factors into the user device entry.
- `estimate --run RUN_ID --hardware NAME`: add estimates to a stored run.
- `memory` (alias `fit-memory`) `--model-id X --seq-len N --hardware NAME`: weights + KV cache +
  activations at bit widths `--w-bits/--a-bits/--kv-bits` against capacity, largest batch.
Heavy imports (torch, transformers, the store) happen inside the handlers.

Example:
    $ lm-predictor hardware show h100
    $ lm-predictor hardware memory --model-id meta-llama/Llama-3.1-8B --seq-len 8192 \\
          --hardware H100-SXM --kv-bits 8
    $ lm-predictor analyze --model-id gpt2 --device cpu --batch-size 2 && \\
      lm-predictor hardware fit --hardware local-cpu
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import TYPE_CHECKING, Any


from formula_db.units import MODEL_DTYPES
from lm_predictor.cli._args import add_db_arg, fraction, non_negative_int, positive_int

if TYPE_CHECKING:
    from hardware.catalog import Catalog
    from rich.console import Console


def bits(text: str) -> int:
    value = positive_int(text)
    if value > 64:
        raise argparse.ArgumentTypeError(f"expected a bit width of at most 64, got {value}")
    return value



def register(sub: argparse._SubParsersAction) -> None:
    hw = sub.add_parser("hardware", help="device catalog, calibration, time fits, memory fit",
                        description="Devices with cited peaks, roofline calibration and fitting, "
                                    "and whether a model fits in memory.")
    hs = hw.add_subparsers(dest="hardware_command", required=True, metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--devices", metavar="PATH",
                       help="user devices file (default $LM_PREDICTOR_DEVICES or "
                            "<user data dir>/lm-predictor/devices.json)")
        p.add_argument("--json", action="store_true", help="print JSON")

    p = hs.add_parser("list", help="all devices")
    common(p)
    p.set_defaults(handler=run_list)

    p = hs.add_parser("show", help="one device with its sources")
    p.add_argument("name")
    common(p)
    p.set_defaults(handler=run_show)

    p = hs.add_parser("calibrate", help="measure the local device and save it as a user device")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--name", help="device name to save (default local-cpu / local-cuda)")
    p.add_argument("--quick", action="store_true", help="small sizes: rough, under a second")
    p.add_argument("--threads", type=positive_int, help="torch threads on cpu (default: torch's)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated (default fp32,bf16)")
    p.add_argument("--clock", choices=("wall", "thread"), default="wall",
                   help="thread: time with the thread's CPU time (cpu, --threads 1), steadier on "
                        "a machine shared with other work")
    p.add_argument("--no-save", action="store_true", help="print the entry, do not save it")
    common(p)
    p.set_defaults(handler=run_calibrate)

    p = hs.add_parser("fit", help="fit efficiency factors to stored measured runs",
                      description="Fit matmul/vector/memory efficiency factors and a per-op "
                                  "overhead to the wall times of stored runs (analyze --device "
                                  "cpu|cuda); report MAPE before and after on held-out runs.")
    p.add_argument("--hardware", required=True, metavar="NAME", help="the device whose peaks "
                   "to start from (usually the calibrated local device)")
    add_db_arg(p)
    p.add_argument("--level", choices=("run", "call"), default="run",
                   help="run: one sample per run (root wall time vs summed estimate; MAPE per "
                        "phase); call: one per call's own measured time (MAPE per class)")
    p.add_argument("--runs-device", help="only runs measured on this device type (cpu, cuda)")
    p.add_argument("--dtype", help="only runs of this dtype (default: the most common)")
    p.add_argument("--hold-out-every", type=positive_int, default=3,
                   help="hold out every N-th run from the fit (default 3; 1 = no hold-out)")
    p.add_argument("--no-overhead", action="store_true", help="do not fit a per-op overhead")
    p.add_argument("--save", action="store_true",
                   help="write the fitted factors into the user entry of --hardware")
    common(p)
    p.set_defaults(handler=run_fit)

    p = hs.add_parser("estimate", help="add time estimates on a device to a stored run")
    p.add_argument("--run", required=True, metavar="RUN_ID")
    p.add_argument("--hardware", required=True, metavar="NAME")
    add_db_arg(p)
    common(p)
    p.set_defaults(handler=run_estimate)

    p = hs.add_parser("memory", aliases=["fit-memory"],
                      help="weights + KV cache + activations against a device's memory",
                      description="Weights, KV cache and activations (traced on meta: the same "
                                  "peak analyze reports) at the dtype or the given bit widths, "
                                  "whether they fit, the largest batch and the longest context.")
    p.add_argument("--model-id", "--model_id", dest="model_id", required=True)
    p.add_argument("--seq-len", "--seq_len", dest="seq_len", type=positive_int, required=True,
                   help="tokens per sequence processed (the prompt)")
    p.add_argument("--kv-len", "--kv_len", dest="kv_len", type=non_negative_int, default=0,
                   help="tokens already in the KV cache (the cache holds kv-len + seq-len)")
    p.add_argument("--hardware", required=True, metavar="NAME")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int,
                   default=1)
    p.add_argument("--dtype", choices=MODEL_DTYPES,
                   help="model dtype (default: the config's torch_dtype, else bfloat16)")
    p.add_argument("--kernels", choices=("eager", "fused"),
                   help="fused (default on accelerators): logits of the last position, SDPA, "
                        "cache appended in place; eager: what analyze traces")
    p.add_argument("--logits", choices=("last", "all"))
    p.add_argument("--w-bits", "--w_bits", dest="w_bits", type=bits, default=None,
                   help="weight bit width (default: the dtype's)")
    p.add_argument("--a-bits", "--a_bits", dest="a_bits", type=bits, default=None,
                   help="activation bit width (default: the dtype's)")
    p.add_argument("--kv-bits", "--kv_bits", dest="kv_bits", type=bits, default=None,
                   help="KV-cache bit width (default: the dtype's)")
    p.add_argument("--train", action="store_true",
                   help="training memory: weights, gradients, optimizer states (ZeRO-sharded) "
                        "and activations saved for backward (traced), instead of inference")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd", "adafactor"), default="adamw")
    p.add_argument("--precision", choices=("mixed", "fp32"), default="mixed",
                   help="--train: mixed = bf16 weights and grads + fp32 master weights and "
                        "states (16 bytes/parameter with Adam); fp32 = everything fp32")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=0,
                   help="--train: ZeRO stage (1 shards optimizer states, 2 also gradients, 3 "
                        "also weights) over --data-parallel ranks")
    p.add_argument("--data-parallel", type=positive_int, default=1, metavar="N")
    p.add_argument("--checkpointing", action="store_true",
                   help="--train: activation checkpointing (fewer saved activations)")
    p.add_argument("--usable", type=fraction, default=1.0,
                   help="usable share of the capacity (e.g. 0.9 for runtime overheads)")
    common(p)
    p.set_defaults(handler=run_memory)


def _hw_error(message: str) -> Exception:
    from hardware.errors import HardwareError

    return HardwareError(message)


def _catalog(args: argparse.Namespace) -> Catalog:
    from hardware.catalog import load_catalog

    return load_catalog(args.devices)


# --- list / show ---------------------------------------------------------------------------------

def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from hardware.report import device_summary, devices_table

    catalog = _catalog(args)
    devices = catalog.devices()
    if args.json:
        print(json.dumps([device_summary(d) for d in devices], indent=2))
        return 0
    console = Console()
    console.print(devices_table(devices, {d.name for d in catalog.user.values()}))
    console.print(f"user devices: {catalog.user_path}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from hardware.report import device_summary, render_device

    device = _catalog(args).get(args.name)
    if args.json:
        print(json.dumps(device_summary(device), indent=2))
    else:
        render_device(device, Console())
    return 0


# --- calibrate -----------------------------------------------------------------------------------

def run_calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console
    import torch

    from hardware.calibrate import calibrate, to_device
    from hardware.catalog import normalize_dtype, save_user_device
    from hardware.report import device_summary, render_device

    dtypes = tuple(normalize_dtype(d.strip()) for d in args.dtypes.split(",") if d.strip())
    unknown = [d for d in dtypes if d not in ("fp32", "bf16", "fp16")]
    if unknown:
        raise _hw_error(f"calibrate measures fp32, bf16 and fp16, not {', '.join(unknown)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = torch.device(args.device).type
    if kind not in ("cpu", "cuda"):
        raise _hw_error(f"calibrate supports --device cpu or cuda, not {args.device!r}")
    err = Console(stderr=True)
    with err.status(f"calibrating {args.device}"):
        try:
            result = calibrate(args.device, quick=args.quick, dtypes=dtypes, clock=args.clock)
        except RuntimeError as exc:
            raise _hw_error(f"calibration failed: {' '.join(str(exc).split())}") from None
    device = to_device(result, args.name or f"local-{kind}")
    if args.json:
        print(json.dumps(device_summary(device), indent=2))
    else:
        render_device(device, Console())
    if not args.no_save:
        path = save_user_device(device, args.devices)
        err.print(f"saved {device.name} to {path} ({result.duration_s:.1f} s of measurements)")
    return 0


# --- fit ---------------------------------------------------------------------------------------

def run_fit(args: argparse.Namespace) -> int:
    from rich.console import Console
    from hardware.catalog import Efficiency, normalize_dtype, save_user_device
    from hardware.fit import Factors, NotEnoughSamples, fit
    from hardware.roofline import Peaks, with_efficiency
    from lm_predictor.estimate import load_runs, samples_of
    from lm_predictor.store import Store

    device = _catalog(args).get(args.hardware)
    runs = [r for r in load_runs(Store(args.db)) if r.device != "meta"
            and (not args.runs_device or r.device.split(":")[0] == args.runs_device)]
    timed = [r for r in runs if any(c.wall_time_s is not None for c in r.calls)]
    if not timed:
        raise _hw_error(f"no stored runs with measured wall times in {Store(args.db).path}; "
                            f"measure some first, e.g. 'lm-predictor analyze --model-id gpt2 "
                            f"--device cpu --batch-size 2 --seq-len 64'")
    dtype = normalize_dtype(args.dtype) if args.dtype else Counter(
        normalize_dtype(r.dtype) for r in timed).most_common(1)[0][0]
    chosen = [r for r in timed if normalize_dtype(r.dtype) == dtype]
    samples = samples_of(chosen, args.level)
    if not samples:
        raise _hw_error(f"no usable {args.level}-level samples among {len(chosen)} {dtype} "
                            f"runs (wall times missing or not positive)")
    peaks = Peaks.of(device, dtype, Efficiency(), op_overhead_us=0.0)
    start = Factors(device.efficiency, device.op_overhead_us * 1e-6)
    try:
        result = fit(samples, peaks, start, hold_out_every=args.hold_out_every,
                     fit_overhead=not args.no_overhead)
    except NotEnoughSamples as exc:
        raise _hw_error(_too_few(exc, args.level, dtype)) from None
    summary = {"hardware": device.name, "dtype": dtype, "level": args.level,
               "runs": len(chosen), "skipped_runs_other_dtype": len(timed) - len(chosen),
               "before": {**start.efficiency.model_dump(), "op_overhead_us":
                          start.op_overhead_s * 1e6},
               "after": {**result.factors.efficiency.model_dump(),
                         "op_overhead_us": result.factors.op_overhead_s * 1e6},
               "iterations": result.iterations, "at_bound": result.at_bound,
               "fit_samples": result.fit_samples,
               "held_out_samples": result.held_out_samples,
               "mape_fit_before": result.mape_fit_before, "mape_fit_after": result.mape_fit_after,
               "mape_held_out_before": result.mape_held_out_before,
               "mape_held_out_after": result.mape_held_out_after,
               "by_label": result.by_label}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _render_fit(summary, Console())
    if args.save:
        fitted = with_efficiency(device, result.factors.efficiency,
                                 result.factors.op_overhead_s * 1e6)
        path = save_user_device(fitted, args.devices)
        Console(stderr=True).print(f"saved the fitted factors of {device.name} to {path}")
    return 0


def _too_few(exc: Any, level: str, dtype: str) -> str:
    """One line: how many runs (or call samples) a fit needs, and how to make them."""
    free = f"{len(exc.free)} factors ({', '.join(exc.free)})"
    if level == "run":
        return (f"hardware fit needs at least {exc.needed} measured {dtype} runs to fit {free} "
                f"and report a held-out error, found {exc.have}; measure {exc.needed - exc.have}"
                f" more at other shapes, e.g. 'lm-predictor analyze --model-id gpt2 --device "
                f"cpu --batch-size 4 --seq-len 32' (vary --batch-size/--seq-len), or fit per "
                f"call with --level call")
    return (f"hardware fit --level call: {exc}; measure more timed runs, e.g. 'lm-predictor "
            f"analyze --model-id gpt2 --device cpu --batch-size 4 --seq-len 32'")


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:.1f}%"


def _render_fit(summary: dict[str, Any], console: Console) -> None:
    from rich.table import Table
    before, after = summary["before"], summary["after"]
    console.print(f"fit of {summary['hardware']} ({summary['dtype']}, {summary['level']} level, "
                  f"{summary['runs']} runs, {summary['fit_samples']} fit / "
                  f"{summary['held_out_samples']} held-out samples, "
                  f"{summary['iterations']} iterations)")
    factors = Table(title="efficiency factors (time = work / (peak x factor)) and op overhead")
    for col in ("", "matmul", "vector", "memory", "op overhead µs"):
        factors.add_column(col, justify="right")
    for name, f in (("before", before), ("after", after)):
        factors.add_row(name, f"{f['matmul']:.3g}", f"{f['vector']:.3g}", f"{f['memory']:.3g}",
                        f"{f['op_overhead_us']:.3g}")
    console.print(factors)
    if summary["at_bound"]:
        console.print(f"[yellow]on a plausibility bound (hardware.fit.BOUNDS): "
                      f"{', '.join(summary['at_bound'])}; the roofline explains these times "
                      f"poorly[/yellow]")
    table = Table(title="MAPE of estimated vs measured time")
    for col in ("label", "fit n", "fit before", "fit after", "held-out n", "held-out before",
                "held-out after"):
        table.add_column(col, justify="left" if col == "label" else "right")
    table.add_row("all", str(summary["fit_samples"]), _pct(summary["mape_fit_before"]),
                  _pct(summary["mape_fit_after"]), str(summary["held_out_samples"]),
                  _pct(summary["mape_held_out_before"]), _pct(summary["mape_held_out_after"]))
    for label, row in summary["by_label"].items():
        table.add_row(label or "—", str(row["fit_samples"]), _pct(row["mape_fit_before"]),
                      _pct(row["mape_fit_after"]), str(row["held_out_samples"]),
                      _pct(row["mape_held_out_before"]), _pct(row["mape_held_out_after"]))
    console.print(table)


# --- estimate a stored run -----------------------------------------------------------------------

def run_estimate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from hardware.report import render_time, time_summary
    from hardware.roofline import estimate_calls
    from lm_predictor.estimate import load_runs
    from lm_predictor.store import Store

    device = _catalog(args).get(args.hardware)
    store = Store(args.db)
    runs = load_runs(store, args.run)
    if not runs:
        raise _hw_error(f"no traced run {args.run!r} in {store.path}; list runs with "
                            f"'lm-predictor runs'")
    run = runs[0]
    est = estimate_calls(run.calls, device, run.dtype, outside=run.outside)
    store.write_estimates(run.run_id, est.rows())
    if args.json:
        print(json.dumps({"run_id": run.run_id, **time_summary(est)}, indent=2))
    else:
        render_time(est, Console())
    Console(stderr=True).print(f"stored {len(est.rows())} estimates of run {run.run_id} on "
                               f"{device.name} in {store.path} (table estimates)",
                               highlight=False, soft_wrap=True)
    return 0


# --- memory fit ----------------------------------------------------------------------------------

def run_memory(args: argparse.Namespace) -> int:
    """Weights, KV cache and traced activations against the device's memory."""
    from rich.console import Console
    from rich.table import Table

    from formula_db.units import config_dtype_name
    from hardware.kernels import kernel_default
    from hardware.memory import plan_memory
    from lm_predictor import settings
    from lm_predictor.models.memory import TracedMemory
    from lm_predictor.models.presets import check_model_id
    from lm_predictor.models.resolve import resolve_config
    from lm_predictor.run import torch_dtype

    check_model_id(args.model_id)
    device = _catalog(args).get(args.hardware)
    resolved = resolve_config(args.model_id, hf_token=settings.hf_token())
    if args.train:
        return _train_memory(args, resolved, device)
    train_only = [f for f, v in (("--zero", args.zero), ("--data-parallel", args.data_parallel > 1),
                                 ("--checkpointing", args.checkpointing)) if v]
    if train_only:
        from lm_predictor.errors import UsageError

        raise UsageError(f"{', '.join(train_only)} only apply with --train")
    dtype_name = args.dtype or config_dtype_name(resolved.config)
    kernels = args.kernels or kernel_default(device.kind)
    source = TracedMemory(resolved.config, torch_dtype(dtype_name), kernels, args.logits)
    plan = plan_memory(source, device.capacity_bytes, batch_size=args.batch_size,
                       seq_len=args.seq_len, kv_len=args.kv_len, usable_fraction=args.usable,
                       w_bits=args.w_bits, kv_bits=args.kv_bits, a_bits=args.a_bits)
    out = {"model_id": resolved.model_id, "hardware": device.name, "dtype": dtype_name,
           "parameters": source.weights_bytes // source.itemsize, **plan.to_json()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    b = plan.breakdown
    tokens = args.kv_len + args.seq_len
    table = Table(title=f"{resolved.model_id} on {device.name} ({device.memory_gb:g} GB), "
                        f"{dtype_name}, {kernels} kernels: batch {args.batch_size}, {tokens} "
                        f"tokens per sequence")
    table.add_column("part")
    table.add_column("GB (1e9 bytes)", justify="right")
    for name, value in (("weights", b.weights_bytes), ("KV cache", b.kv_cache_bytes),
                        ("activations (traced peak)", b.activation_bytes),
                        ("total", b.total), ("usable capacity", plan.usable_bytes)):
        table.add_row(name, f"{value / 1e9:.3f}")
    console = Console()
    console.print(table)
    verdict = "fits" if plan.fits else "does NOT fit"
    console.print(f"batch {args.batch_size} {verdict}; largest batch at {tokens} tokens: "
                  f"{plan.max_batch}; longest context at batch {args.batch_size}: "
                  f"{plan.max_context}" + (f" (the model's limit is {plan.context_limit})"
                                           if plan.context_limit else ""))
    return 0



def _train_memory(args: argparse.Namespace, resolved: Any, device: Any) -> int:
    """Training memory per device: ZeRO arithmetic over the model's parameters plus the bytes a
    traced training step saves for backward (activations), at --batch-size x --seq-len."""
    from rich.console import Console
    from rich.table import Table

    from hardware.training_memory import training_memory
    from lm_predictor.models.build import build_model
    from lm_predictor.models.memory import saved_activation_bytes
    from lm_predictor.run import torch_dtype

    if args.kv_len:
        from lm_predictor.errors import UsageError

        raise UsageError("--kv-len does not apply with --train (a training step has no cache)")
    dtype = torch_dtype("bfloat16" if args.precision == "mixed" else "float32")
    model = build_model(resolved.config, device="meta", dtype=dtype)
    shapes = [tuple(p.shape) for p in model.parameters()]
    parameters = sum(p.numel() for p in model.parameters())
    del model
    activations = saved_activation_bytes(resolved.config, dtype, batch_size=args.batch_size,
                                         seq_len=args.seq_len, checkpointing=args.checkpointing)
    mem = training_memory(parameters, optimizer=args.optimizer, precision=args.precision,
                          zero_stage=args.zero, data_parallel=args.data_parallel,
                          activation_bytes=activations, parameter_shapes=shapes)
    usable = int(device.capacity_bytes * args.usable)
    out = {"model_id": resolved.model_id, "hardware": device.name, "batch_size": args.batch_size,
           "seq_len": args.seq_len, "checkpointing": args.checkpointing, **mem.as_dict(),
           "capacity_bytes": device.capacity_bytes, "usable_bytes": usable,
           "fits": mem.total_bytes <= usable}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    table = Table(title=f"training {resolved.model_id} on {device.name}: {args.optimizer}, "
                        f"{args.precision} precision, ZeRO-{args.zero} over {args.data_parallel} "
                        f"rank(s), batch {args.batch_size} x {args.seq_len} tokens per device")
    table.add_column("part (per device)")
    table.add_column("GB (1e9 bytes)", justify="right")
    for name in ("weights_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes",
                 "total_bytes"):
        table.add_row(name.removesuffix("_bytes"), f"{out[name] / 1e9:.3f}")
    console = Console()
    console.print(table)
    console.print(f"{'fits' if out['fits'] else 'does NOT fit'} in {usable / 1e9:.3g} GB usable")
    return 0
