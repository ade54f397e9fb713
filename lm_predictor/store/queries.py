"""Every SELECT the library and the commands need, in one place, over a `Store`.

Each function returns plain Python values (tuples, dicts, lists); none writes. The interactive
`sql` command runs the user's own statements through `Store.query` instead.
"""
from __future__ import annotations

from typing import Any, Sequence

from formula_db.units import METRICS
from lm_predictor.store.store import Store


def accuracy_by_key(store: Store, run_id: str, metrics: Sequence[str] = METRICS
                    ) -> dict[str, dict[str, float | None]]:
    """{formula_key: {metric: max |rel error|}} of one run (None when a formula errored)."""
    cols = ", ".join(f"max(abs(rel_error_{m}))" for m in metrics)
    _, rows = store.query(f"SELECT formula_key, count(*) FILTER (WHERE error IS NOT NULL), {cols} "
                          f"FROM calls WHERE run_id = ? AND status <> 'no_formula' "
                          f"GROUP BY formula_key", [run_id])
    out: dict[str, dict[str, float | None]] = {}
    for key, errors, *values in rows:
        out[key] = {m: (None if errors else (float(v) if v is not None else 0.0))
                    for m, v in zip(metrics, values)}
    return out


def previous_run(store: Store, run_id: str) -> str | None:
    """The latest earlier traced run of the same model, config, phase and shape."""
    _, rows = store.query(
        "SELECT b.run_id FROM runs a JOIN runs b ON a.model_id = b.model_id "
        "AND a.config_hash = b.config_hash AND a.phase = b.phase AND a.batch_size = b.batch_size "
        "AND a.seq_len = b.seq_len AND a.kv_len = b.kv_len AND b.kind = 'traced' "
        "AND b.created_at < a.created_at WHERE a.run_id = ? ORDER BY b.created_at DESC LIMIT 1",
        [run_id])
    return rows[0][0] if rows else None


def formula_grades(store: Store, run_ids: Sequence[str]
                   ) -> list[tuple[str, int, int, int, list[float | None]]]:
    """Per formula key over `run_ids`: (key, calls, mismatches, errors, max |rel error| per
    metric in METRICS order), calls without a formula left out."""
    placeholders = ", ".join("?" for _ in run_ids)
    cols = ", ".join(f"max(abs(rel_error_{m}))" for m in METRICS)
    _, rows = store.query(
        f"SELECT formula_key, count(*), count(*) FILTER (WHERE status = 'mismatch'), "
        f"count(*) FILTER (WHERE error IS NOT NULL), {cols} FROM calls "
        f"WHERE run_id IN ({placeholders}) AND status <> 'no_formula' "
        f"GROUP BY formula_key ORDER BY formula_key", list(run_ids))
    return [(r[0], r[1], r[2], r[3], [None if v is None else float(v) for v in r[4:]])
            for r in rows]


def mismatch_groups(store: Store, run_ids: Sequence[str], rtol: float = 0.0
                    ) -> list[tuple[str, str, str, int, float | None, str]]:
    """Failing calls over `run_ids` grouped by formula and metric, worst first: (formula_key,
    a class name of it, metric, calls, max |rel error| (None: unbounded or not evaluated),
    module path of a worst call). Metric 'error': the formula did not evaluate."""
    placeholders = ", ".join("?" for _ in run_ids)
    parts = [f"SELECT formula_key, class_name, '{m}' AS metric, abs(rel_error_{m}) AS err, "
             f"module_path FROM calls WHERE run_id IN ({placeholders}) AND status = 'mismatch' "
             f"AND error IS NULL AND (rel_error_{m} IS NULL OR abs(rel_error_{m}) > ?)"
             for m in METRICS]
    parts.append(f"SELECT formula_key, class_name, 'error' AS metric, NULL AS err, module_path "
                 f"FROM calls WHERE run_id IN ({placeholders}) AND error IS NOT NULL")
    params: list[Any] = []
    for _ in METRICS:
        params += [*run_ids, rtol]
    params += list(run_ids)
    _, rows = store.query(
        f"SELECT formula_key, any_value(class_name), metric, count(*), "
        f"CASE WHEN count(err) < count(*) OR max(err) = 'inf'::DOUBLE THEN NULL ELSE max(err) END,"
        f" arg_max(module_path, coalesce(err, 'inf'::DOUBLE)) "
        f"FROM ({' UNION ALL '.join(parts)}) GROUP BY formula_key, metric "
        f"ORDER BY 5 DESC NULLS FIRST, 4 DESC, 1, 3", params)
    return [(r[0], r[1], r[2], int(r[3]), None if r[4] is None else float(r[4]), r[5])
            for r in rows]


