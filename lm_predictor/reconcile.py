"""Reconciliation: every traced call predicted from its formula and compared with measurement.

For each call (children before parents):
- with a formula: bind its parameters from the recorded call (`formula_db.bind.make_roots` over the
  described inputs, outputs, kwargs, attributes and the model config), evaluate every metric
  exactly, and compare with the measured inclusive counters and activation bytes. Status `exact`
  when all metrics are equal, `within_tolerance` when every relative error is <= `rtol`,
  `mismatch` otherwise (also when the formula fails to bind or evaluate: `error` says why).
- without a formula: predicted = sum of the children's predictions + the call's own measured ops;
  the own part is reported as `uncovered`, status `no_formula`.
Relative error is |predicted - measured| / measured (0 when both are 0, None when measured is 0
and predicted is not, reported as infinite in the report).

Training traces (`trace(..., backward=True)`) also get, per call, a `BackwardResult`: the
formula's `backward` templates against the measured `backward_inclusive` (same statuses), or, for
a call without backward templates, its children's predictions plus its own measured backward
ops (`no_formula`). Recomputed calls (activation checkpointing) get none.

Coverage is the share of measured work explained by formulas: walking down from the roots, a
call with a formula explains its whole inclusive cost; a call without one leaves its own ops
unexplained and passes its children on; so does a call whose formula fails to bind or
evaluate (it explains nothing). Reported for flops and for bytes (read + written).

Example:
    >>> recon = reconcile(trace, Registry.default(), rtol=0.0)
    >>> recon.coverage["flops"]
    1.0
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from formula_db.accuracy import relative_error  # noqa: F401  (re-exported)
from formula_db.bind import make_roots
from formula_db.errors import FormulaError
from formula_db.registry import Registry
from lm_predictor.results import (BACKWARD_METRICS, METRICS, BackwardResult, CallResult,
                                  Reconciliation, Status)
from tracing.records import CallRecord, Trace

from formula_db.units import COUNTER_METRICS  # noqa: E402


def measured_of(call: CallRecord) -> dict[str, int]:
    """Measured metrics of a call: inclusive counters plus activation bytes."""
    values = call.inclusive.as_dict()
    values["activation_bytes"] = call.activation_bytes
    return values


def status_of(rel: dict[str, float | None], predicted: dict[str, Any],
              measured: dict[str, int], rtol: float) -> Status:
    if all(predicted[m] == measured[m] for m in METRICS):
        return "exact"
    if all(r is not None and r <= rtol for r in rel.values()):
        return "within_tolerance"
    return "mismatch"


def predict_call(call: CallRecord, registry: Registry, config: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a call's formula on the recorded call (raises FormulaError)."""
    roots = make_roots(call.attributes, call.inputs, call.kwargs, call.outputs, config)
    entry = registry.get(call.formula_key)
    params = registry.bind(entry.key, roots)
    return registry.evaluate_all(entry.key, params)


def reconcile(trace: Trace, registry: Registry, rtol: float = 0.0) -> Reconciliation:
    """Reconcile every call of `trace` against `registry`'s formulas."""
    results: dict[int, CallResult] = {}
    for call in sorted(trace.calls, key=lambda c: c.call_id, reverse=True):
        measured = measured_of(call)
        has_formula = registry.resolve_key(call.formula_key) is not None
        if has_formula:
            try:
                predicted = predict_call(call, registry, trace.config)
                error = None
            except FormulaError as exc:
                predicted, error = {m: None for m in METRICS}, str(exc)
            rel = {m: relative_error(predicted[m], measured[m]) for m in METRICS}
            status: Status = ("mismatch" if error else
                              status_of(rel, predicted, measured, rtol))
            results[call.call_id] = CallResult(call.call_id, call.formula_key, status, measured,
                                               predicted, rel, error=error)
            continue
        own = call.self_counters.as_dict()
        own["activation_bytes"] = call.activation_bytes
        predicted = dict(own)
        for child_id in call.children:
            child = results[child_id]
            for m in COUNTER_METRICS:
                value = child.predicted[m]
                predicted[m] = None if value is None or predicted[m] is None else predicted[m] + value
        rel = {m: relative_error(predicted[m], measured[m]) for m in METRICS}
        results[call.call_id] = CallResult(call.call_id, call.formula_key, "no_formula", measured,
                                           predicted, rel, uncovered=own)
    calls = [results[c.call_id] for c in trace.calls]
    backward_totals = None
    if trace.backward:
        backward_totals = _reconcile_backward(trace, registry, rtol, results)
    return Reconciliation(
        calls=calls,
        measured_totals=_totals(trace),
        predicted_totals=_predicted_totals(trace, results),
        coverage=_coverage(trace, results),
        peak_activation_bytes=trace.peak_activation_bytes,
        uncovered_classes=dict(Counter(c.class_name for c in trace.calls
                                       if results[c.call_id].status == "no_formula")),
        uncovered_ops=dict(trace.uncovered_ops),
        step_totals=trace.step_totals().as_dict() if trace.backward else None,
        backward_predicted_totals=backward_totals)


