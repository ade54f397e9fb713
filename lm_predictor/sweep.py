"""The transformers-wide sweep behind `lm-predictor check --suite transformers`.

`suite_types()` lists every model type of the installed transformers that has a causal-LM class
(`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`) plus a few encoder, seq2seq and vision types. For each,
`run_type` builds a tiny config from the config class's defaults
(`tiny_config(CONFIG_MAPPING[t]())`), the model on `meta`, inputs for its kind (token ids;
decoder ids for seq2seq; pixel values for vision), traces one forward pass with
`lm_predictor.fallback.trace_with_fallback` (so models that read values on meta still trace, the
method is recorded) and reconciles it against the formula registry.

`run_sweep(types, workers=N, timeout_s=T)` runs the types in N spawned worker processes, one
type at a time per worker; a type that runs past T seconds, or whose worker dies (segfault,
`os._exit`, out of memory), has its worker killed and replaced and is reported as a failure:
the sweep goes on. Results are dataclasses (`TypeResult` per type, `SweepSummary`) holding
only plain values, ready for DuckDB rows (`dataclasses.asdict`).

Definitions:
- built / traced: the model was instantiated / one forward pass was traced (by any method).
- coverage (flops, bytes = read + written): share of measured work inside calls whose formula
  binds and evaluates (walking down from the roots; a call without a usable formula passes its
  children on), split by the entry's `validation.source` (builtin, agent, user, ...; "none" for
  the rest).
- exact: every call with a formula binds, evaluates and equals the measurement on every metric.
- fully covered & exact: exact, coverage 1.0 of both flops and bytes, and no uncovered aten op.

Example:
    >>> from lm_predictor.sweep import run_sweep, suite_types
    >>> result = run_sweep(suite_types()[:4], workers=2, timeout_s=120)
    >>> result.summary.traced, result.summary.failures_by_reason
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import queue
import re
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["causal", "encoder", "seq2seq", "vision"]

# A few non-causal types beside every causal-LM type: common encoders, seq2seq and vision models.
EXTRA_TYPES: dict[str, Kind] = {
    "bert": "encoder", "roberta": "encoder", "distilbert": "encoder", "albert": "encoder",
    "electra": "encoder", "deberta-v2": "encoder", "mpnet": "encoder", "modernbert": "encoder",
    "mobilebert": "encoder", "funnel": "encoder",
    "t5": "seq2seq", "mt5": "seq2seq", "pegasus": "seq2seq", "longt5": "seq2seq",
    "vit": "vision", "deit": "vision", "convnext": "vision", "resnet": "vision",
    "swin": "vision", "dinov2": "vision", "beit": "vision", "regnet": "vision",
}
DEFAULT_SHAPE = (2, 16)  # batch, prefill sequence length
VISION_IMAGE = 32  # tiny image side for vision types


@dataclass(frozen=True)
class SweepType:
    """One model type to sweep. `runner` ("module:function") replaces `run_type` (tests)."""

    model_type: str
    kind: Kind = "causal"
    architecture: str | None = None
    runner: str | None = None


@dataclass
class TypeResult:
    """What happened to one model type."""

    model_type: str
    kind: str
    architecture: str | None = None
    built: bool = False
    traced: bool = False
    method: str | None = None  # how it was traced (see lm_predictor.fallback)
    method_notes: list[str] = field(default_factory=list)
    config_method: str | None = None  # which of CONFIG_ATTEMPTS traced
    attempt_errors: list[str] = field(default_factory=list)  # the attempts that failed before
    stage: str = "config"  # the last stage reached: config, build, inputs, trace, reconcile, done
    error: str | None = None  # one line: ExceptionType: message
    reason: str | None = None  # `error` with names and numbers normalised, for grouping
    calls: int = 0
    classes: int = 0
    coverage: dict[str, float] = field(default_factory=dict)  # flops, bytes
    coverage_by_source: dict[str, dict[str, float]] = field(default_factory=dict)
    exact: bool = False
    fully_covered_exact: bool = False
    mismatched_calls: int = 0
    unbound_calls: int = 0  # formula present but failed to bind or evaluate
    uncovered_classes: dict[str, int] = field(default_factory=dict)
    uncovered_ops: dict[str, int] = field(default_factory=dict)
    measured_totals: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class SweepSummary:
    """Counts over a sweep, and the failures grouped by reason (reason -> model types)."""

    types: int
    built: int
    traced: int
    exact: int
    fully_covered_exact: int
    traced_by_method: dict[str, int]
    traced_by_config: dict[str, int]
    coverage_by_source: dict[str, dict[str, float]]  # mean over traced types
    failures_by_reason: dict[str, list[str]]
    uncovered_ops: dict[str, int]  # op -> number of traced types using it uncovered
    wall_s: float


@dataclass
class SweepResult:
    results: list[TypeResult]
    summary: SweepSummary


# ---------------------------------------------------------------------------------------------
# the list of types


def _first_name(value: Any) -> str | None:
    if isinstance(value, (tuple, list)):
        return value[0] if value else None
    return value


def suite_types(extra: dict[str, Kind] | None = None) -> list[SweepType]:
    """Every installed model type with a causal-LM class, plus `extra` (default `EXTRA_TYPES`)
    types not already among them, in sorted order."""
    from transformers.models.auto import modeling_auto as auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    out = {t: SweepType(t, "causal", _first_name(name))
           for t, name in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()
           if t in CONFIG_MAPPING_NAMES}
    mappings = {"encoder": auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
                "seq2seq": auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
                "vision": auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES}
    for t, kind in (EXTRA_TYPES if extra is None else extra).items():
        if t in out or t not in CONFIG_MAPPING_NAMES:
            continue
        name = _first_name(mappings[kind].get(t)) if kind in mappings else None
        out[t] = SweepType(t, kind, name or _first_name(auto.MODEL_MAPPING_NAMES.get(t)))
    return [out[t] for t in sorted(out)]


# ---------------------------------------------------------------------------------------------
# one type (runs in a worker)


def tiny_type_config(spec: SweepType, layers: int | None = None, text: bool = False) -> Any:
    """A tiny config of `spec.model_type` from its config class's defaults (`layers` layers
    instead of tiny_config's 2 when given; with `text`, of its text sub-config, for composite
    configs whose causal-LM class is the text model)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from lm_predictor.fallback import LAYER_KEYS
    from lm_predictor.models import tiny_config

    config = CONFIG_MAPPING[spec.model_type]()
    if text:
        sub = config.get_text_config()
        if sub is config:
            raise ValueError("no separate text config")
        config = sub
    d = config.to_dict()
    overrides: dict[str, Any] = {}
    if layers is not None:
        keys = [k for k in LAYER_KEYS if isinstance(d.get(k), int) and d[k] > layers]
        if not keys:
            raise ValueError(f"no layer count above {layers} to set")
        overrides.update({k: layers for k in keys})
    if spec.kind == "vision":
        if isinstance(d.get("image_size"), int):
            overrides["image_size"] = VISION_IMAGE
        if isinstance(d.get("patch_size"), int) and d["patch_size"] > 8:
            overrides["patch_size"] = 8
    return tiny_config(config, **overrides)


