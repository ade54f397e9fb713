"""Rendering a reconciled run: a rich report for people, JSON and CSV rows for programs.

The report reads at 80 columns: a summary line first (model, shape, parameters, FLOP, MACs,
how many calls are exact), the totals with units, what is *covered* (a formula binds and
evaluates) and what is *exact* (equal on every metric) worded apart, a table by module class
(short class names, never split; classes without a formula show '—' as prediction, not the sum
of their children), mismatches grouped by formula and metric (one row per group with the
count and the worst error), uncovered classes with the command that writes their formula, and
a legend (a FLOP is half a multiply-accumulate; element-wise work is `vector_flops`).

Rows for programs (`summary`, `call_rows`, `class_rows`): every figure inclusive of children
and self (the call's own ops: inclusive minus its children); full class names and keys.

Example:
    >>> render(meta, trace, recon, Console(width=80))
    >>> summary(run_id, meta, trace, recon)["by_class"][0]["class_name"]
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from formula_db.units import COUNTER_METRICS, METRICS
from lm_predictor.fmt import LEGEND, pct, short_class, short_key, si
from lm_predictor.results import CallResult, Reconciliation, RunMeta

if TYPE_CHECKING:
    from tracing.records import Trace

UNIT = {"flops": "FLOP", "vector_flops": "FLOP", "bytes_read": "B", "bytes_written": "B",
        "activation_bytes": "B"}
SHORT_STATUS = {"exact": "exact", "within_tolerance": "≈tol", "mismatch": "mismatch",
                "no_formula": "no formula"}
NO_FORMULA_HINT = ("—: no formula; the class counts as the sum of its children plus its own "
                   "ops. Write one: lm-predictor agent CLASS, or analyze --fill-gaps")


def human(value: Any) -> str:
    """The one number style (see `lm_predictor.fmt.si`); kept for callers of the old name."""
    return si(value)


def percent(rel: float | None) -> str:
    return pct(rel)


def worst_error(result: CallResult) -> float | None:
    """Largest relative error of a call over all metrics (None if any is unbounded)."""
    if any(r is None for r in result.rel_error.values()):
        return None
    return max(result.rel_error.values(), default=0.0)


def _sort_error(result: CallResult) -> float:
    err = worst_error(result)
    return float("inf") if err is None else err


def _add(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a + b


def _sum(values: Iterable[Any]) -> Any:
    total: Any = 0
    for v in values:
        total = _add(total, v)
    return total


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (int, float)) else float(value)


def _bytes(values: dict[str, Any]) -> Any:
    return _add(values.get("bytes_read"), values.get("bytes_written"))


# --- rows for programs ------------------------------------------------------------------------

def call_rows(trace: Trace, recon: Reconciliation) -> list[dict[str, Any]]:
    """One row per module call: path, class, key, status, measured and predicted (inclusive),
    self_measured and self_predicted (own work: inclusive minus the children), errors.

    A call without a formula has `predicted` None and `sum_of_children` the figure reconcile
    used for it (children's predictions plus its own measured ops)."""
    results = {c.call_id: c for c in recon.calls}
    rows = []
    for call in trace.calls:
        r = results[call.call_id]
        children = [results[i] for i in call.children]
        own = call.self_counters.as_dict()
        has_formula = r.status != "no_formula"
        predicted = {m: _plain(r.predicted[m]) for m in METRICS}
        self_predicted = ({m: _plain(_add(r.predicted[m],
                                          None if any(ch.predicted[m] is None for ch in children)
                                          else -sum(ch.predicted[m] for ch in children)))
                           for m in COUNTER_METRICS} if has_formula else None)
        rows.append({
            "call_id": call.call_id, "parent_call_id": call.parent_call_id,
            "module_path": call.module_path, "class_name": call.class_name,
            "formula_key": call.formula_key, "status": r.status,
            "measured": dict(r.measured),
            "predicted": predicted if has_formula else None,
            "sum_of_children": None if has_formula else predicted,
            "self_measured": {m: own[m] for m in COUNTER_METRICS},
            "self_predicted": self_predicted,
            "rel_error": {m: r.rel_error[m] for m in METRICS} if has_formula else None,
            "error": r.error})
    return rows


@dataclass
class ClassRow:
    """Totals of the calls of one module class (inclusive of children)."""

    class_name: str
    calls: int = 0
    measured: dict[str, Any] = field(default_factory=lambda: {m: 0 for m in METRICS})
    predicted: dict[str, Any] = field(default_factory=lambda: {m: 0 for m in METRICS})
    self_measured: dict[str, Any] = field(default_factory=lambda: {m: 0 for m in COUNTER_METRICS})
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    worst: float | None = 0.0  # worst relative error over calls with a formula (None: unbounded)
    formula_keys: set[str] = field(default_factory=set)

    @property
    def has_formula(self) -> bool:
        return self.statuses.get("no_formula", 0) < self.calls

    def status_text(self) -> str:
        """'exact', 'mismatch 24.1%', 'no formula', or counts when the calls differ."""
        if len(self.statuses) == 1:
            text = SHORT_STATUS[next(iter(self.statuses))]
        else:
            order = ("mismatch", "no_formula", "within_tolerance", "exact")
            text = ", ".join(f"{self.statuses[s]} {SHORT_STATUS[s]}" for s in order
                             if self.statuses.get(s))
        off = self.statuses.get("mismatch") or self.statuses.get("within_tolerance")
        return f"{text} {pct(self.worst)}" if off and self.has_formula else text


def class_table_rows(trace: Trace, recon: Reconciliation) -> list[ClassRow]:
    """Per module class, most measured FLOP first."""
    rows: dict[str, ClassRow] = {}
    for c in recon.calls:
        call = trace.calls[c.call_id]
        row = rows.setdefault(call.class_name, ClassRow(call.class_name))
        row.calls += 1
        row.statuses[c.status] += 1
        row.formula_keys.add(c.formula_key)
        own = call.self_counters.as_dict()
        for m in METRICS:
            row.measured[m] += c.measured[m]
            row.predicted[m] = _add(row.predicted[m], c.predicted[m])
        for m in COUNTER_METRICS:
            row.self_measured[m] += own[m]
        if c.status != "no_formula" and row.worst is not None:
            err = worst_error(c)
            row.worst = None if err is None else max(row.worst, err)
    return sorted(rows.values(), key=lambda r: (-r.measured["flops"], -_bytes(r.measured),
                                                r.class_name))


def class_rows(trace: Trace, recon: Reconciliation) -> list[dict[str, Any]]:
    """Per module class as plain data (the `by_class` list of `--json`)."""
    out = []
    for r in class_table_rows(trace, recon):
        covered = r.has_formula
        out.append({"class_name": r.class_name, "formula_keys": sorted(r.formula_keys),
                    "calls": r.calls, "statuses": dict(r.statuses),
                    "measured": dict(r.measured),
                    "predicted": ({m: _plain(v) for m, v in r.predicted.items()}
                                  if covered and not r.statuses.get("no_formula") else None),
                    "self_measured": dict(r.self_measured),
                    "max_rel_error": (r.worst if covered else None)})
    return out


@dataclass
class MismatchGroup:
    """Mismatching calls of one formula on one metric ('error': the formula did not evaluate)."""

    formula_key: str
    class_name: str
    metric: str
    calls: int = 0
    worst: float | None = 0.0
    worst_path: str = ""
    measured: Any = None
    predicted: Any = None
    error: str | None = None


def mismatch_groups(trace: Trace, recon: Reconciliation, rtol: float = 0.0
                    ) -> list[MismatchGroup]:
    """Mismatching calls grouped by (formula, metric), worst first: a call counts in the group
    of every metric it misses by more than `rtol` (the run's tolerance)."""
    groups: dict[tuple[str, str], MismatchGroup] = {}
    for c in recon.calls:
        if c.status != "mismatch":
            continue
        call = trace.calls[c.call_id]
        metrics = ["error"] if c.error else [m for m in METRICS if c.predicted[m] != c.measured[m]
                                             and (c.rel_error[m] is None or c.rel_error[m] > rtol)]
        for m in metrics:
            g = groups.setdefault((c.formula_key, m),
                                  MismatchGroup(c.formula_key, call.class_name, m))
            g.calls += 1
            rel = None if m == "error" else c.rel_error[m]
            if g.calls == 1 or (g.worst is not None and (rel is None or rel > g.worst)):
                g.worst, g.worst_path = rel, call.module_path
                g.error = c.error
                if m != "error":
                    g.measured, g.predicted = c.measured[m], c.predicted[m]
    return sorted(groups.values(), key=lambda g: (g.worst is not None, -(g.worst or 0),
                                                  -g.calls, g.formula_key, g.metric))


def summary(run_id: str | None, meta: RunMeta, trace: Trace, recon: Reconciliation,
            parameters: int | None = None, db: str | None = None) -> dict[str, Any]:
    """Machine-readable summary (the `--json` output of `analyze`): totals, coverage, exact
    counts, parameters and MACs, `by_class` and `by_module` rows (inclusive and self)."""
    measured = dict(recon.measured_totals)
    predicted = dict(recon.predicted_totals)
    measured["peak_activation_bytes"] = recon.peak_activation_bytes
    predicted["peak_activation_bytes"] = None
    statuses: dict[str, int] = defaultdict(int)
    for c in recon.calls:
        statuses[c.status] += 1
    groups = mismatch_groups(trace, recon, meta.rtol)
    return {
        "run_id": run_id,
        "database": db,
        "run": asdict(meta),
        "parameters": parameters,
        "macs": recon.measured_totals["flops"] // 2,
        "totals": {"measured": measured, "predicted": {k: _plain(v) for k, v in predicted.items()}},
        "coverage": recon.coverage,
        "calls": len(recon.calls),
        "exact_calls": statuses.get("exact", 0),
        "statuses": dict(statuses),
        "weight_bytes": trace.weight_bytes,
        "uncovered_classes": recon.uncovered_classes,
        "uncovered_ops": recon.uncovered_ops,
        "mismatch_groups": [{"formula_key": g.formula_key, "class_name": g.class_name,
                             "metric": g.metric, "calls": g.calls, "max_rel_error": g.worst,
                             "worst_module_path": g.worst_path, "measured": g.measured,
                             "predicted": _plain(g.predicted), "error": g.error}
                            for g in groups],
        "by_class": class_rows(trace, recon),
        "by_module": call_rows(trace, recon),
    }


CSV_METRICS = COUNTER_METRICS


def csv_rows(trace: Trace, recon: Reconciliation) -> tuple[list[str], list[list[Any]]]:
    """Per-call rows for `analyze --csv`: header and rows, inclusive and self figures flat."""
    header = ["call_id", "parent_call_id", "module_path", "class_name", "formula_key", "status"]
    header += [f"measured_{m}" for m in METRICS] + [f"predicted_{m}" for m in METRICS]
    header += [f"self_measured_{m}" for m in CSV_METRICS]
    header += [f"self_predicted_{m}" for m in CSV_METRICS]
    header += [f"rel_error_{m}" for m in METRICS] + ["error"]
    rows = []
    for r in call_rows(trace, recon):
        predicted = r["predicted"] or {}
        self_predicted = r["self_predicted"] or {}
        rel = r["rel_error"] or {}
        rows.append([r["call_id"], r["parent_call_id"], r["module_path"], r["class_name"],
                     r["formula_key"], r["status"],
                     *[r["measured"][m] for m in METRICS], *[predicted.get(m) for m in METRICS],
                     *[r["self_measured"][m] for m in CSV_METRICS],
                     *[self_predicted.get(m) for m in CSV_METRICS],
                     *[rel.get(m) for m in METRICS], r["error"]])
    return header, rows


# --- the report for people --------------------------------------------------------------------

def title_of(meta: RunMeta) -> str:
    return (f"{meta.model_id} · {meta.phase} · batch {meta.batch_size} · seq {meta.seq_len}"
            + (f" · kv {meta.kv_len}" if meta.phase == "decode" or meta.kv_len else "")
            + f" · {meta.dtype} · {meta.device}")


def summary_line(meta: RunMeta, trace: Trace, recon: Reconciliation,
                 parameters: int | None = None) -> str:
    """The first line of the report: what ran, its size and cost, and how exact it is."""
    n = len(recon.calls)
    exact = sum(c.status == "exact" for c in recon.calls)
    flops = recon.measured_totals["flops"]
    moved = recon.measured_totals["bytes_read"] + recon.measured_totals["bytes_written"]
    params = f"{si(parameters)} parameters, " if parameters is not None else ""
    return (f"[bold]{escape(title_of(meta))}[/bold]: {params}{si(flops, 'FLOP')} "
            f"({si(flops // 2, 'MAC')}), {si(moved, 'B')} moved; "
            f"exact on every metric for {exact} of {n} calls")


def render(meta: RunMeta, trace: Trace, recon: Reconciliation, console: Console,
           run_id: str | None = None, top: int = 10, parameters: int | None = None) -> None:
    """Print the human report."""
    console.print(summary_line(meta, trace, recon, parameters))
    console.print(totals_table(trace, recon, parameters))
    console.print(coverage_line(recon))
    console.print(by_class_table(trace, recon))
    if recon.uncovered_classes:
        console.print(f"[dim]{escape(NO_FORMULA_HINT)}[/dim]")
    groups = mismatch_groups(trace, recon, meta.rtol)
    if groups:
        console.print(mismatch_table(groups, top, wide=console.width >= 120))
        for g in groups[:top]:  # why a formula could not be evaluated: a line each, not a cell
            if g.metric == "error":
                console.print(f"{short_class(g.class_name)}: {g.error}", highlight=False,
                              markup=False)
    if recon.uncovered_classes:
        console.print("no formula (write one with lm-predictor agent CLASS): "
                      + ", ".join(f"{short_class(k)} ×{v}"
                                  for k, v in sorted(recon.uncovered_classes.items())))
    if recon.uncovered_ops:
        console.print("[yellow]aten ops no table covers (bytes counted, FLOP unknown):[/yellow] "
                      + ", ".join(f"{k} ×{v}" for k, v in sorted(recon.uncovered_ops.items())))
    console.print(f"[dim]{escape(LEGEND)}[/dim]")
    if run_id:
        console.print(f"run {run_id}")


def totals_table(trace: Trace, recon: Reconciliation, parameters: int | None = None) -> Table:
    """Model totals with a unit per row, measured, predicted and the error in %."""
    table = Table(title="totals (forward pass)", box=box.SIMPLE_HEAD)
    table.add_column("metric", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("predicted", justify="right", no_wrap=True)
    table.add_column("error %", justify="right", no_wrap=True)
    from formula_db.accuracy import relative_error

    for m in METRICS:
        measured, predicted = recon.measured_totals[m], recon.predicted_totals[m]
        table.add_row(m, UNIT[m], si(measured), si(predicted),
                      pct(relative_error(predicted, measured)) if predicted is not None else "—")
    table.add_row("MACs (FLOP / 2)", "MAC", si(recon.measured_totals["flops"] // 2), "", "")
    table.add_row("peak activations", "B", si(recon.peak_activation_bytes), "", "")
    table.add_row("weights", "B", si(trace.weight_bytes), "", "")
    if parameters is not None:
        table.add_row("parameters", "count", si(parameters), "", "")
    return table


def coverage_line(recon: Reconciliation) -> str:
    """'covered' (a formula evaluates) and 'exact' (equal on every metric), worded apart."""
    n = len(recon.calls)
    counts: dict[str, int] = defaultdict(int)
    for c in recon.calls:
        counts[c.status] += 1
    with_formula = n - counts.get("no_formula", 0)
    line = (f"covered (a formula evaluates): {pct(recon.coverage['flops'])} of FLOP, "
            f"{pct(recon.coverage['bytes'])} of bytes; exact (equal on every metric): "
            f"{counts.get('exact', 0)} of {with_formula} calls with a formula")
    if counts.get("within_tolerance"):
        line += f", {counts['within_tolerance']} within tolerance"
    if counts.get("mismatch"):
        line += f", [red]{counts['mismatch']} mismatch[/red]"
    if counts.get("no_formula"):
        line += f"; {counts['no_formula']} calls have no formula"
    return line


def by_class_table(trace: Trace, recon: Reconciliation) -> Table:
    """Per module class: calls, measured/predicted FLOP and bytes, worst error, statuses."""
    table = Table(title="by module class (inclusive of children)", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    table.add_column("class", no_wrap=True)
    table.add_column("calls", justify="right", no_wrap=True)
    for col in ("FLOP\nmeas.", "FLOP\npred.", "B\nmeas.", "B\npred."):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("status\nerr %", overflow="fold", min_width=8)
    for r in class_table_rows(trace, recon):
        shown = r.has_formula and not r.statuses.get("no_formula")
        table.add_row(escape(short_class(r.class_name)), str(r.calls), si(r.measured["flops"]),
                      si(r.predicted["flops"]) if shown else "—", si(_bytes(r.measured)),
                      si(_bytes(r.predicted)) if shown else "—", r.status_text())
    return table


def mismatch_table(groups: list[MismatchGroup], top: int, wide: bool = False) -> Table:
    """One row per (formula, metric) with the number of calls and the worst error."""
    shown = groups[:top]
    title = (f"mismatches by formula and metric ({len(groups)} group"
             f"{'s' if len(groups) != 1 else ''}"
             + (f", worst {len(shown)} shown" if len(shown) < len(groups) else "") + ")")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("formula", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("calls", justify="right", no_wrap=True)
    table.add_column("worst %", justify="right", no_wrap=True)
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("predicted", justify="right", no_wrap=True)
    if wide:
        table.add_column("worst at (module path)", overflow="fold")
    for g in shown:
        unit = UNIT.get(g.metric, "")
        cells = [escape(short_class(g.class_name)), g.metric, str(g.calls),
                 "error" if g.metric == "error" else pct(g.worst),
                 si(g.measured, unit) if g.metric != "error" else "",
                 si(g.predicted, unit) if g.metric != "error" else "see below"]
        if wide:
            cells.append(escape(g.worst_path or "(model)"))
        table.add_row(*cells)
    return table


def render_cross_check(rows: list[Any], console: Console, top: int = 10) -> None:
    """fvcore versus the dispatch counter: totals and the module paths where they differ."""
    root = rows[0] if rows else None
    if root is None:
        return
    differing = [r for r in rows if r.fvcore_flops != r.dispatch_flops]
    console.print(f"fvcore cross-check: model {si(root.dispatch_flops, 'FLOP')} (dispatch) vs "
                  f"{si(root.fvcore_flops, 'FLOP')} (fvcore, MACs x 2); {len(differing)} of "
                  f"{len(rows)} module paths differ (fvcore skips scaled_dot_product_attention "
                  f"and counts only matmul/conv handles)")
    if not differing:
        return
    table = Table(title="where fvcore differs", box=box.SIMPLE_HEAD)
    table.add_column("module path", overflow="fold")
    table.add_column("class", no_wrap=True)
    table.add_column("dispatch FLOP", justify="right", no_wrap=True)
    table.add_column("fvcore FLOP", justify="right", no_wrap=True)
    for r in sorted(differing, key=lambda r: -abs((r.fvcore_flops or 0) - r.dispatch_flops))[:top]:
        table.add_row(escape(r.module_path or "(model)"), escape(short_class(r.class_name)),
                      si(r.dispatch_flops), si(r.fvcore_flops))
    console.print(table)


__all__ = ["call_rows", "class_rows", "csv_rows", "human", "mismatch_groups", "percent", "render",
           "render_cross_check", "short_key", "summary", "summary_line"]
