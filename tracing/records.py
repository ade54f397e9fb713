"""Plain-data results of a trace: additive counters, per-op statistics, one record per module call.

Nothing here touches tensors or hooks; these dataclasses are what the rest of LM-Predictor reads
(formula binds, reconciliation, the DuckDB store).

Semantics:
- `Counters` are additive: `flops` (matmul-class, from torch's flop registry), `vector_flops`
  (element-wise, reductions, normalisation, softmax; see `tracing.optable`), `bytes_read` and
  `bytes_written` (unfused, per aten op; see `tracing.costs`).
- A `CallRecord` is one call of one module. `self_counters` and `ops` hold what ran while this call
  was the innermost active module call; `inclusive` adds the children's `inclusive`.
- `Trace.outside` holds ops dispatched inside the `with` block but outside any module call
  (the pseudo-root); `Trace.totals` is the roots' inclusive sum plus `outside`: everything run
  in forward (with activation checkpointing this includes the recomputed calls, `phase ==
  'recompute'`).
- Training steps (`trace(..., backward=True)`, see `tracing.backward`): `backward_self` /
  `backward_ops` hold the backward ops of the autograd nodes this call's forward created,
  `backward_inclusive` adds the children's. `Trace.outside_backward` is the backward of nodes
  created outside any call (a loss computed after the model), `Trace.unattributed` that of
  nodes no call created. `Trace.step_totals()` gives forward, recompute, backward, measured
  (their sum) and unattributed.
- Summaries for people and notebooks (`total()`, `by_module()`, `by_class()`,
  `by_operator()`, `tree()`, short reprs, `by_path[...]`) are in `tracing.summary`.

Example:
    >>> c = Counters(flops=2); c.add(Counters(flops=3, bytes_read=8)); c.as_dict()
    {'flops': 5, 'vector_flops': 0, 'bytes_read': 8, 'bytes_written': 0}
"""
from __future__ import annotations

from dataclasses import dataclass, field

from formula_db.units import COUNTER_METRICS as METRICS  # noqa: E402  (per-op metrics)

from .summary import PathIndex, TraceViews, call_repr


@dataclass
class Counters:
    """Additive cost counters of a set of aten ops."""

    flops: int = 0
    vector_flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    def add(self, other: "Counters") -> None:
        for name in METRICS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in METRICS}


@dataclass
class OpStat:
    """How often one aten op (overload packet, e.g. 'aten.addmm') ran, and its summed counters."""

    count: int = 0
    flops: int = 0
    vector_flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    def add(self, counters: Counters, count: int = 1) -> None:
        self.count += count
        for name in METRICS:
            setattr(self, name, getattr(self, name) + getattr(counters, name))

    def counters(self) -> Counters:
        return Counters(**{name: getattr(self, name) for name in METRICS})


def add_op(ops: dict[str, OpStat], name: str, counters: Counters) -> None:
    """Add one execution of op `name` to a per-op table."""
    ops.setdefault(name, OpStat()).add(counters)


@dataclass(repr=False)
class CallRecord:
    """One module call: where it sits in the call tree, its described arguments, its costs.

    `inputs`, `kwargs` and `outputs` hold `formula_db.meta` descriptions, never tensors.
    `activation_bytes` and `peak_activation_bytes` are defined in `tracing.memory`.
    """

    call_id: int
    parent_call_id: int | None
    depth: int
    module_path: str
    class_name: str
    formula_key: str
    inputs: tuple
    kwargs: dict
    outputs: object
    attributes: dict
    self_counters: Counters = field(default_factory=Counters)
    inclusive: Counters = field(default_factory=Counters)
    ops: dict[str, OpStat] = field(default_factory=dict)
    activation_bytes: int = 0
    peak_activation_bytes: int = 0
    wall_time_s: float | None = None
    children: list[int] = field(default_factory=list)
    phase: str = "forward"  # 'recompute': re-run by activation checkpointing during backward
    backward_self: Counters = field(default_factory=Counters)
    backward_inclusive: Counters = field(default_factory=Counters)
    backward_ops: dict[str, OpStat] = field(default_factory=dict)
    saved_bytes: int = 0  # bytes this call (not its children) saved for backward

    def __repr__(self) -> str:
        return call_repr(self)


@dataclass
class StepTotals:
    """Totals of a traced training step; `measured` = forward + recompute + backward."""

    forward: Counters
    recompute: Counters
    backward: Counters
    unattributed: Counters

    @property
    def measured(self) -> Counters:
        total = Counters()
        for part in (self.forward, self.recompute, self.backward):
            total.add(part)
        return total

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"measured": self.measured.as_dict(), "forward": self.forward.as_dict(),
                "recompute": self.recompute.as_dict(), "backward": self.backward.as_dict(),
                "unattributed": self.unattributed.as_dict()}


@dataclass(repr=False)
class Trace(TraceViews):
    """Everything recorded by `tracing.trace`: the call list (index == call_id) and trace totals.

    Summaries (`tracing.summary`): `total()`, `get_total_flops()`, `by_module()`, `by_class()`,
    `by_operator()`, `tree(depth)`, a one-line repr; `by_path[path]` lists the calls at a path.
    """

    calls: list[CallRecord] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    uncovered_ops: dict[str, int] = field(default_factory=dict)
    weight_bytes: int = 0
    buffer_bytes: int = 0
    device: str = "cpu"
    peak_activation_bytes: int = 0
    outside: Counters = field(default_factory=Counters)
    outside_ops: dict[str, OpStat] = field(default_factory=dict)
    backward: bool = False
    attention_backward: str | None = None
    outside_backward: Counters = field(default_factory=Counters)
    outside_backward_ops: dict[str, OpStat] = field(default_factory=dict)
    unattributed: Counters = field(default_factory=Counters)
    unattributed_ops: dict[str, OpStat] = field(default_factory=dict)
    saved_activation_bytes: int = 0  # bytes saved for backward in forward (tracing.backward)

    def step_totals(self) -> StepTotals:
        """Forward (first pass, outside ops included), recompute, backward, unattributed."""
        forward, recompute, backward = Counters(), Counters(), Counters()
        for root in self.roots():
            (recompute if root.phase == "recompute" else forward).add(root.inclusive)
            backward.add(root.backward_inclusive)
        forward.add(self.outside)
        backward.add(self.outside_backward)
        backward.add(self.unattributed)
        unattributed = Counters()
        unattributed.add(self.unattributed)
        return StepTotals(forward, recompute, backward, unattributed)

    @property
    def totals(self) -> Counters:
        total = Counters()
        for root in self.roots():
            total.add(root.inclusive)
        total.add(self.outside)
        return total

    @property
    def by_path(self) -> PathIndex:
        """Module path -> its call records: `t.by_path['fc1'][0]` (KeyError for an unknown
        path); `t.by_path('fc1')` returns [] for one."""
        return PathIndex(self.calls)

    def roots(self) -> list[CallRecord]:
        return [c for c in self.calls if c.parent_call_id is None]

    def children(self, call: CallRecord) -> list[CallRecord]:
        return [self.calls[i] for i in call.children]