def default_config(spec: SweepType, layers: int | None = None) -> Any:
    """The config class's defaults, cut to `layers` layers when given."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from lm_predictor.fallback import truncated_config

    config = CONFIG_MAPPING[spec.model_type]()
    return truncated_config(config, layers) if layers else config


# Configs tried in turn until one builds and traces: tiny (2 layers, the shapes of the zoo
# tests); tiny of the text sub-config (composite configs whose causal-LM class is the text
# model: llama4, qwen3_5, ...; built with the class transformers maps to that config); tiny with
# 4 layers (hybrid models whose layer pattern puts attention after 2 linear
# layers); the class defaults cut to 2 layers; the class defaults (on meta, size costs nothing).
CONFIG_ATTEMPTS: tuple[tuple[str, Any], ...] = (
    ("tiny", lambda spec: tiny_type_config(spec)),
    ("tiny-text", lambda spec: tiny_type_config(spec, text=True)),
    ("tiny-4-layers", lambda spec: tiny_type_config(spec, layers=4)),
    ("tiny-text-4-layers", lambda spec: tiny_type_config(spec, layers=4, text=True)),
    ("default-2-layers", lambda spec: default_config(spec, layers=2)),
    ("default", lambda spec: default_config(spec)),
)
STAGES = ("config", "build", "trace", "reconcile", "done")


def make_input_factory(spec: SweepType, config: Any, batch: int, seq_len: int) -> Any:
    """`make_inputs(model, device)` for the type's kind (see `lm_predictor.fallback`); vision
    inputs are those covering samples (`lm_predictor.sampling.pixel_inputs`)."""
    from lm_predictor.models.inputs import build_inputs

    def make(model: Any, device: str) -> dict[str, Any]:
        if spec.kind == "vision":
            from lm_predictor.sampling import pixel_inputs

            return pixel_inputs(model, config, batch, device, VISION_IMAGE)
        return build_inputs(model, config, batch_size=batch, seq_len=seq_len, device=device,
                            attention_mask=False)
    return make


def normalise_reason(error: str, model_type: str = "") -> str:
    """Group key of an error line ("Type: message"): in the message, the model type, quoted
    text, CamelCase class names and numbers are blanked; the exception type is kept."""
    head, sep, text = error.partition(": ")
    if not sep or " " in head:
        head, sep, text = "", "", error
    if model_type:
        for variant in {model_type, model_type.replace("-", "_"), model_type.replace("_", "")}:
            text = re.sub(re.escape(variant), "<type>", text, flags=re.IGNORECASE)
    text = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`", "'…'", text)
    text = re.sub(r"\b[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+\b", "<Class>", text)
    text = re.sub(r"\d+", "N", text)
    return f"{head}{sep}{text}"[:160]


def _error_line(exc: BaseException) -> str:
    msg = str(exc).strip()
    first = msg.splitlines()[0] if msg else ""
    return f"{type(exc).__name__}: {first}"[:300]


def _coverage_by_source(trace: Any, recon: Any, registry: Any) -> tuple[dict, dict]:
    """(coverage, coverage by source) counting only calls whose formula binds and evaluates."""
    results = {r.call_id: r for r in recon.calls}
    explained: dict[str, Counter] = defaultdict(Counter)
    stack = list(trace.roots())
    while stack:
        call = stack.pop()
        r = results[call.call_id]
        if r.status != "no_formula" and r.error is None:
            key = registry.resolve_key(call.formula_key)
            source = registry.get(key).validation.source if key else "none"
            explained[source]["flops"] += call.inclusive.flops
            explained[source]["bytes"] += call.inclusive.bytes_read + call.inclusive.bytes_written
        else:
            stack.extend(trace.children(call))
    total = trace.totals
    denominators = {"flops": total.flops, "bytes": total.bytes_read + total.bytes_written}
    by_source = {s: {m: (c[m] / denominators[m] if denominators[m] else 0.0) for m in denominators}
                 for s, c in explained.items()}
    coverage = {m: (sum(c[m] for c in explained.values()) / d if d else 1.0)
                for m, d in denominators.items()}
    return coverage, by_source


def _attempt(spec: SweepType, make_config: Any, shape: tuple[int, int],
             allow_cpu: bool) -> tuple[Any, Any, Any]:
    """(config, model, FallbackTrace) for one config attempt; raises _StageError."""
    from lm_predictor.fallback import trace_with_fallback
    from lm_predictor.models import build_model

    stage = "config"
    try:
        config = make_config(spec)
        stage = "build"
        try:
            model = build_model(config, device="meta", architecture=spec.architecture)
        except Exception:  # noqa: BLE001 - the mapped class may not fit; let build_model choose
            model = build_model(config, device="meta")
        spec = SweepType(config.model_type, spec.kind) if config.model_type != spec.model_type \
            else spec
        stage = "trace"
        make = make_input_factory(spec, config, *shape)
        traced = trace_with_fallback(config, model, make, "meta",
                                     architecture=type(model).__name__, allow_cpu=allow_cpu,
                                     cpu_max_weight_bytes=CPU_FALLBACK_MAX_WEIGHT_BYTES)
        return config, model, traced
    except Exception as exc:  # noqa: BLE001
        raise _StageError(stage, _error_line(exc)) from exc


class _StageError(Exception):
    def __init__(self, stage: str, error: str) -> None:
        super().__init__(error)
        self.stage, self.error = stage, error


CPU_FALLBACK_MAX_WEIGHT_BYTES = 1 << 30  # the sweep never builds more than 1 GiB on CPU
COVER_SHARE_OF_TIMEOUT = 0.75  # covering stops trying classes past this share of --timeout


def run_type(spec: SweepType, shape: tuple[int, int] = DEFAULT_SHAPE,
             registry: Any = None, allow_cpu: bool = True, cover: bool = False,
             cover_budget_s: float | None = None) -> TypeResult:
    """Build, trace and reconcile one type; every failure is recorded, never raised.

    Config attempts (`CONFIG_ATTEMPTS`) run in turn until one traces; `config_method` names the
    one used, `attempt_errors` what the earlier ones hit. When all fail, the error reported is
    that of the attempt that got furthest (the earliest among equals). With `cover`, a type
    that is not fully covered by the builtin formulas is covered as
    `analyze` does (`lm_predictor.coverage.cover_model`, transfer then derivation, kept in
    memory) and reconciled again; `coverage_by_source` then shows transferred and derived.
    Covering samples what the type can run (`lm_predictor.sampling`: prefill only for encoders,
    seq2seq and cache-less models, batch only for vision) with the method that traced it
    (answered scalars on meta, or CPU for the config traced there); classes reached after
    `cover_budget_s` seconds of the type's run are not tried (so that a slow cover leaves the
    builtin result instead of a timeout)."""
    from formula_db.registry import Registry
    from lm_predictor.reconcile import reconcile

    start = time.perf_counter()
    result = TypeResult(spec.model_type, spec.kind, spec.architecture)
    failures: list[_StageError] = []
    found = None
    for name, make_config in CONFIG_ATTEMPTS:
        try:
            found = (name, *_attempt(spec, make_config, shape, allow_cpu))
            break
        except _StageError as exc:
            failures.append(exc)
            result.attempt_errors.append(f"{name}: {exc.stage}: {exc.error}")
    if found is None:
        worst = max(failures, key=lambda f: STAGES.index(f.stage))
        result.built = any(STAGES.index(f.stage) > STAGES.index("build") for f in failures)
        result.stage, result.error = worst.stage, worst.error
        result.reason = f"{worst.stage}: {normalise_reason(worst.error, spec.model_type)}"
        result.seconds = time.perf_counter() - start
        return result
    result.config_method, config, model, traced = found
    result.architecture = type(model).__name__
    result.built = result.traced = True
    result.method, result.method_notes = traced.method, traced.notes
    result.stage = "reconcile"
    try:
        t = traced.trace
        registry = registry or Registry.default(include_user=False)
        recon = reconcile(t, registry, 0.0)
        if cover and (recon.uncovered_classes or any(r.error for r in recon.calls)):
            from lm_predictor.coverage import cover_model
            from lm_predictor.derive import with_entries

            try:  # sampled as traced: the same class, on meta or CPU, the config traced
                budget = None if cover_budget_s is None else max(
                    0.0, cover_budget_s - (time.perf_counter() - start))
                report = cover_model(traced.config or config, registry, store=False,
                                     model=model, method=traced.method, time_budget_s=budget,
                                     backward=False)
            except Exception as exc:  # noqa: BLE001 - the builtin-only result still stands
                result.method_notes.append(f"cover failed: {_error_line(exc)}")
            else:
                registry = with_entries(registry, list(report.entries))
                if report.sampled != "decoder" or report.notes:
                    result.method_notes.append(
                        f"covered from {report.sampled} samples on {report.sample_method}"
                        + "".join(f"; {n}" for n in report.notes))
                result.method_notes += [
                    f"not covered: {o.class_name.rsplit('.', 1)[-1]}: {o.reason[:300]}"
                    for o in report.outcomes if o.source == "none"]
                recon = reconcile(t, registry, 0.0)
        result.calls = len(t.calls)
        result.classes = len({c.class_name for c in t.calls})
        result.coverage, result.coverage_by_source = _coverage_by_source(t, recon, registry)
        with_formula = [r for r in recon.calls if r.status != "no_formula"]
        result.unbound_calls = sum(r.error is not None for r in with_formula)
        result.mismatched_calls = sum(r.status != "exact" for r in with_formula)
        result.exact = result.mismatched_calls == 0
        result.uncovered_classes = dict(recon.uncovered_classes)
        result.uncovered_ops = dict(t.uncovered_ops)
        result.measured_totals = dict(recon.measured_totals)
        result.fully_covered_exact = (result.exact and not result.uncovered_ops
                                      and result.coverage.get("flops") == 1.0
                                      and result.coverage.get("bytes") == 1.0)
        result.stage = "done"
    except Exception as exc:  # noqa: BLE001 - a sweep records failures, it does not stop
        result.error = _error_line(exc)
        result.reason = f"reconcile: {normalise_reason(result.error, spec.model_type)}"
        if os.environ.get("LM_PREDICTOR_SWEEP_DEBUG"):
            traceback.print_exc()
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# worker processes


def _runner(spec: SweepType) -> Any:
    if not spec.runner:
        return run_type
    module, _, name = spec.runner.partition(":")
    return getattr(importlib.import_module(module), name)


def _worker(slot_id: int, tasks: Any, results: Any, shape: tuple[int, int],
            threads: int, cover: bool = False, cover_budget_s: float | None = None) -> None:
    """Worker loop: import everything, say ("ready", slot_id), then for each (index, spec) put
    ("result", index, TypeResult); None stops it."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from formula_db.registry import Registry
    from lm_predictor import fallback, reconcile  # noqa: F401 - warm imports
    from lm_predictor.models import build, inputs  # noqa: F401

    registry = Registry.default(include_user=False)
    results.put(("ready", slot_id, None))
    while True:
        task = tasks.get()
        if task is None:
            return
        index, spec = task
        fn = _runner(spec)
        result = (fn(spec, shape, registry, cover=cover, cover_budget_s=cover_budget_s)
                  if fn is run_type else fn(spec, shape))
        results.put(("result", index, result))


