"""Recorded calls of the class the agent writes a formula for, as plain data.

A `RecordedCall` is what the agent's `reconcile` tool evaluates a candidate entry against: the
described inputs, kwargs and output (`formula_db.meta`), the module's plain attributes, the
model config, the measured metrics (inclusive of children, activation bytes included) and the
per-aten-op counters inclusive of children. The formula layer never imports `tracing`: the
caller converts its trace records (see `lm_predictor.agent_cmd.recorded_calls`).

`distinct(calls)` merges calls that would bind and measure identically (the twelve identical
layers of a model), keeping the first path and a count, so the prompt and the tool reports stay
short; `MAX_CALLS` bounds how many distinct calls are kept (the first ones in call order).

Example:
    >>> call = RecordedCall("mlp", (TensorMeta((2, 8), "float32", "cpu", 4),), {},
    ...                     TensorMeta((2, 8), "float32", "cpu", 4), {"training": False}, {},
    ...                     {"flops": 256, ...}, {"aten.mm": {"count": 1, "flops": 256, ...}})
    >>> call.to_json()["inputs"][0]["shape"]
    [2, 8]
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from formula_db.meta import Described, TensorMeta, ValueSummary

MAX_CALLS = 12
POSITIONS = frozenset({"list_index", "block_index"})  # attributes taken from the module path


@dataclass(frozen=True)
class ChildCall:
    """A direct child call: its path, class, formula key and measured metrics."""

    module_path: str
    class_name: str
    formula_key: str
    has_formula: bool
    measured: dict[str, int]


@dataclass(frozen=True)
class RecordedCall:
    """One traced call of the target class (plain data; no tensors)."""

    module_path: str
    inputs: tuple[Described, ...]
    kwargs: dict[str, Described]
    outputs: Described
    attributes: dict[str, Any]
    config: dict[str, Any]
    measured: dict[str, int]
    ops: dict[str, dict[str, int]]
    children: tuple[ChildCall, ...] = ()
    count: int = 1
    depth: int = 0

    def signature(self) -> str:
        """What makes two calls interchangeable for a formula (path, count and the positions
        derived from the path, `list_index` / `block_index`, excluded: layers that cost the
        same merge)."""
        attrs = sorted((k, v) for k, v in self.attributes.items() if k not in POSITIONS)
        return repr((self.inputs, sorted(self.kwargs.items()), self.outputs, attrs,
                     sorted(self.measured.items())))

    def to_json(self) -> dict[str, Any]:
        """JSON-safe view for prompts and tool reports."""
        return {"module_path": self.module_path or "(root)", "count": self.count,
                "inputs": [describe_json(v) for v in self.inputs],
                "kwargs": {k: describe_json(v) for k, v in self.kwargs.items()},
                "output": describe_json(self.outputs),
                "attributes": {k: list(v) if isinstance(v, tuple) else v
                               for k, v in self.attributes.items()},
                "measured": dict(self.measured),
                "ops": {op: dict(stat) for op, stat in sorted(self.ops.items())},
                "children": [{"module_path": c.module_path, "class": c.class_name,
                              "formula_key": c.formula_key, "has_formula": c.has_formula,
                              "measured": dict(c.measured)} for c in self.children]}


def describe_json(value: Described) -> Any:
    """A described value as JSON (tensors as shape/dtype/itemsize)."""
    if isinstance(value, (TensorMeta, ValueSummary)):
        return value.to_json()
    if isinstance(value, tuple):
        return [describe_json(v) for v in value]
    return repr(value)


def distinct(calls: list[RecordedCall], limit: int = MAX_CALLS) -> list[RecordedCall]:
    """Calls with identical signatures merged (first path kept, `count` summed), at most
    `limit` of them in first-seen order."""
    merged: dict[str, RecordedCall] = {}
    for call in calls:
        key = call.signature()
        seen = merged.get(key)
        merged[key] = call if seen is None else replace(seen, count=seen.count + call.count)
    return list(merged.values())[:limit]

