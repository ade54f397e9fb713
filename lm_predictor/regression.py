"""Formula accuracy across runs: per-formula error of one run, and comparison with a baseline.

Per formula key and metric, the largest absolute relative error over the run's calls that have a
formula (`calls.rel_error_*`, +inf when measured is 0 but predicted is not). A regression is a
key whose error in the new run exceeds the baseline's by more than `slack`, or a key the
baseline reconciled that now fails to evaluate.

Example:
    >>> compare_runs("lm_predictor.duckdb", new_run, old_run)
    ['torch__nn__Linear flops: max relative error 0 -> 0.25']
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lm_predictor.results import METRICS
from lm_predictor.store import Store


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


def compare_runs(db: str | Path, run_id: str, baseline_run_id: str,
                 metrics: Sequence[str] = METRICS, slack: float = 0.0) -> list[str]:
    """Lines describing every formula whose accuracy got worse than in the baseline run."""
    store = Store(Path(db))
    new = accuracy_by_key(store, run_id, metrics)
    old = accuracy_by_key(store, baseline_run_id, metrics)
    worse: list[str] = []
    for key in sorted(set(new) & set(old)):
        for m in metrics:
            before, after = old[key][m], new[key][m]
            if after is None and before is not None:
                worse.append(f"{key} {m}: evaluated before, fails now")
            elif after is not None and before is not None and after > before + slack:
                worse.append(f"{key} {m}: max relative error {before:.6g} -> {after:.6g}")
    return worse


def previous_run(store: Store, run_id: str) -> str | None:
    """The latest earlier traced run of the same model, config, phase and shape."""
    _, rows = store.query(
        "SELECT b.run_id FROM runs a JOIN runs b ON a.model_id = b.model_id "
        "AND a.config_hash = b.config_hash AND a.phase = b.phase AND a.batch_size = b.batch_size "
        "AND a.seq_len = b.seq_len AND a.kv_len = b.kv_len AND b.kind = 'traced' "
        "AND b.created_at < a.created_at WHERE a.run_id = ? ORDER BY b.created_at DESC LIMIT 1",
        [run_id])
    return rows[0][0] if rows else None
