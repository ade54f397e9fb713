"""`lm-predictor check`: trace a suite of models on meta, store the runs, grade every formula.

For each model and shape of the suite (default: the builtin `zoo`), trace on `meta`, reconcile,
store the run, then print per-formula accuracy over this check's runs (calls, max relative error
per metric, mismatches) and the entries whose verified transformers version differs from the
installed one. Exit code 4 when any formula mismatches beyond `--rtol`, fails to evaluate, or got
worse than the baseline (`--baseline last`: the previous run of the same model and shape;
`--baseline RUN_ID`: that run); 0 otherwise.

Example:
    $ lm-predictor check --suite zoo --baseline last
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from lm_predictor.cli._args import add_db_arg, add_formulas_arg, tolerance
from lm_predictor.errors import EXIT_CHECK_FAILED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="regression check: trace a suite, grade every formula",
                       description="Trace every model of a suite on meta, store the runs and "
                                   "fail when a formula mismatches or regressed.")
    p.add_argument("--suite", default="zoo", help="'zoo' (default) or a suite JSON file")
    p.add_argument("--baseline", default="last", help="'last' (default), 'none' or a RUN_ID")
    p.add_argument("--rtol", type=tolerance, default=0.0, help="relative tolerance (default 0)")
    add_db_arg(p)
    add_formulas_arg(p)
    p.add_argument("--json", action="store_true", help="print a JSON report")
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
    import transformers
    from rich.console import Console
    from rich.table import Table

    from formula_db.registry import Registry
    from formula_db.units import METRICS
    from lm_predictor.models.build import build_model
    from lm_predictor.run import RunSpec, store_run, trace_run
    from lm_predictor.store import Store, queries
    from lm_predictor.store.regression import compare_runs, previous_run
    from lm_predictor.suites import load_suite

    suite = load_suite(args.suite)
    registry = Registry.default(args.formulas)
    store = Store(args.db)
    err = Console(stderr=True)
    run_ids: list[str] = []
    regressions: list[str] = []
    with err.status("checking") as status:
        for model in suite.models:
            config = model.config()
            built = build_model(config, device="meta")
            for shape in model.shapes:
                b, s, phase, kv = (*shape, "prefill", 0)[:4] if len(shape) == 2 else shape
                spec = RunSpec(model.label, batch_size=b, seq_len=s, phase=phase, kv_len=kv,
                               rtol=args.rtol)
                status.update(f"{model.label}: {spec.where()}")
                out = trace_run(spec, registry, config=config, model=built)
                run_id = store_run(out, store.path)
                run_ids.append(run_id)
                baseline = (None if args.baseline == "none" else
                            previous_run(store, run_id) if args.baseline == "last" else args.baseline)
                if baseline:
                    regressions += [f"{model.label} {phase} b{b} s{s}: {line}"
                                    for line in compare_runs(store.path, run_id, baseline)]
    rows = queries.formula_grades(store, run_ids)
    uncovered = queries.classes_without_formula(store, run_ids)
    failing = [r[0] for r in rows if r[2] or r[3]]
    stale = unverified_entries(registry)
    if args.json:
        print(json.dumps({
            "suite": suite.name, "runs": run_ids,
            "formulas": [{"formula_key": key, "calls": calls, "mismatches": mism, "errors": errs,
                          **{f"max_rel_error_{m}": v for m, v in zip(METRICS, values)}}
                         for key, calls, mism, errs, values in rows],
            "failing": failing, "regressions": regressions,
            "no_formula": uncovered,
            "unverified_for_installed_transformers": [k for k, _ in stale]}, indent=2))
    else:
        console = Console()
        table = Table(title=f"formula accuracy over {len(run_ids)} runs of suite '{suite.name}'")
        for col in ("formula", "calls", "mismatch", *[f"max err {m}" for m in METRICS]):
            table.add_column(col, overflow="fold")
        for key, calls, mism, errs, values in rows:
            table.add_row(key.split("__")[-1], str(calls), str(mism + errs),
                          *["—" if v is None else f"{v:.3g}" for v in values])
        console.print(table)
        if uncovered:
            console.print("no formula: " + ", ".join(u.rsplit(".", 1)[-1] for u in uncovered))
        if stale:
            console.print(f"[yellow]{len(stale)} entries unverified for transformers "
                          f"{transformers.__version__}[/yellow]: "
                          + ", ".join(f"{k} ({v})" for k, v in stale[:10]))
        for line in regressions:
            console.print(f"[red]regression[/red] {line}")
        console.print(f"{'FAIL' if failing or regressions else 'PASS'}: {len(failing)} failing "
                      f"formulas, {len(regressions)} regressions")
    return EXIT_CHECK_FAILED if failing or regressions else 0