def _backward_status(predicted: dict[str, Any], measured: dict[str, int],
                     rel: dict[str, float | None], rtol: float) -> Status:
    if all(predicted[m] == measured[m] for m in BACKWARD_METRICS):
        return "exact"
    if all(r is not None and r <= rtol for r in rel.values()):
        return "within_tolerance"
    return "mismatch"


def _reconcile_backward(trace: Trace, registry: Registry, rtol: float,
                        results: dict[int, CallResult]) -> dict[str, Any]:
    """Fill `CallResult.backward` for every forward call; returns predicted backward totals."""
    for call in sorted(trace.calls, key=lambda c: c.call_id, reverse=True):
        if call.phase == "recompute":
            continue
        measured = call.backward_inclusive.as_dict()
        key = registry.resolve_key(call.formula_key)
        if key is not None and registry.get(key).backward is not None:
            error = None
            try:
                roots = make_roots(call.attributes, call.inputs, call.kwargs, call.outputs,
                                   trace.config)
                params = registry.bind(key, roots)
                predicted: dict[str, Any] = registry.evaluate_backward(key, params) or {}
            except FormulaError as exc:
                predicted, error = {m: None for m in BACKWARD_METRICS}, str(exc)
            rel = {m: relative_error(predicted[m], measured[m]) for m in BACKWARD_METRICS}
            status: Status = ("mismatch" if error else
                              _backward_status(predicted, measured, rel, rtol))
            results[call.call_id].backward = BackwardResult(status, measured, predicted, rel,
                                                            error)
            continue
        predicted = call.backward_self.as_dict()
        for child_id in call.children:
            child = results[child_id].backward
            if child is None:
                continue
            for m in BACKWARD_METRICS:
                value = child.predicted[m]
                predicted[m] = None if value is None or predicted[m] is None else predicted[m] + value
        rel = {m: relative_error(predicted[m], measured[m]) for m in BACKWARD_METRICS}
        results[call.call_id].backward = BackwardResult("no_formula", measured, predicted, rel)
    totals: dict[str, Any] = trace.outside_backward.as_dict()
    for m, v in trace.unattributed.as_dict().items():
        totals[m] += v
    for root in trace.roots():
        result = results[root.call_id].backward
        if result is None:
            continue
        for m in BACKWARD_METRICS:
            value = result.predicted[m]
            totals[m] = None if value is None or totals[m] is None else totals[m] + value
    return totals


def _totals(trace: Trace) -> dict[str, int]:
    totals = trace.totals.as_dict()
    totals["activation_bytes"] = sum(c.activation_bytes for c in trace.roots())
    return totals


def _predicted_totals(trace: Trace, results: dict[int, CallResult]) -> dict[str, Any]:
    totals: dict[str, Any] = {m: 0 for m in METRICS}
    for root in trace.roots():
        for m in METRICS:
            value = results[root.call_id].predicted[m]
            totals[m] = None if value is None or totals[m] is None else totals[m] + value
    outside = trace.outside.as_dict()
    for m in COUNTER_METRICS:
        if totals[m] is not None:
            totals[m] += outside[m]
    return totals


def _coverage(trace: Trace, results: dict[int, CallResult]) -> dict[str, float]:
    explained = {"flops": 0, "bytes": 0}
    stack = list(trace.roots())
    while stack:
        call = stack.pop()
        result = results[call.call_id]
        if result.status != "no_formula" and result.error is None:  # bound and evaluated
            explained["flops"] += call.inclusive.flops
            explained["bytes"] += call.inclusive.bytes_read + call.inclusive.bytes_written
        else:
            stack.extend(trace.children(call))
    total = trace.totals
    total_bytes = total.bytes_read + total.bytes_written
    return {"flops": explained["flops"] / total.flops if total.flops else 1.0,
            "bytes": explained["bytes"] / total_bytes if total_bytes else 1.0}
