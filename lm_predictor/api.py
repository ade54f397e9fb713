"""The Python API: `trace`, `analyze` and `connect`.

`analyze` is the product's main job in one call: resolve the model config (preset, local file or
hub), build the model with `from_config` on the chosen device (`meta` by default: no weights),
build inputs for the phase, trace one forward pass under `torch.inference_mode`, reconcile every
call against the formula registry and store the run in DuckDB.

Example:
    >>> import lm_predictor
    >>> result = lm_predictor.analyze("gpt2", batch_size=2, seq_len=128, db=None)
    >>> result.recon.measured_totals["flops"]
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from formula_db.registry import Registry
from lm_predictor.results import Reconciliation, RunMeta
from lm_predictor.run import RunSpec, formulas_used, forward_traced, rereconcile, store_run, trace_run
from tracing import Trace

__all__ = ["AnalysisResult", "analyze", "connect", "formulas_used", "run_trace"]
Progress = Callable[[str], None]
run_trace = forward_traced  # the earlier public name of one traced forward pass


@dataclass
class AnalysisResult:
    """A traced, reconciled (and possibly stored) run."""

    run_id: str | None
    meta: RunMeta
    trace: Trace
    recon: Reconciliation
    formulas: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    cross_check: list[Any] = field(default_factory=list)  # crosscheck.CrossCheckRow with fvcore
    estimates: Any = None  # hardware.roofline.TraceEstimate when analyzed with `hardware`
    parameters: int | None = None  # parameters of the model (tied tensors counted once)
    db: str | None = None  # the run database the run was stored in (None: not stored)


def analyze(model_id: str, *, batch_size: int = 1, seq_len: int = 128,
            phase: Literal["prefill", "decode"] = "prefill", kv_len: int = 0,
            dtype: str = "float32", device: str = "meta", rtol: float = 0.0,
            counter: Literal["dispatch", "fvcore"] = "dispatch",
            db: str | os.PathLike[str] | None = "", registry: Registry | None = None,
            formulas: str | None = None, progress: Progress | None = None,
            fill_gaps: bool = False, hardware: str | None = None) -> AnalysisResult:
    """Trace, reconcile and (unless `db is None`) store one run. `db=""` uses the default file.

    `fill_gaps` runs the formula agent for every class without a formula, deepest first, and
    reconciles again (see `lm_predictor.agent.fill_gaps`); its messages go to `note`.
    `hardware` (a device of `hardware.catalog`) adds roofline time estimates per call
    (`estimates`), stored with the run."""
    say = progress or (lambda _msg: None)
    spec = RunSpec(model_id, batch_size=batch_size, seq_len=seq_len, phase=phase, kv_len=kv_len,
                   dtype=dtype, device=device, rtol=rtol,
                   counter="dispatch+fvcore" if counter == "fvcore" else "dispatch")
    target = None
    if hardware:
        from hardware.catalog import load_catalog

        target = load_catalog().get(hardware)
        target.matmul_peak(dtype)  # a device without this dtype fails before any work
    registry = registry or Registry.default(formulas)
    out = trace_run(spec, registry, progress=say)
    cross: list[Any] = []
    if counter == "fvcore":
        from lm_predictor.crosscheck import fvcore_cross_check

        say("cross-checking FLOPs with fvcore")
        cross = fvcore_cross_check(out.model, out.inputs, out.trace)
    notes = [out.note] if out.note else []
    if fill_gaps and out.recon is not None and out.recon.uncovered_classes:
        from lm_predictor.agent import fill_gaps as run_fill_gaps

        say("filling formula gaps with the agent")
        filled = run_fill_gaps(out.trace, registry, db=db, model_id=model_id, progress=say)
        notes += filled.notes
        out = rereconcile(out, filled.registry)
    estimates = None
    if target is not None:
        from hardware.roofline import estimate_trace

        say(f"estimating time on {target.name}")
        estimates = estimate_trace(out.trace, target, dtype)
    run_id, stored_in = None, None
    if db is not None:
        from lm_predictor.settings import db_path

        say("storing the run")
        run_id = store_run(out, db or None, estimates.rows() if estimates else None)
        stored_in = str(db_path(db or None))
    assert out.recon is not None
    from lm_predictor.models.build import count_parameters

    return AnalysisResult(run_id, out.meta, out.trace, out.recon, out.formulas, "; ".join(notes),
                          cross, estimates, count_parameters(out.model), stored_in)


def connect(db: str | os.PathLike[str] | None = None) -> Any:
    """A DuckDB connection to the run database, for notebooks (close it when done)."""
    from lm_predictor.store import connect as _connect

    return _connect(db)
