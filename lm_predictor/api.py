"""The Python API: `trace`, `analyze` and `connect`.

`analyze` is the product's main job in one call: resolve the model config (preset, local file or
hub), build the model with `from_config` on the chosen device (`meta` by default: no weights),
build inputs for the phase, trace one forward pass under `torch.inference_mode`, reconcile every
call against the formula registry and store the run in DuckDB. Given a `torch.nn.Module` and
example inputs instead of a model id, it traces and reconciles that module with those inputs
(`run.trace_module`): the run is named after the class, in the module's own dtype and device.

Example:
    >>> import lm_predictor
    >>> result = lm_predictor.analyze("gpt2", batch_size=2, seq_len=128, db=None)
    >>> result.recon.measured_totals["flops"]
    >>> mine = lm_predictor.analyze(my_module, args=(x,), db=None)       # your own module
    >>> print(mine.trace.tree(depth=2))
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from formula_db.registry import Registry
from lm_predictor.results import Reconciliation, RunMeta
from lm_predictor.errors import ModelError
from lm_predictor.run import (RunSpec, formulas_used, forward_traced, rereconcile, store_run,
                              trace_module, trace_run)
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
    kernel_estimates: Any = None  # hardware.kernels.KernelEstimates (kernel model, totals)
    step_estimate: Any = None  # phase train: hardware.roofline.Estimate of the whole step
    coverage: Any = None  # lm_predictor.coverage.CoverageReport when classes were covered
    parameters: int | None = None  # parameters of the model (tied tensors counted once)
    db: str | None = None  # the run database the run was stored in (None: not stored)
    trace_method: str = ""  # the device, or the fallback that traced it (lm_predictor.fallback)


def _backward_missing(trace: Trace, recon: Reconciliation, registry: Registry) -> bool:
    """A training run with a call whose transferred or derived entry has no backward block
    (covered forward-only by an earlier run): covering again derives it."""
    if recon.step_totals is None:
        return False
    for call in trace.calls:
        key = registry.resolve_key(call.formula_key)
        if key is not None and registry.get(key).backward is None and \
                registry.get(key).validation.source in ("transferred", "derived"):
            return True
    return False


def analyze(model_id: Any, *, inputs: dict[str, Any] | None = None, args: tuple = (),
            batch_size: int | None = None, seq_len: int | None = None,
            phase: Literal["prefill", "decode", "train"] = "prefill", kv_len: int = 0,
            dtype: str | None = None, device: str = "meta", rtol: float = 0.0,
            counter: Literal["dispatch", "fvcore"] = "dispatch",
            db: str | os.PathLike[str] | None = "", registry: Registry | None = None,
            formulas: str | None = None, progress: Progress | None = None,
            fill_gaps: bool = False, hardware: str | None = None,
            kernels: Literal["eager", "fused"] | None = None,
            logits: Literal["last", "all"] | None = None,
            attention_backward: Literal["flash", "math"] | None = None,
            checkpointing: bool = False, cover: bool = True,
            loss_fn: Callable[[Any], Any] | None = None) -> AnalysisResult:
    """Trace, reconcile and (unless `db is None`) store one run. `db=""` uses the default file.

    `model_id`: a preset, local config or hub id (batch 1 and 128 tokens unless given), or a
    `torch.nn.Module` with example `inputs` (by name) and/or positional `args`: the module is
    traced as it is (its dtype and device; `dtype` and `device` are for model ids), batch and
    sequence read from the inputs unless given (`run.input_shape`), named after its class.
    Inputs are unpadded: an `attention_mask` with zeros is refused unless `rtol` > 0. With
    `phase="train"` the step's loss is the output's `.loss` or `loss_fn(output)`.

    `fill_gaps` runs the formula agent for every class without a formula, deepest first, and
    reconciles again (see `lm_predictor.agent.fill_gaps`); its messages go to `note`.
    `hardware` (a device of `hardware.catalog`) adds roofline time estimates per call
    (`estimates`), stored with the run, under a kernel model (`kernels`: `eager`, what the
    trace measures, or `fused`, FlashAttention-style attention, fused norms and activations, KV
    appended in place; default: fused on accelerators, eager on CPUs) and `logits` (`last`:
    generation prefill keeps the last position's logits, fused's default; `all`).
    `cover` (default) fills classes without a formula before reporting: an entry of another
    architecture that reconciles exactly is transferred, else one is derived from meta traces
    (`lm_predictor.coverage`), stored in the user formula database; the agent (`fill_gaps`)
    is the last resort. `phase="train"` traces one training step (forward with labels, loss, backward; every
    backward op attributed to the module whose forward produced it) with `attention_backward`
    (flash by default, as CPUs and GPUs run it; math) and optional activation `checkpointing`."""
    say = progress or (lambda _msg: None)
    own = not isinstance(model_id, str)
    if own and counter == "fvcore":
        raise ModelError("counter='fvcore' checks model ids; for your own module call "
                         "tracing.fvcore_flops_by_module(model, args)")
    if not own and (inputs is not None or args):
        raise ModelError(f"inputs/args are for a torch.nn.Module; {model_id!r} is a model id, "
                         f"whose inputs are built from batch_size, seq_len and phase")
    config = None
    resolved_note = ""
    if dtype is None and not own:  # the dtype the config is published in, else float32
        from formula_db.units import config_dtype_name
        from lm_predictor.run import resolve

        say(f"resolving {model_id}")
        resolved = resolve(RunSpec(model_id))
        config, resolved_note = resolved.config, resolved.note
        dtype = config_dtype_name(config)
    target = None
    if hardware:
        from hardware.catalog import load_catalog

        target = load_catalog().get(hardware)
        if not own:
            target.matmul_peak(dtype)  # a device without this dtype fails before any work
    registry = registry or Registry.default(formulas)
    if own:
        out = trace_module(model_id, registry, args=args, inputs=inputs, phase=phase,
                           batch_size=batch_size, seq_len=seq_len, kv_len=kv_len, rtol=rtol,
                           attention_backward=attention_backward, checkpointing=checkpointing,
                           loss_fn=loss_fn, progress=say)
        dtype = out.spec.dtype
        if target is not None:
            target.matmul_peak(dtype)
    else:
        spec = RunSpec(model_id, batch_size=1 if batch_size is None else batch_size,
                       seq_len=128 if seq_len is None else seq_len, phase=phase, kv_len=kv_len,
                       dtype=dtype, device=device, rtol=rtol,
                       counter="dispatch+fvcore" if counter == "fvcore" else "dispatch",
                       attention_backward=attention_backward, checkpointing=checkpointing)
        out = trace_run(spec, registry, config=config, progress=say)
        if resolved_note:
            out.note = "; ".join(n for n in (resolved_note, out.note) if n)
    cross: list[Any] = []
    if counter == "fvcore":
        from lm_predictor.crosscheck import fvcore_cross_check

        say("cross-checking FLOPs with fvcore")
        cross = fvcore_cross_check(out.model, out.inputs, out.trace)
    notes = [out.note] if out.note else []
    report = None
    if cover and out.config is not None and out.recon is not None and (
            out.recon.uncovered_classes or any(c.error for c in out.recon.calls)
            or _backward_missing(out.trace, out.recon, registry)):
        from lm_predictor.coverage import cover_model

        say("covering classes without a formula (transfer, then derivation)")
        try:
            report = cover_model(_cover_config(out), registry, user_path=formulas,
                                 **_cover_sampling(out))
        except Exception as exc:  # noqa: BLE001 - sampling traces on meta can fail for any model
            notes.append(f"formulas not derived: {' '.join(str(exc).split())[:200]}")
        else:
            registry = Registry.default(formulas)
            out = rereconcile(out, registry)
            if report.notes:
                notes.append(f"covered from {report.sampled} samples: {'; '.join(report.notes)}")
    if fill_gaps and out.recon is not None and out.recon.uncovered_classes:
        from lm_predictor.agent import fill_gaps as run_fill_gaps

        say("filling formula gaps with the agent")
        filled = run_fill_gaps(out.trace, registry, db=db, model_id=None if own else model_id,
                               progress=say)
        notes += filled.notes
        out = rereconcile(out, filled.registry)
    estimates = kernel_estimates = step_estimate = None
    if target is not None and phase == "train":
        from hardware.roofline import estimate_totals

        say(f"estimating the training step on {target.name}")
        step = out.trace.step_totals().measured
        step_estimate = estimate_totals(step.flops, step.vector_flops, step.bytes_read,
                                        step.bytes_written, target, dtype)
    elif target is not None:
        from hardware.kernels import estimate_kernels

        say(f"estimating time on {target.name}")
        kernel_estimates = estimate_kernels(out.trace, target, dtype, kernels, logits)
        estimates = kernel_estimates.trace_estimate
    run_id, stored_in = None, None
    if db is not None:
        from lm_predictor.settings import db_path

        say("storing the run")
        run_id = store_run(out, db or None, estimates.rows() if estimates else None)
        stored_in = str(db_path(db or None))
    assert out.recon is not None
    from lm_predictor.models.build import count_parameters

    return AnalysisResult(run_id, out.meta, out.trace, out.recon, out.formulas, "; ".join(notes),
                          cross, estimates, kernel_estimates, step_estimate, report,
                          count_parameters(out.model), stored_in, out.method)


def _cover_config(out: Any) -> Any:
    """The config covering samples: the one traced (cut to the traced depth under
    `cpu-truncated`, so derived entries hold for the trace they are reconciled with)."""
    if out.method == "cpu-truncated":
        from lm_predictor.fallback import TRUNCATE_LAYERS, truncated_config

        return truncated_config(out.config, TRUNCATE_LAYERS)
    return out.config


def _cover_sampling(out: Any) -> dict[str, Any]:
    """How `cover_model` samples the run's model (`lm_predictor.sampling`): in its dtype, the
    class built (a meta model is reused), on CPU where a meta run needed CPU (a run on a real
    device samples on meta, which falls back to CPU by itself when it must)."""
    import transformers

    from lm_predictor.run import torch_dtype

    cls = type(out.model)
    known = getattr(transformers, cls.__name__, None) is cls
    on_meta = next((p.is_meta for p in out.model.parameters()), False)
    method = out.method if out.spec.device == "meta" and out.method else "meta"
    return {"dtype": torch_dtype(out.spec.dtype), "method": method,
            "model": out.model if known and on_meta and out.method != "cpu-truncated" else None,
            "architecture": cls.__name__ if known else None}


def connect(db: str | os.PathLike[str] | None = None) -> Any:
    """A DuckDB connection to the run database, for notebooks (close it when done)."""
    from lm_predictor.store import connect as _connect

    return _connect(db)
