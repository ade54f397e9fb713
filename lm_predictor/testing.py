"""pytest helpers for formula suites: reconcile a model exactly, predict it, guard against regressions.

Use them in your own tests:

    from lm_predictor.testing import assert_reconciles, assert_predicts, assert_no_regression

    def test_my_model_reconciles():
        assert_reconciles(my_config, shapes=[(1, 3), (3, 5), (5, 7)], rtol=0.0)

`assert_reconciles` traces the model (built from a transformers config on `meta`, or a given
module with inputs) at each shape and fails with a readable list of every call whose prediction
differs from measurement beyond `rtol` (module path, formula key, metric, measured, predicted),
and of every class without a formula when `require_formulas` is set. `assert_predicts` compares
trace-free prediction with a fresh trace. `assert_no_regression` compares a run's per-formula
accuracy with a stored baseline run in DuckDB.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from formula_db.registry import Registry
from formula_db.units import METRICS
from lm_predictor.reconcile import reconcile
from lm_predictor.results import Reconciliation
from lm_predictor.run import RunSpec, trace_run
from tracing import Trace

Shape = tuple[int, int] | tuple[int, int, str, int]  # (batch, seq) or (batch, seq, phase, kv)


@dataclass
class ShapeResult:
    """One traced and reconciled shape."""

    batch: int
    seq_len: int
    phase: str
    kv_len: int
    trace: Trace
    recon: Reconciliation


def _shape(shape: Shape) -> tuple[int, int, str, int]:
    if len(shape) == 2:
        return shape[0], shape[1], "prefill", 0
    b, s, phase, kv = shape  # type: ignore[misc]
    return b, s, phase, kv


def trace_config(config: Any, batch: int, seq_len: int, phase: str = "prefill", kv_len: int = 0,
                 device: str = "meta", dtype: torch.dtype | str = torch.float32,
                 model: torch.nn.Module | None = None) -> Trace:
    """Trace one forward pass of a model built from `config` through the pipeline
    (`lm_predictor.run.trace_run`, as `analyze`), without reconciling."""
    spec = RunSpec(getattr(config, "model_type", "model"), batch_size=batch, seq_len=seq_len,
                   phase=phase, kv_len=kv_len,  # type: ignore[arg-type]
                   dtype=str(dtype).removeprefix("torch."), device=device)
    return trace_run(spec, None, config=config, model=model).trace


def mismatches(t: Trace, recon: Reconciliation, metrics: Sequence[str] = METRICS,
               rtol: float = 0.0) -> list[str]:
    """Readable lines for every call with a formula whose metrics differ beyond rtol."""
    lines: list[str] = []
    for result in recon.calls:
        if result.status == "no_formula":
            continue
        call = t.calls[result.call_id]
        if result.error:
            lines.append(f"{call.module_path or '(model)'} [{result.formula_key}]: {result.error}")
            continue
        for m in metrics:
            measured, predicted = result.measured[m], result.predicted[m]
            rel = result.rel_error[m]
            if predicted != measured and (rel is None or rel > rtol):
                lines.append(f"{call.module_path or '(model)'} [{result.formula_key}] {m}: "
                             f"measured {measured}, predicted {predicted}")
    return lines


def assert_reconciles(config: Any, shapes: Iterable[Shape], *, rtol: float = 0.0,
                      metrics: Sequence[str] = METRICS, registry: Registry | None = None,
                      require_formulas: bool = True, device: str = "meta",
                      exempt: dict[str, Sequence[str]] | None = None,
                      max_lines: int = 30, dtype: str = "float32") -> list[ShapeResult]:
    """Trace `config` at each shape and assert every call reconciles within `rtol`.

    `exempt` maps a formula key to metrics not checked for it (documented exceptions).
    With `require_formulas`, every called class must have a formula. `dtype` is the model's
    dtype (float32, bfloat16, float16).
    """
    from lm_predictor.models.build import build_model
    from lm_predictor.run import torch_dtype

    registry = registry or Registry.default(include_user=False)
    model = build_model(config, device=device, dtype=torch_dtype(dtype))
    results: list[ShapeResult] = []
    problems: list[str] = []
    for shape in shapes:
        b, s, phase, kv = _shape(shape)
        t = trace_config(config, b, s, phase, kv, device=device, dtype=dtype, model=model)
        recon = reconcile(t, registry, rtol)
        results.append(ShapeResult(b, s, phase, kv, t, recon))
        where = f"batch {b}, seq {s}, {phase}" + (f", kv {kv}" if kv else "")
        for line in mismatches(t, recon, metrics, rtol):
            key = line.split("[", 1)[1].split("]", 1)[0] if "[" in line else ""
            metric = line.rsplit("]", 1)[-1].split(":", 1)[0].strip()
            if exempt and metric in exempt.get(key, ()):
                continue
            problems.append(f"{where}: {line}")
        if require_formulas and recon.uncovered_classes:
            problems.append(f"{where}: no formula for {', '.join(sorted(recon.uncovered_classes))}")
    if problems:
        shown = problems[:max_lines] + ([f"... and {len(problems) - max_lines} more"]
                                        if len(problems) > max_lines else [])
        raise AssertionError("formulas do not reconcile:\n  " + "\n  ".join(shown))
    return results


def assert_predicts(config: Any, shapes: Iterable[Shape], *, registry: Registry | None = None,
                    metrics: Sequence[str] = ("flops", "vector_flops", "bytes_read",
                                              "bytes_written"),
                    rtol: float = 0.0) -> None:
    """Trace-free prediction (AST evaluation and the compiled closed form) equals a fresh
    trace's totals at each shape."""
    from lm_predictor.predict.predictor import Predictor

    registry = registry or Registry.default(include_user=False)
    predictor = Predictor.for_config(config, registry=registry)
    problems: list[str] = []
    for shape in shapes:
        b, s, phase, kv = _shape(shape)
        seq = 1 if phase == "decode" else s
        predicted = predictor.point(b, seq, kv)
        swept = predictor.sweep([(b, seq, kv)])[0]  # compiled closed forms must agree exactly
        if swept != predicted:
            problems.append(f"batch {b}, seq {s}, {phase}, kv {kv}: closed form {swept} differs "
                            f"from AST evaluation {predicted}")
        measured = trace_config(config, b, s, phase, kv).totals.as_dict()
        for m in metrics:
            want, got = measured[m], predicted[m]
            if got != want and (want == 0 or abs(got - want) / abs(want) > rtol):
                problems.append(f"batch {b}, seq {s}, {phase}, kv {kv}: {m} measured {want}, "
                                f"predicted {got}")
    if problems:
        raise AssertionError("prediction differs from the trace:\n  " + "\n  ".join(problems))


def assert_no_regression(db: str | Path, run_id: str, baseline_run_id: str,
                         metrics: Sequence[str] = METRICS, slack: float = 0.0) -> None:
    """No formula's max relative error in `run_id` exceeds the baseline run's (+ slack)."""
    from lm_predictor.store.regression import compare_runs

    worse = compare_runs(db, run_id, baseline_run_id, metrics, slack)
    if worse:
        raise AssertionError("formula accuracy regressed against the baseline:\n  "
                             + "\n  ".join(worse))