@dataclass
class _Slot:
    slot_id: int
    process: Any
    tasks: Any
    ready: bool = False
    index: int | None = None
    started: float = 0.0
    spawned: float = 0.0


def _failure(spec: SweepType, stage: str, error: str, seconds: float) -> TypeResult:
    return TypeResult(spec.model_type, spec.kind, spec.architecture, stage=stage, error=error,
                      reason=f"{stage}: {normalise_reason(error, spec.model_type)}",
                      seconds=seconds)


WORKER_START_TIMEOUT_S = 300.0  # imports on a loaded machine; a worker slower than this is dead
MAX_FAILED_STARTS = 3  # workers that die before taking any work: the sweep itself is broken


class SweepError(RuntimeError):
    """The sweep cannot run at all (its workers cannot start)."""


def run_sweep(types: list[SweepType], *, workers: int = 2, timeout_s: float = 120.0,
              shape: tuple[int, int] = DEFAULT_SHAPE, threads_per_worker: int = 1,
              cover: bool = False,
              progress: Any = None) -> SweepResult:
    """Run every type in `workers` spawned processes (see the module docstring).

    A type's `timeout_s` starts when it is handed to a worker that has finished importing; a
    type whose worker dies or overruns is reported (stage "timeout" or "crash") and the worker
    is replaced."""
    ctx = mp.get_context("spawn")
    results_q = ctx.Queue()
    start = time.perf_counter()
    pending = list(enumerate(types))[::-1]
    done: dict[int, TypeResult] = {}
    ids = iter(range(1 << 30))

    def spawn() -> _Slot:
        slot_id, tasks = next(ids), ctx.Queue()
        process = ctx.Process(target=_worker, daemon=True,
                              args=(slot_id, tasks, results_q, shape, threads_per_worker,
                                    cover, COVER_SHARE_OF_TIMEOUT * timeout_s))
        process.start()
        return _Slot(slot_id, process, tasks, spawned=time.perf_counter())

    def finish(index: int, result: TypeResult) -> None:
        if index in done:
            return
        done[index] = result
        if progress is not None:
            progress(result, len(done), len(types))

    def receive(timeout: float) -> bool:
        try:
            kind, key, result = results_q.get(timeout=timeout)
        except queue.Empty:
            return False
        if kind == "ready":
            for slot in slots:
                if slot.slot_id == key:
                    slot.ready = True
        else:
            finish(key, result)
        return True

    slots = [spawn() for _ in range(max(1, min(workers, len(types))))]
    failed_starts = 0
    try:
        while len(done) < len(types):
            for slot in slots:
                if slot.index in done:
                    slot.index = None
                if slot.ready and slot.index is None and pending:
                    slot.index, spec = pending.pop()
                    slot.started = time.perf_counter()
                    slot.tasks.put((slot.index, spec))
            receive(0.5)
            now = time.perf_counter()
            for i, slot in enumerate(slots):
                if slot.index in done:
                    slot.index = None
                alive = slot.process.is_alive()
                if slot.index is None:
                    if not alive or (not slot.ready
                                     and now - slot.spawned > WORKER_START_TIMEOUT_S):
                        failed_starts += 0 if slot.ready else 1
                        if failed_starts >= MAX_FAILED_STARTS:
                            raise SweepError(
                                f"{failed_starts} sweep workers died or hung while starting "
                                f"(last exit code {slot.process.exitcode}); run the sweep from "
                                "an `if __name__ == '__main__':` block and check that "
                                "lm_predictor imports in a fresh interpreter")
                        slot.process.kill()
                        slots[i] = spawn()
                    continue
                failed_starts = 0
                spec = types[slot.index]
                if now - slot.started > timeout_s:
                    stage, error = "timeout", f"Timeout: no result after {timeout_s:g} s"
                elif not alive:
                    while receive(0.2):  # a result put just before the worker died
                        pass
                    if slot.index in done:
                        slot.index = None
                        slots[i] = spawn()
                        continue
                    stage, error = "crash", f"WorkerDied: exit code {slot.process.exitcode}"
                else:
                    continue
                slot.process.kill()
                slot.process.join(5)
                finish(slot.index, _failure(spec, stage, error, now - slot.started))
                slots[i] = spawn()
    finally:
        for slot in slots:
            if slot.process.is_alive():
                slot.tasks.put(None)
        for slot in slots:
            slot.process.join(5)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(5)
    ordered = [done[i] for i in range(len(types))]
    return SweepResult(ordered, summarise(ordered, time.perf_counter() - start))


