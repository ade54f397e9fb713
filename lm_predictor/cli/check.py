"""`lm-predictor check`: trace a suite of models on meta, store the runs, grade every formula.

For each model and shape of the suite (default: the builtin `zoo`), trace on `meta`, reconcile,
store the run in the check database (its own file: `settings.check_db_path`, so the suite's
many small runs never crowd the user's run database), then print a summary line and only what
fails: one row per formula and metric (calls, worst relative error), the classes without a
formula and the entries whose verified transformers version differs from the installed one.
A progress bar runs on stderr; where the runs went is said there at the end. Exit code 4 when any formula mismatches beyond `--rtol`, fails to evaluate, or got
worse than the baseline (`--baseline last`: the previous run of the same model and shape;
`--baseline RUN_ID`: that run); 0 otherwise.

Example:
    $ lm-predictor check --suite zoo --baseline last
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from lm_predictor.cli._args import add_formulas_arg, positive_float, positive_int, tolerance
from lm_predictor.errors import EXIT_CHECK_FAILED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="regression check: trace a suite, grade every formula",
                       description="Trace every model of a suite on meta, store the runs and "
                                   "fail when a formula mismatches or regressed.")
    p.add_argument("--suite", default="zoo",
                   help="'zoo' (default), 'transformers' (every model type of the installed "
                        "transformers, tiny configs, in worker processes) or a suite JSON file")
    p.add_argument("--workers", type=positive_int, default=2,
                   help="--suite transformers: worker processes (default 2)")
    p.add_argument("--timeout", type=positive_float, default=120.0, metavar="SECONDS",
                   help="--suite transformers: limit per model type (a hang or crash is "
                        "reported, the sweep goes on)")
    p.add_argument("--no-cover", action="store_true",
                   help="--suite transformers: builtin formulas only (by default a type they "
                        "do not fully cover is covered by transfer and derivation, in memory)")
    p.add_argument("--only", metavar="TYPES",
                   help="--suite transformers: comma-separated model types (default: all)")
    p.add_argument("--baseline", default="last", help="'last' (default), 'none' or a RUN_ID")
    p.add_argument("--rtol", type=tolerance, default=0.0, help="relative tolerance (default 0)")
    p.add_argument("--db", help="check database (default $LM_PREDICTOR_CHECK_DB or "
                                "check.duckdb in the user data dir: check runs never go to "
                                "the run database of analyze and predict)")
    add_formulas_arg(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON report")
    out.add_argument("--csv", action="store_true", help="print one CSV row per formula")
    p.set_defaults(handler=cmd_check)


def unverified_entries(registry: Any) -> list[tuple[str, str | None]]:
    """Entries verified against another transformers version than the installed one."""
    import transformers

    installed = transformers.__version__
    out = []
    for key in registry.keys():
        v = registry.get(key).validation
        if key.startswith("transformers__") and v.transformers_version != installed:
            out.append((key, v.transformers_version))
    return out


def cmd_check(args: argparse.Namespace) -> int:
    if args.suite == "transformers":
        return cmd_sweep(args)
    if args.only:
        from lm_predictor.errors import UsageError

        raise UsageError("--only applies to --suite transformers")
    import transformers
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from formula_db.registry import Registry
    from formula_db.units import METRICS
    from lm_predictor.models.build import build_model
    from lm_predictor.run import RunSpec, store_run, trace_run
    from lm_predictor.settings import check_db_path
    from lm_predictor.store import Store, queries
    from lm_predictor.store.regression import compare_runs, previous_run
    from lm_predictor.suites import load_suite

    suite = load_suite(args.suite)
    registry = Registry.default(args.formulas)
    store = Store(check_db_path(args.db))
    err = Console(stderr=True)
    run_ids: list[str] = []
    regressions: list[str] = []
    total = sum(len(model.shapes) for model in suite.models)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        task = progress.add_task("checking", total=total)
        for model in suite.models:
            progress.update(task, description=f"{model.label}: building")
            config = model.config()
            built = build_model(config, device="meta")
            for shape in model.shapes:
                b, s, phase, kv = (*shape, "prefill", 0)[:4] if len(shape) == 2 else shape
                spec = RunSpec(model.label, batch_size=b, seq_len=s, phase=phase, kv_len=kv,
                               rtol=args.rtol)
                progress.update(task, description=f"{model.label}: {spec.where()}")
                out = trace_run(spec, registry, config=config, model=built)
                run_id = store_run(out, store.path)
                run_ids.append(run_id)
                baseline = (None if args.baseline == "none" else
                            previous_run(store, run_id) if args.baseline == "last" else args.baseline)
                if baseline:
                    regressions += [f"{model.label} {phase} b{b} s{s}: {line}"
                                    for line in compare_runs(store.path, run_id, baseline)]
                progress.advance(task)
    rows = queries.formula_grades(store, run_ids)
    groups = queries.mismatch_groups(store, run_ids, args.rtol)
    uncovered = queries.classes_without_formula(store, run_ids)
    failing = [r[0] for r in rows if r[2] or r[3]]
    stale = unverified_entries(registry)
    calls = sum(r[1] for r in rows)
    exact_formulas = sum(1 for r in rows if not r[2] and not r[3]
                         and all(v == 0 for v in r[4]))
    if args.json:
        print(json.dumps({
            "suite": suite.name, "database": str(store.path), "runs": run_ids,
            "formulas": [{"formula_key": key, "calls": n, "mismatches": mism, "errors": errs,
                          **{f"max_rel_error_{m}": v for m, v in zip(METRICS, values)}}
                         for key, n, mism, errs, values in rows],
            "mismatch_groups": [{"formula_key": k, "class_name": c, "metric": m, "calls": n,
                                 "max_rel_error": e, "worst_module_path": path}
                                for k, c, m, n, e, path in groups],
            "failing": failing, "regressions": regressions,
            "no_formula": uncovered,
            "unverified_for_installed_transformers": [k for k, _ in stale]}, indent=2))
    elif args.csv:
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["formula_key", "calls", "mismatches", "errors",
                         *[f"max_rel_error_{m}" for m in METRICS]])
        for key, n, mism, errs, values in rows:
            writer.writerow([key, n, mism, errs, *["" if v is None else v for v in values]])
    else:
        render_check(Console(), suite.name, len(run_ids), len(rows), exact_formulas, calls,
                     failing, groups, regressions, uncovered, stale, transformers.__version__)
    err.print(f"stored {len(run_ids)} check runs in {store.path} (lm-predictor runs --db "
              f"{store.path})", highlight=False, soft_wrap=True)
    return EXIT_CHECK_FAILED if failing or regressions else 0


def render_check(console: Any, suite: str, runs: int, formulas: int, exact: int, calls: int,
                 failing: list[str], groups: list[tuple[str, str, str, int, float | None, str]],
                 regressions: list[str], uncovered: list[str],
                 stale: list[tuple[str, str | None]], installed: str) -> None:
    """A summary line first, then only what fails: one row per formula and metric."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from lm_predictor.fmt import pct, short_class

    verdict = "[red]FAIL[/red]" if failing or regressions else "[green]PASS[/green]"
    console.print(f"{verdict}: suite '{escape(suite)}', {runs} runs, {calls} calls of "
                  f"{formulas} formulas; {exact} formulas exact on every metric and call, "
                  f"{len(failing)} failing, {len(regressions)} regressions")
    if groups:
        table = Table(title="failing formulas by metric (one row per formula and metric)",
                      box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        table.add_column("formula", no_wrap=True)
        table.add_column("metric", no_wrap=True)
        table.add_column("calls", justify="right", no_wrap=True)
        table.add_column("worst %", justify="right", no_wrap=True)
        if console.width >= 120:
            table.add_column("worst at (module path)", overflow="fold")
        for key, class_name, metric, n, worst, path in groups:
            cells = [escape(short_class(class_name)), metric, str(n),
                     "error" if metric == "error" else pct(worst)]
            if console.width >= 120:
                cells.append(escape(path or "(model)"))
            table.add_row(*cells)
        console.print(table)
    if uncovered:
        console.print("no formula (write one with lm-predictor agent CLASS): "
                      + ", ".join(escape(short_class(u)) for u in uncovered))
    if stale:
        console.print(f"[yellow]{len(stale)} entries unverified for transformers "
                      f"{installed}[/yellow]: "
                      + ", ".join(f"{escape(k.rsplit('__', 1)[-1])} ({v})" for k, v in stale[:10])
                      + (" ..." if len(stale) > 10 else ""))
    for line in regressions:
        console.print(f"[red]regression[/red] {escape(line)}")


def cmd_sweep(args: argparse.Namespace) -> int:
    """`check --suite transformers`: every model type traced in worker processes, stored in the
    check database's `sweep_results`, summarised; exit 4 when a type that traced (or was fully
    covered and exact) in the previous sweep no longer does."""
    import dataclasses
    import json as json_mod

    import transformers
    from rich.console import Console

    from lm_predictor.settings import check_db_path
    from lm_predictor.store import Store, queries
    from lm_predictor.sweep import run_sweep, suite_types

    types = suite_types()
    if args.only:
        wanted = {t.strip() for t in args.only.split(",") if t.strip()}
        unknown = sorted(wanted - {t.model_type for t in types})
        if unknown:
            from lm_predictor.errors import ModelError

            raise ModelError(f"unknown model type(s) {', '.join(unknown)} for transformers "
                             f"{transformers.__version__}")
        types = [t for t in types if t.model_type in wanted]
    err = Console(stderr=True)
    with err.status(f"sweeping {len(types)} model types with {args.workers} workers") as status:
        def progress(result: object, done: int, total: int) -> None:
            status.update(f"{done}/{total} model types ({getattr(result, 'model_type', '')})")

        result = run_sweep(types, workers=args.workers, timeout_s=args.timeout,
                           progress=progress, cover=not args.no_cover)
    store = Store(check_db_path(args.db))
    rows = [dataclasses.asdict(r) for r in result.results]
    sweep_id = store.write_sweep(rows, transformers.__version__)
    before = queries.previous_sweep(store, sweep_id)
    broke = sorted(t for t, (traced, _) in before.items()
                   if traced and not any(r["model_type"] == t and r["traced"] for r in rows))
    lost = sorted(t for t, (_, full) in before.items()
                  if full and not any(r["model_type"] == t and r["fully_covered_exact"]
                                      for r in rows))
    s = result.summary
    if args.json:
        print(json_mod.dumps({"sweep_id": sweep_id, "database": str(store.path),
                              "summary": dataclasses.asdict(s), "no_longer_traced": broke,
                              "no_longer_exact": lost}, indent=2, default=str))
    else:
        console = Console()
        console.print(f"{'FAIL' if broke or lost else 'PASS'}: {s.traced} of {s.types} model "
                      f"types traced (built {s.built}), {s.exact} exact on every call with a "
                      f"formula, {s.fully_covered_exact} fully covered and exact "
                      f"(transformers {transformers.__version__}, {s.wall_s:.0f} s)")
        console.print("traced by method: " + ", ".join(f"{k} {v}" for k, v in
                                                       sorted(s.traced_by_method.items())))
        for source, cov in sorted(s.coverage_by_source.items()):
            console.print(f"  coverage by {source}: FLOPs {100 * cov.get('flops', 0):.1f}%, "
                          f"bytes {100 * cov.get('bytes', 0):.1f}% (mean over traced types)")
        if s.failures_by_reason:
            console.print("failures by reason:")
            for reason, names in s.failures_by_reason.items():
                console.print(f"  {len(names):3d}  {reason}: {', '.join(names)}",
                              highlight=False)
        if broke:
            console.print(f"[red]no longer traced since the previous sweep[/red]: "
                          f"{', '.join(broke)}")
        if lost:
            console.print(f"[red]no longer fully covered and exact[/red]: {', '.join(lost)}")
    err.print(f"stored sweep {sweep_id} in {store.path} (table sweep_results)", highlight=False)
    return EXIT_CHECK_FAILED if broke or lost else 0
