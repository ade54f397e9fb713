"""Rendering a reconciled run: a rich report for people and a JSON summary for programs.

The report shows the totals (measured vs predicted per metric), coverage, a table by module
class (calls, measured and predicted FLOPs and bytes, worst relative error, status counts), the
worst mismatches with their module paths, uncovered classes and ops no table covers.

Example:
    >>> render(meta, trace, recon, Console())
    >>> summary(run_id, meta, trace, recon)["totals"]["measured"]["flops"]
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from formula_db.units import METRICS
from lm_predictor.results import CallResult, Reconciliation, RunMeta

if TYPE_CHECKING:
    from tracing.records import Trace


SHORT_STATUS = {"exact": "exact", "within_tolerance": "≈tol", "mismatch": "MISMATCH",
                "no_formula": "no formula"}


def human(value: Any) -> str:
    """Compact human number: 1.23 G, 456 M; None as '—'."""
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    value = int(value)
    for unit, scale in (("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return str(value)


def percent(rel: float | None) -> str:
    if rel is None:
        return "∞"
    return "0" if rel == 0 else f"{100 * rel:.3g}%"


def worst_error(result: CallResult) -> float | None:
    """Largest relative error of a call over all metrics (None if any is unbounded)."""
    if any(r is None for r in result.rel_error.values()):
        return None
    return max(result.rel_error.values(), default=0.0)


def _sort_error(result: CallResult) -> float:
    err = worst_error(result)
    return float("inf") if err is None else err


def summary(run_id: str | None, meta: RunMeta, trace: Trace, recon: Reconciliation) -> dict[str, Any]:
    """Machine-readable summary (the `--json` output of `analyze`)."""
    measured = dict(recon.measured_totals)
    predicted = dict(recon.predicted_totals)
    measured["peak_activation_bytes"] = recon.peak_activation_bytes
    predicted["peak_activation_bytes"] = None
    statuses: dict[str, int] = defaultdict(int)
    for c in recon.calls:
        statuses[c.status] += 1
    mismatches = sorted((c for c in recon.calls if c.status == "mismatch"), key=_sort_error,
                        reverse=True)[:10]
    return {
        "run_id": run_id,
        "run": asdict(meta),
        "totals": {"measured": measured, "predicted": {k: _plain(v) for k, v in predicted.items()}},
        "coverage": recon.coverage,
        "calls": len(recon.calls),
        "statuses": dict(statuses),
        "weight_bytes": trace.weight_bytes,
        "uncovered_classes": recon.uncovered_classes,
        "uncovered_ops": recon.uncovered_ops,
        "worst_mismatches": [{"module_path": trace.calls[c.call_id].module_path,
                              "formula_key": c.formula_key, "error": c.error,
                              "rel_error": c.rel_error} for c in mismatches],
    }


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (int, float)) else float(value)


def render(meta: RunMeta, trace: Trace, recon: Reconciliation, console: Console,
           run_id: str | None = None, top: int = 10) -> None:
    """Print the human report."""
    title = (f"{meta.model_id} · {meta.phase} · batch {meta.batch_size} · seq {meta.seq_len}"
             + (f" · kv {meta.kv_len}" if meta.phase == "decode" else "")
             + f" · {meta.dtype} · {meta.device}")
    totals = Table(title=title)
    totals.add_column("metric")
    totals.add_column("measured", justify="right")
    totals.add_column("predicted", justify="right")
    for m in METRICS:
        totals.add_row(m, human(recon.measured_totals[m]), human(recon.predicted_totals[m]))
    totals.add_row("peak activation bytes", human(recon.peak_activation_bytes), "")
    totals.add_row("weight bytes", human(trace.weight_bytes), "")
    console.print(totals)
    console.print(f"coverage: {100 * recon.coverage['flops']:.2f}% of FLOPs, "
                  f"{100 * recon.coverage['bytes']:.2f}% of bytes explained by formulas"
                  + (f" · run {run_id}" if run_id else ""))
    console.print(by_class_table(trace, recon))
    mismatches = sorted((c for c in recon.calls if c.status == "mismatch"), key=_sort_error,
                        reverse=True)[:top]
    if mismatches:
        table = Table(title=f"worst mismatches (of {sum(c.status == 'mismatch' for c in recon.calls)})")
        for col in ("module path", "formula", "metric", "measured", "predicted", "error"):
            table.add_column(col, overflow="fold")
        for c in mismatches:
            if c.error:
                table.add_row(trace.calls[c.call_id].module_path, c.formula_key, "—", "", "", c.error)
                continue
            metric = max(METRICS, key=lambda m: float("inf") if c.rel_error[m] is None else c.rel_error[m])
            table.add_row(trace.calls[c.call_id].module_path, c.formula_key, metric,
                          human(c.measured[metric]), human(c.predicted[metric]),
                          percent(c.rel_error[metric]))
        console.print(table)
    if recon.uncovered_classes:
        console.print("no formula (predicted as the sum of children + own ops): "
                      + ", ".join(f"{k} ×{v}" for k, v in sorted(recon.uncovered_classes.items())))
    if recon.uncovered_ops:
        console.print("[yellow]aten ops no table covers (bytes counted, FLOPs unknown):[/yellow] "
                      + ", ".join(f"{k} ×{v}" for k, v in sorted(recon.uncovered_ops.items())))


def by_class_table(trace: Trace, recon: Reconciliation) -> Table:
    """Per module class: calls, measured/predicted FLOPs and bytes, worst error, statuses."""
    groups: dict[str, list[CallResult]] = defaultdict(list)
    for c in recon.calls:
        groups[trace.calls[c.call_id].class_name].append(c)
    table = Table(title="by module class (FLOPs and bytes inclusive of children)")
    for col in ("class", "calls", "FLOPs meas.", "FLOPs pred.", "bytes meas.", "bytes pred.",
                "worst err", "status"):
        table.add_column(col, justify="right" if col not in ("class", "status") else "left",
                         overflow="fold")
    order = sorted(groups, key=lambda k: -sum(c.measured["flops"] for c in groups[k]))
    for cls in order:
        calls = groups[cls]
        mf = sum(c.measured["flops"] for c in calls)
        pf = _sum(c.predicted["flops"] for c in calls)
        mb = sum(c.measured["bytes_read"] + c.measured["bytes_written"] for c in calls)
        pb = _sum(_add(c.predicted["bytes_read"], c.predicted["bytes_written"]) for c in calls)
        errors = [worst_error(c) for c in calls if c.status != "no_formula"]
        worst = "" if not errors else percent(None if None in errors else max(errors))
        statuses: dict[str, int] = defaultdict(int)
        for c in calls:
            statuses[c.status] += 1
        table.add_row(cls.rsplit(".", 1)[-1], str(len(calls)), human(mf), human(pf), human(mb),
                      human(pb), worst,
                      ", ".join(f"{SHORT_STATUS[k]} {v}" for k, v in sorted(statuses.items())))
    return table


def _add(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a + b


def _sum(values: Any) -> Any:
    total: Any = 0
    for v in values:
        total = _add(total, v)
    return total


def render_cross_check(rows: list[Any], console: Console, top: int = 10) -> None:
    """fvcore versus the dispatch counter: totals and the module paths where they differ."""
    root = rows[0] if rows else None
    if root is None:
        return
    differing = [r for r in rows if r.fvcore_flops != r.dispatch_flops]
    console.print(f"fvcore cross-check: model FLOPs {human(root.dispatch_flops)} (dispatch) vs "
                  f"{human(root.fvcore_flops)} (fvcore, MACs x 2); {len(differing)} of "
                  f"{len(rows)} module paths differ (fvcore skips scaled_dot_product_attention "
                  f"and counts only matmul/conv handles)")
    if not differing:
        return
    table = Table(title="where fvcore differs")
    for col in ("module path", "class", "dispatch", "fvcore"):
        table.add_column(col, overflow="fold")
    for r in sorted(differing, key=lambda r: -abs((r.fvcore_flops or 0) - r.dispatch_flops))[:top]:
        table.add_row(r.module_path or "(model)", r.class_name.rsplit(".", 1)[-1],
                      human(r.dispatch_flops), human(r.fvcore_flops))
    console.print(table)
