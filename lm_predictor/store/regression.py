"""Formula accuracy across runs: comparison of one run with a baseline run.

Per formula key and metric, the largest absolute relative error over the run's calls that have a
formula (`queries.accuracy_by_key`). A regression is a key whose error in the new run exceeds the
baseline's by more than `slack`, or a key the baseline reconciled that now fails to evaluate.

Example:
    >>> compare_runs("runs.duckdb", new_run, old_run)
    ['torch__nn__Linear flops: max relative error 0 -> 0.25']
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from formula_db.units import METRICS
from lm_predictor.store.queries import accuracy_by_key, previous_run
from lm_predictor.store.store import Store

__all__ = ["compare_runs", "previous_run"]


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
