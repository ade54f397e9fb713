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

from rich.console import Console
from rich.table import Table

EXIT_CHECK_FAILED = 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="regression check: trace a suite, grade every formula",
                       description="Trace every model of a suite on meta, store the runs and "
                                   "fail when a formula mismatches or regressed.")
    p.add_argument("--suite", default="zoo", help="'zoo' (default) or a suite JSON file")
    p.add_argument("--baseline", default="last", help="'last' (default), 'none' or a RUN_ID")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0)")
    p.add_argument("--db", help="DuckDB file (default $LM_PREDICTOR_DB or ./lm_predictor.duckdb)")
    p.add_argument("--formulas", metavar="PATH", help="user formula database")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(handler=run)


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


def run(args: argparse.Namespace) -> int:
    from formula_db.registry import Registry
    from lm_predictor.api import formulas_used
    from lm_predictor.models import build_model
    from lm_predictor.reconcile import reconcile
    from lm_predictor.regression import compare_runs, previous_run
    from lm_predictor.results import METRICS, RunMeta
    from lm_predictor.store import Store, db_path
    from lm_predictor.suites import load_suite
    from lm_predictor.testing import trace_config
    import torch
    import transformers

    suite = load_suite(args.suite)
    registry = Registry.default(args.formulas)
    store = Store(db_path(args.db))
    err = Console(stderr=True)
    run_ids: list[str] = []
    regressions: list[str] = []
    with err.status("checking") as status:
        for model in suite.models:
            config = model.config()
            built = build_model(config, device="meta")
            from lm_predictor.models import config_hash

            for shape in model.shapes:
                b, s, phase, kv = (*shape, "prefill", 0)[:4] if len(shape) == 2 else shape
                status.update(f"{model.label}: batch {b}, seq {s}, {phase}" + (f", kv {kv}" if kv else ""))
                t = trace_config(config, b, s, phase, kv, model=built)
                recon = reconcile(t, registry, args.rtol)
                meta = RunMeta(model_id=model.label, config_hash=config_hash(config), phase=phase,
                               batch_size=b, seq_len=1 if phase == "decode" else s, kv_len=kv,
                               dtype="float32", device="meta", counter="dispatch", rtol=args.rtol,
                               torch_version=torch.__version__,
                               transformers_version=transformers.__version__)
                run_id = store.write_run(meta, t, recon, formulas_used(t, registry))
                run_ids.append(run_id)
                baseline = (None if args.baseline == "none" else
                            previous_run(store, run_id) if args.baseline == "last" else args.baseline)
                if baseline:
                    regressions += [f"{model.label} {phase} b{b} s{s}: {line}"
                                    for line in compare_runs(store.path, run_id, baseline)]
    placeholders = ", ".join("?" for _ in run_ids)
    cols = ", ".join(f"max(abs(rel_error_{m}))" for m in METRICS)
    _, rows = store.query(
        f"SELECT formula_key, count(*), count(*) FILTER (WHERE status = 'mismatch'), "
        f"count(*) FILTER (WHERE error IS NOT NULL), {cols} FROM calls "
        f"WHERE run_id IN ({placeholders}) AND status <> 'no_formula' "
        f"GROUP BY formula_key ORDER BY formula_key", run_ids)
    _, uncovered = store.query(
        f"SELECT DISTINCT class_name FROM calls WHERE run_id IN ({placeholders}) "
        f"AND status = 'no_formula' ORDER BY 1", run_ids)
    failing = [r[0] for r in rows if r[2] or r[3]]
    stale = unverified_entries(registry)
    if args.json:
        print(json.dumps({
            "suite": suite.name, "runs": run_ids,
            "formulas": [{"formula_key": r[0], "calls": r[1], "mismatches": r[2], "errors": r[3],
                          **{f"max_rel_error_{m}": (None if v is None else float(v))
                             for m, v in zip(METRICS, r[4:])}} for r in rows],
            "failing": failing, "regressions": regressions,
            "no_formula": [u[0] for u in uncovered],
            "unverified_for_installed_transformers": [k for k, _ in stale]}, indent=2))
    else:
        console = Console()
        table = Table(title=f"formula accuracy over {len(run_ids)} runs of suite '{suite.name}'")
        for col in ("formula", "calls", "mismatch", *[f"max err {m}" for m in METRICS]):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r[0].split("__")[-1], str(r[1]), str(r[2] + r[3]),
                          *["—" if v is None else f"{float(v):.3g}" for v in r[4:]])
        console.print(table)
        if uncovered:
            console.print("no formula: " + ", ".join(u[0].rsplit(".", 1)[-1] for u in uncovered))
        if stale:
            console.print(f"[yellow]{len(stale)} entries unverified for transformers "
                          f"{transformers.__version__}[/yellow]: "
                          + ", ".join(f"{k} ({v})" for k, v in stale[:10]))
        for line in regressions:
            console.print(f"[red]regression[/red] {line}")
        console.print(f"{'FAIL' if failing or regressions else 'PASS'}: {len(failing)} failing "
                      f"formulas, {len(regressions)} regressions")
    return EXIT_CHECK_FAILED if failing or regressions else 0