def summarise(results: list[TypeResult], wall_s: float = 0.0) -> SweepSummary:
    """Counts, mean coverage by source over traced types, failures grouped by reason."""
    traced = [r for r in results if r.traced]
    failures: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r.error:
            failures[r.reason or r.error].append(r.model_type)
    sources: dict[str, Counter] = defaultdict(Counter)
    for r in traced:
        for source, cov in r.coverage_by_source.items():
            sources[source].update(cov)
        for metric in ("flops", "bytes"):
            covered = r.coverage.get(metric, 0.0)
            sources["none"][metric] += max(0.0, 1.0 - covered)
    n = len(traced) or 1
    ops: Counter = Counter()
    for r in traced:
        ops.update(r.uncovered_ops.keys())
    return SweepSummary(
        types=len(results), built=sum(r.built for r in results), traced=len(traced),
        exact=sum(r.exact for r in traced),
        fully_covered_exact=sum(r.fully_covered_exact for r in traced),
        traced_by_method=dict(Counter(r.method for r in traced if r.method)),
        traced_by_config=dict(Counter(r.config_method for r in traced if r.config_method)),
        coverage_by_source={s: {m: v / n for m, v in c.items()} for s, c in sources.items()},
        failures_by_reason=dict(sorted(failures.items(), key=lambda kv: -len(kv[1]))),
        uncovered_ops=dict(ops.most_common()), wall_s=wall_s)
