"""dtype-aware trace helpers for the zoo's mixed-precision tests.

`lm_predictor.testing.assert_reconciles` builds its model in float32; these helpers take a model
already built in the dtype under test (on `meta`, so nothing is allocated) and trace it at each
shape, reconcile every call exactly, and compare trace-free prediction (`Predictor` with the same
dtype) with the traced totals. Inputs follow the model: `build_inputs` makes the KV cache in the
parameters' dtype.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch

from formula_db.registry import Registry
from lm_predictor.predict.predictor import Predictor
from lm_predictor.reconcile import reconcile
from lm_predictor.testing import mismatches, trace_config
from tracing import Trace

Shape = tuple[int, int] | tuple[int, int, str, int]
Tracer = Callable[[int, int, str, int], Trace]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
TOTALS = ("flops", "vector_flops", "bytes_read", "bytes_written")


def unpack(shape: Shape) -> tuple[int, int, str, int]:
    """(batch, seq) or (batch, seq, phase, kv_len) as a 4-tuple."""
    if len(shape) == 2:
        return shape[0], shape[1], "prefill", 0
    return shape  # type: ignore[return-value]


def config_tracer(config: Any, model: torch.nn.Module) -> Tracer:
    """Trace `model` (built from `config` in some dtype) with token-id inputs."""
    def run(batch: int, seq: int, phase: str, kv: int) -> Trace:
        return trace_config(config, batch, seq, phase, kv, model=model)
    return run


def reconcile_problems(tracer: Tracer, shapes: Iterable[Shape], registry: Registry,
                       exempt: dict[str, Sequence[str]] | None = None) -> list[str]:
    """Every call of every shape, exact on all five metrics: readable lines for what is not."""
    problems: list[str] = []
    for shape in shapes:
        b, s, phase, kv = unpack(shape)
        t = tracer(b, s, phase, kv)
        recon = reconcile(t, registry, 0.0)
        where = f"batch {b}, seq {s}, {phase}" + (f", kv {kv}" if kv else "")
        if recon.uncovered_classes:
            problems.append(f"{where}: no formula for {sorted(recon.uncovered_classes)}")
        for line in mismatches(t, recon):
            key = line.split("[", 1)[1].split("]", 1)[0] if "[" in line else ""
            metric = line.rsplit("]", 1)[-1].split(":", 1)[0].strip()
            if exempt and metric in exempt.get(key, ()):
                continue
            problems.append(f"{where}: {line}")
    return problems


def predict_problems(config: Any, dtype: str, tracer: Tracer, shapes: Iterable[Shape],
                     registry: Registry) -> list[str]:
    """Trace-free prediction in `dtype` (AST and compiled closed form) against traced totals."""
    predictor = Predictor.for_config(config, registry=registry, dtype=dtype)
    problems: list[str] = []
    for shape in shapes:
        b, s, phase, kv = unpack(shape)
        seq = 1 if phase == "decode" else s
        predicted = predictor.point(b, seq, kv)
        swept = predictor.sweep([(b, seq, kv)])[0]
        if swept != predicted:
            problems.append(f"{shape}: closed form {swept} != AST {predicted}")
        measured = tracer(b, s, phase, kv).totals.as_dict()
        for m in TOTALS:
            if predicted[m] != measured[m]:
                problems.append(f"{shape} {dtype}: {m} measured {measured[m]}, "
                                f"predicted {predicted[m]}")
    return problems
