"""Checking a candidate formula entry against recorded calls: the heart of the `reconcile` tool.

`check_entry(text, target, calls, registry, rtol)` takes the entry as JSON text (as an agent
submits it) and answers with a `CheckReport`, in stages, stopping at the first that fails:
1. json     — the text parses as one JSON object (at most `MAX_ENTRY_CHARS` characters);
2. schema   — it validates as `schema.FormulaEntry`: every template and bind parses in the safe
              language (no names, attribute access, subscripts or calls outside the whitelist in
              templates; no `_private` names anywhere; length and nesting limits), parameters
              are declared, `module_depends` equals the keys called;
3. target   — its `full_class_name` is the class being worked on (no other key can be written);
4. registry — on top of the current registry, every `{key}` it calls exists with a matching
              argument count and no call cycle runs through it;
5. evaluate — on every recorded call: bind the parameters (`bind.make_roots` over the recorded
              data), evaluate the five metrics exactly, compare with the measured values.
A call passes when every metric's relative error |p - m| / m is <= `rtol` (0 when both are 0;
an infinite error when m == 0 != p). The entry passes when every call does.

Per op: the measured per-aten-op counters (inclusive of children) are reported beside the
prediction; a breakdown item named after an aten op without its prefix (`gelu` for
`aten.gelu`) is paired with that op, the other items are listed on their own.

Example:
    >>> report = check_entry(text, "my_pkg.ScaledGELU", calls, Registry.default())
    >>> report.ok, report.stage, report.discrepancy()
    (False, 'evaluate', 'call proj_gelu: vector_flops predicted 192, measured 288 (rel 0.333)')
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from pydantic import ValidationError

from formula_db.bind import make_roots
from formula_db.errors import FormulaError
from formula_db.naming import key_for
from formula_db.registry import Layer, Registry
from formula_db.accuracy import relative_error
from formula_db.schema import METRICS, FormulaDatabase, FormulaEntry

from .calls import RecordedCall

MAX_ENTRY_CHARS = 64_000
Stage = Literal["json", "schema", "target", "registry", "evaluate"]


def jsonable(value: Any) -> Any:
    """Exact values for JSON: ints stay ints, fractions become 'a/b' strings."""
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    return value


@dataclass
class CallCheck:
    """Predicted versus measured on one recorded call."""

    module_path: str
    count: int
    params: dict[str, Any] = field(default_factory=dict)
    predicted: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, int] = field(default_factory=dict)
    rel_error: dict[str, float | None] = field(default_factory=dict)
    ops: list[dict[str, Any]] = field(default_factory=list)
    passed: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"module_path": self.module_path or "(root)", "count": self.count,
                "passed": self.passed, "error": self.error, "params": self.params,
                "metrics": {m: {"predicted": jsonable(self.predicted.get(m)),
                                "measured": self.measured.get(m),
                                "rel_error": _rel_json(self.rel_error, m)}
                            for m in METRICS},
                "ops": self.ops}


@dataclass
class CheckReport:
    """The outcome of checking one candidate entry."""

    ok: bool
    stage: Stage | None = None  # where it failed; None when it passed
    error: str | None = None
    entry: FormulaEntry | None = None
    calls: list[CallCheck] = field(default_factory=list)
    rtol: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "failed_stage": self.stage, "error": self.error,
                "rtol": self.rtol, "calls_passed": sum(c.passed for c in self.calls),
                "calls_total": len(self.calls), "calls": [c.to_json() for c in self.calls]}

    def discrepancy(self) -> str:
        """One line per failing call naming the metrics that miss (or the refusal)."""
        if self.ok:
            return ""
        if self.stage != "evaluate":
            return f"{self.stage}: {self.error}"
        lines = []
        for call in self.calls:
            if call.passed:
                continue
            where = call.module_path or "(root)"
            if call.error:
                lines.append(f"call {where}: {call.error}")
                continue
            misses = [f"{m} predicted {jsonable(call.predicted[m])}, measured {call.measured[m]}"
                      f" (rel {_rel_text(call.rel_error[m])})" for m in METRICS
                      if call.rel_error[m] is None or call.rel_error[m] > self.rtol]
            lines.append(f"call {where}: " + "; ".join(misses))
        return "\n".join(lines)


def _rel_json(rel: dict[str, float | None], metric: str) -> float | str | None:
    if metric not in rel:
        return None  # not evaluated
    return "inf" if rel[metric] is None else rel[metric]


def _rel_text(rel: float | None) -> str:
    return "inf" if rel is None else f"{rel:.3g}"


def _first_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def with_candidate(registry: Registry, entry: FormulaEntry) -> Registry:
    """`registry` with `entry` added as the top layer (overriding an entry with its key)."""
    layer = Layer("candidate", None, FormulaDatabase(entries={entry.key: entry}))
    return Registry(list(registry.layers) + [layer])


def registry_problems(registry: Registry, key: str) -> list[str]:
    """Problems of the whole registry that involve `key` (unknown callees, arity, cycles)."""
    problems = [p for p in registry.check() if key in p]
    return problems


def check_call(registry: Registry, key: str, call: RecordedCall, rtol: float) -> CallCheck:
    """Bind, evaluate and compare the entry on one recorded call."""
    result = CallCheck(call.module_path, call.count, measured=dict(call.measured))
    roots = make_roots(call.attributes, call.inputs, call.kwargs, call.outputs, call.config)
    try:
        params = registry.bind(key, roots)
        result.params = {k: jsonable(v) for k, v in params.items()}
        result.predicted = registry.evaluate_all(key, params)
        parts = registry.breakdown(key, params)
    except (FormulaError, ArithmeticError, ValueError, TypeError, RecursionError) as exc:
        result.error = " ".join(str(exc).split()) or type(exc).__name__
        return result
    result.rel_error = {m: relative_error(result.predicted[m], call.measured[m]) for m in METRICS}
    result.passed = all(r is not None and r <= rtol for r in result.rel_error.values())
    by_name = {name: values for name, _kind, values in parts}
    for op, stat in sorted(call.ops.items()):
        row: dict[str, Any] = {"op": op, "measured": dict(stat)}
        item = op if op in by_name else op.removeprefix("aten.")
        if item in by_name:
            row["predicted"] = {m: jsonable(v) for m, v in by_name.pop(item).items()}
        result.ops.append(row)
    for name, values in by_name.items():
        result.ops.append({"breakdown_item": name,
                           "predicted": {m: jsonable(v) for m, v in values.items()}})
    return result


def check_entry(text: str, target: str, calls: list[RecordedCall], registry: Registry,
                rtol: float = 0.0) -> CheckReport:
    """Validate `text` as the entry of class `target` and evaluate it on `calls`."""
    if len(text) > MAX_ENTRY_CHARS:
        return CheckReport(False, "json", f"entry is {len(text)} characters; the limit is "
                           f"{MAX_ENTRY_CHARS}", rtol=rtol)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return CheckReport(False, "json", f"not valid JSON: {exc}", rtol=rtol)
    if not isinstance(data, dict):
        return CheckReport(False, "json", "the entry must be one JSON object", rtol=rtol)
    try:
        entry = FormulaEntry.model_validate(data)
    except ValidationError as exc:
        return CheckReport(False, "schema", _first_error(exc), rtol=rtol)
    except (FormulaError, RecursionError) as exc:
        return CheckReport(False, "schema", str(exc) or type(exc).__name__, rtol=rtol)
    dotted = [item.name for item in entry.breakdown if "." in item.name]
    if dotted:
        return CheckReport(False, "schema", f"breakdown item names may not contain '.' "
                           f"({', '.join(dotted)}); name an item after its aten op without the "
                           f"prefix ('gelu' for aten.gelu)", entry, rtol=rtol)
    if entry.key != key_for(target):
        return CheckReport(False, "target", f"full_class_name must be {target!r} (the class being "
                           f"analysed), got {entry.full_class_name!r}", entry, rtol=rtol)
    candidate = with_candidate(registry, entry)
    problems = registry_problems(candidate, entry.key)
    if problems:
        return CheckReport(False, "registry", "; ".join(problems), entry, rtol=rtol)
    if not calls:
        return CheckReport(False, "evaluate", "no recorded calls to reconcile against", entry,
                           rtol=rtol)
    checks = [check_call(candidate, entry.key, call, rtol) for call in calls]
    ok = all(c.passed for c in checks)
    return CheckReport(ok, None if ok else "evaluate", None, entry, checks, rtol)
