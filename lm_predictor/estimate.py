"""Stored runs → hardware estimator input: each call's own work and measured wall time.

`load_runs` rebuilds traced runs from the database (own work summed from `ops`, the call tree
from `calls`); `samples_of` turns them into fit samples for `hardware.fit` (one per run, or one
per call's own measured time).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lm_predictor.store import queries
from lm_predictor.store.store import Store

if TYPE_CHECKING:
    from hardware.fit import Sample
    from hardware.roofline import CallWork, Work


@dataclass
class StoredRun:
    """A stored traced run rebuilt for the estimator: its calls' own work and wall times."""

    run_id: str
    model_id: str
    phase: str
    dtype: str
    device: str
    shape: str
    calls: list[CallWork] = field(default_factory=list)
    outside: Work | None = None


def load_runs(store: Store, run_id: str | None = None) -> list[StoredRun]:
    """Traced runs (or the one `run_id`) with per-call own work summed from the `ops` table."""
    from hardware.roofline import CallWork, Work

    run_rows = queries.traced_runs(store, run_id)
    runs = {r[0]: StoredRun(r[0], r[1], r[2] or "", r[3] or "float32", r[4] or "",
                            f"b{r[5]} s{r[6]} kv{r[7]}") for r in run_rows}
    if not runs:
        return []
    ids = list(runs)
    work_rows = queries.own_work(store, ids)
    works = {(r[0], r[1]): Work(*(int(v) for v in r[2:])) for r in work_rows}
    call_rows = queries.call_tree(store, ids)
    children: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in call_rows:
        if r[2] is not None:
            children[(r[0], r[2])].append(r[1])
    for r in call_rows:
        runs[r[0]].calls.append(CallWork(r[1], r[2], r[3], r[4], works.get((r[0], r[1]), Work()),
                                         tuple(children[(r[0], r[1])]), r[5]))
    for run in runs.values():
        run.outside = works.get((run.run_id, None))  # type: ignore[index]
    return list(runs.values())


def samples_of(runs: list[StoredRun], level: str) -> list[Sample]:
    """Fit samples: one per run (level 'run') or one per call's own measured time ('call')."""
    from hardware.fit import Sample

    out: list[Sample] = []
    for run in runs:
        walls = {c.call_id: c.wall_time_s for c in run.calls}
        if level == "run":
            roots = [walls[c.call_id] for c in run.calls if c.parent_call_id is None]
            if not roots or None in roots:
                continue
            items = tuple(c.self_work for c in run.calls) + ((run.outside,) if run.outside else ())
            out.append(Sample(items, float(sum(roots)), run.run_id,  # type: ignore[arg-type]
                              run.phase))
            continue
        for c in run.calls:
            times = [walls[c.call_id], *(walls[i] for i in c.children)]
            if None in times:
                continue
            own = times[0] - sum(times[1:])  # type: ignore[operator,arg-type]
            if own > 0:
                out.append(Sample((c.self_work,), own, run.run_id,
                                  c.class_name.rsplit(".", 1)[-1]))
    return out
