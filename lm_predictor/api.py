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

import torch
import transformers

from formula_db.registry import Registry
from lm_predictor import __version__
from lm_predictor.models import (ModelError, build_model, check_fits, estimate_memory,
                                  resolve_config)
from lm_predictor.inputs import build_inputs
from lm_predictor.reconcile import reconcile
from lm_predictor.results import Reconciliation, RunMeta
from tracing import Trace, trace

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
Progress = Callable[[str], None]


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


def formulas_used(trace_: Trace, registry: Registry) -> dict[str, dict[str, Any]]:
    """Snapshot of every entry the run used (directly or through nested calls)."""
    keys = {registry.resolve_key(c.formula_key) for c in trace_.calls} - {None}
    todo, seen = list(keys), set()
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        todo.extend(registry.get(key).module_depends)
    return {k: {"layer": registry.source_of(k), **registry.get(k).model_dump(mode="json")}
            for k in sorted(seen)}


def run_trace(model: torch.nn.Module, inputs: dict[str, Any]) -> Trace:
    """One forward pass of `model(**inputs)` under inference mode, traced."""
    with torch.inference_mode(), trace(model) as t:
        model(**inputs)
    return t


def analyze(model_id: str, *, batch_size: int = 1, seq_len: int = 128,
            phase: Literal["prefill", "decode"] = "prefill", kv_len: int = 0,
            dtype: str = "float32", device: str = "meta", rtol: float = 0.0,
            counter: Literal["dispatch", "fvcore"] = "dispatch",
            db: str | os.PathLike[str] | None = "", registry: Registry | None = None,
            formulas: str | None = None, progress: Progress | None = None,
            fill_gaps: bool = False, hardware: str | None = None) -> AnalysisResult:
    """Trace, reconcile and (unless `db is None`) store one run. `db=""` uses the default file.

    `fill_gaps` runs the formula agent for every class without a formula, deepest first, and
    reconciles again (see `lm_predictor.agent_cmd.fill_gaps`); its messages go to `note`.
    `hardware` (a device of `hardware.catalog`) adds roofline time estimates per call
    (`estimates`), stored with the run."""
    say = progress or (lambda _msg: None)
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    target = None
    if hardware:
        from hardware.catalog import load_catalog

        target = load_catalog().get(hardware)
        target.matmul_peak(dtype)  # a device without this dtype fails before any work
    registry = registry or Registry.default(formulas)
    say(f"resolving {model_id}")
    resolved = resolve_config(model_id, hf_token=os.environ.get("HF_TOKEN") or None)
    if device != "meta":
        check_fits(estimate_memory(resolved.config, batch_size=batch_size, seq_len=seq_len,
                                   kv_len=kv_len, dtype=DTYPES[dtype]), device)
    say(f"building {model_id} on {device}")
    model = build_model(resolved.config, device=device, dtype=DTYPES[dtype])
    # no attention_mask on any device: an all-ones mask changes nothing but would make the
    # counted ops (mask construction, masked softmax) differ between meta and real devices
    inputs = build_inputs(model, resolved.config, batch_size=batch_size, seq_len=seq_len,
                          phase=phase, kv_len=kv_len, device=device, attention_mask=False)
    limit = getattr(resolved.config.get_text_config(), "max_position_embeddings", None)
    say("tracing one forward pass")
    try:
        t = run_trace(model, inputs)
    except (RuntimeError, IndexError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (f"; the model accepts at most {limit} positions"
                if limit and seq_len + kv_len > limit else "")
        raise ModelError(f"the forward pass of {model_id} failed at batch {batch_size}, seq "
                         f"{seq_len}, kv {kv_len}: {first}{hint}; nothing was stored") from None
    cross: list[Any] = []
    if counter == "fvcore":
        from lm_predictor.crosscheck import fvcore_cross_check

        say("cross-checking FLOPs with fvcore")
        cross = fvcore_cross_check(model, inputs, t)
    say("reconciling")
    recon = reconcile(t, registry, rtol)
    agent_notes: list[str] = []
    if fill_gaps and recon.uncovered_classes:
        from lm_predictor.agent_cmd import fill_gaps as run_fill_gaps

        say("filling formula gaps with the agent")
        filled = run_fill_gaps(t, registry, db=db, model_id=model_id, progress=say)
        registry, agent_notes = filled.registry, filled.notes
        recon = reconcile(t, registry, rtol)
    meta = RunMeta(model_id=model_id, config_hash=resolved.config_hash, phase=phase,
                   batch_size=batch_size, seq_len=1 if phase == "decode" else seq_len,
                   kv_len=kv_len, dtype=dtype, device=device,
                   counter="dispatch+fvcore" if counter == "fvcore" else "dispatch", rtol=rtol,
                   tool_version=__version__, torch_version=torch.__version__,
                   transformers_version=transformers.__version__)
    snapshot = formulas_used(t, registry)
    note = "; ".join([resolved.note] + agent_notes if resolved.note else agent_notes)
    if isinstance(limit, int) and meta.seq_len + kv_len > limit:
        note = (note + "; " if note else "") + (
            f"warning: {meta.seq_len + kv_len} positions exceed the model's "
            f"max_position_embeddings ({limit}); a real device would fail or extrapolate")
    estimates = None
    if target is not None:
        from hardware.roofline import estimate_trace

        say(f"estimating time on {target.name}")
        estimates = estimate_trace(t, target, dtype)
    run_id = None
    if db is not None:
        from lm_predictor.store import Store, db_path

        say("storing the run")
        run_id = Store(db_path(str(db) if db else None)).write_run(
            meta, t, recon, snapshot, estimates=estimates.rows() if estimates else None)
    return AnalysisResult(run_id, meta, t, recon, snapshot, note, cross, estimates)


def connect(db: str | os.PathLike[str] | None = None) -> Any:
    """A DuckDB connection to the run database, for notebooks."""
    from lm_predictor.store import connect as _connect

    return _connect(db)