def classes_without_formula(store: Store, run_ids: Sequence[str]) -> list[str]:
    """Class names called without a formula in any of `run_ids`, sorted."""
    placeholders = ", ".join("?" for _ in run_ids)
    _, rows = store.query(
        f"SELECT DISTINCT class_name FROM calls WHERE run_id IN ({placeholders}) "
        f"AND status = 'no_formula' ORDER BY 1", list(run_ids))
    return [r[0] for r in rows]


def latest_model_calling(store: Store, class_name: str, key: str) -> str | None:
    """The model of the latest stored run that calls a class (dotted name, key or bare name)."""
    _, rows = store.query(
        "SELECT r.model_id FROM calls c JOIN runs r USING (run_id) "
        "WHERE c.class_name = ? OR c.formula_key = ? OR c.class_name LIKE ? "
        "ORDER BY r.created_at DESC LIMIT 1", [class_name, key, f"%.{class_name}"])
    return rows[0][0] if rows else None


def traced_runs(store: Store, run_id: str | None = None) -> list[tuple[Any, ...]]:
    """(run_id, model_id, phase, dtype, device, batch_size, seq_len, kv_len) of traced runs."""
    where, params = ("WHERE kind = 'traced'", []) if run_id is None else (
        "WHERE kind = 'traced' AND run_id = ?", [run_id])
    _, rows = store.query(f"SELECT run_id, model_id, phase, dtype, device, batch_size, "
                          f"seq_len, kv_len FROM runs {where} ORDER BY created_at, run_id", params)
    return rows


def own_work(store: Store, run_ids: list[str]) -> list[tuple[Any, ...]]:
    """(run_id, call_id, flops, vector_flops, bytes_read, bytes_written, op count): each call's
    own measured work summed from `ops` (call_id None: ops outside every module)."""
    _, rows = store.query(
        "SELECT run_id, call_id, sum(flops), sum(vector_flops), sum(bytes_read), "
        "sum(bytes_written), sum(count) FROM ops WHERE list_contains(?, run_id) "
        "GROUP BY run_id, call_id", [run_ids])
    return rows


def call_tree(store: Store, run_ids: list[str]) -> list[tuple[Any, ...]]:
    """(run_id, call_id, parent_call_id, module_path, class_name, wall_time_s) per call."""
    _, rows = store.query(
        "SELECT run_id, call_id, parent_call_id, module_path, class_name, wall_time_s FROM calls "
        "WHERE list_contains(?, run_id) ORDER BY run_id, call_id", [run_ids])
    return rows


def previous_sweep(store: Store, sweep_id: str) -> dict[str, tuple[bool, bool]]:
    """{model_type: (traced, fully_covered_exact)} of the sweep stored before `sweep_id` (empty
    when there is none)."""
    _, rows = store.query(
        "SELECT model_type, traced, fully_covered_exact FROM sweep_results WHERE sweep_id = "
        "(SELECT max(sweep_id) FROM sweep_results WHERE sweep_id < ?)", [sweep_id])
    return {r[0]: (bool(r[1]), bool(r[2])) for r in rows}
