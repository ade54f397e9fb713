"""Structured results of an analysis run: run metadata, per-call reconciliation, totals.

These dataclasses connect the stages: `reconcile.py` produces them from a `tracing.Trace` and
the formula registry, `store.py` writes them to DuckDB, `report.py` renders them.

Metrics (`METRICS`): flops, vector_flops, bytes_read, bytes_written (inclusive of children) and
activation_bytes (bytes of tensors created by the call and alive when it returns).
Statuses: `exact` (every metric equal), `within_tolerance` (all within `rtol`), `mismatch`,
`no_formula` (no entry for the class: predicted as the sum of the children's predictions plus
the call's own measured ops, which are reported as uncovered).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from formula_db.units import METRICS  # noqa: F401  (re-exported: the one metric vocabulary)

Status = Literal["exact", "within_tolerance", "mismatch", "no_formula"]
BACKWARD_METRICS: tuple[str, ...] = ("flops", "vector_flops", "bytes_read", "bytes_written")


@dataclass
class RunMeta:
    """What was run, how: one row of the `runs` table."""

    model_id: str
    config_hash: str
    phase: Literal["prefill", "decode", "train"]
    batch_size: int
    seq_len: int
    kv_len: int
    dtype: str
    device: str
    counter: str = "dispatch"
    rtol: float = 0.0
    tool_version: str = ""
    torch_version: str = ""
    transformers_version: str = ""


@dataclass
class BackwardResult:
    """Predicted versus measured backward cost of one call (training traces): measured is the
    backward of the autograd nodes the call and its children created; a call whose formula has
    no `backward` block (or no formula) is predicted as its children's predictions plus its own
    measured backward ops, status `no_formula`."""

    status: Status
    measured: dict[str, int]
    predicted: dict[str, int | float | None]
    rel_error: dict[str, float | None]
    error: str | None = None


@dataclass
class CallResult:
    """Predicted versus measured for one module call."""

    call_id: int
    formula_key: str
    status: Status
    measured: dict[str, int]
    predicted: dict[str, int | float | None]
    rel_error: dict[str, float | None]
    uncovered: dict[str, int] = field(default_factory=dict)  # own ops no formula explains
    error: str | None = None  # why a formula could not be evaluated, if it could not
    backward: BackwardResult | None = None  # training traces only (not for recomputed calls)


@dataclass
class Reconciliation:
    """All calls of a trace reconciled, with the model totals and formula coverage."""

    calls: list[CallResult]
    measured_totals: dict[str, int]
    predicted_totals: dict[str, int | float]
    coverage: dict[str, float]  # share of measured flops/bytes explained by formulas
    peak_activation_bytes: int = 0
    uncovered_classes: dict[str, int] = field(default_factory=dict)  # class -> calls
    uncovered_ops: dict[str, int] = field(default_factory=dict)
    # training traces: tracing.StepTotals.as_dict() (measured/forward/recompute/backward/
    # unattributed) and the predicted backward totals (roots' predictions + outside backward)
    step_totals: dict[str, dict[str, int]] | None = None
    backward_predicted_totals: dict[str, int | float | None] | None = None
