"""The formula agent wired to traces and the run database: the library side of `lm-predictor
agent`, of the `module` miss and of `analyze --fill-gaps` (the agent itself, its tools and its
limits live in `formula_db.agent`).

- `recorded_calls(traces, class_name, registry)` turns the `tracing` records of one class into
  the plain `formula_db.agent.calls.RecordedCall`s that the agent's `reconcile` tool evaluates
  (measured metrics, per-op counters inclusive of children, direct children, model config),
  distinct ones only.
- `trace_model(model_id)` traces the model on `meta` at `AGENT_SHAPES` (batch 1 seq 8 and
  batch 2 seq 5: two shapes, so a template made of constants cannot pass) through the pipeline.
- `run_for_class(name, ...)` runs the agent on one class (what `lm-predictor agent` does); a
  class that already has an entry is refused unless `force`.
- `fill_module_gap(name, registry)`: on a `module` miss with credentials, runs the agent on the
  latest stored run's model that calls the class; without credentials says how to set them.
- `fill_gaps(trace, registry, ...)` runs the agent for every uncovered class of a trace,
  deepest first (by the largest depth of its calls) so that parents can call their children's
  new formulas; `analyze --fill-gaps` calls it and reconciles again.
- Every run's cost and outcome is a row of the DuckDB table `agent_runs`.
Heavy imports (the SDK, tracing, transformers) happen inside the functions.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from formula_db.agent.limits import AgentLimits
from formula_db.naming import key_for
from lm_predictor.errors import AgentError

if TYPE_CHECKING:
    from formula_db.agent.calls import RecordedCall
    from formula_db.agent.runner import AgentRun, AgentTask
    from formula_db.registry import Registry
    from formula_db.schema import FormulaEntry
    from tracing.records import CallRecord, Trace

AGENT_SHAPES: tuple[tuple[int, int], ...] = ((1, 8), (2, 5))
Progress = Callable[[str], None]
TransportFactory = Callable[["AgentTask"], Any]

# Seam for tests: builds the SDK transport of each run (None: the SDK's default, the `claude`
# CLI in a subprocess). While it is set, the credential check is skipped.
transport_factory: TransportFactory | None = None




def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


# --- traces to recorded calls --------------------------------------------------------------------

def _inclusive_ops(trace: Trace, call: CallRecord) -> dict[str, dict[str, int]]:
    from tracing.records import OpStat

    total: dict[str, OpStat] = {}
    stack = [call]
    while stack:
        node = stack.pop()
        for name, stat in node.ops.items():
            total.setdefault(name, OpStat()).add(stat.counters(), stat.count)
        stack.extend(trace.children(node))
    return {name: {"count": s.count, "flops": s.flops, "vector_flops": s.vector_flops,
                   "bytes_read": s.bytes_read, "bytes_written": s.bytes_written}
            for name, s in total.items()}


def matches(call: CallRecord, name: str) -> bool:
    """Whether a call is of class `name` (dotted name, key, or the bare class name)."""
    return (call.class_name == name or call.formula_key == key_for(name)
            or call.class_name.rsplit(".", 1)[-1] == name)


def recorded_calls(traces: Iterable[Trace], class_name: str, registry: Registry
                   ) -> list[RecordedCall]:
    """The distinct calls of `class_name` in `traces`, as plain data for the agent."""
    from formula_db.agent.calls import ChildCall, RecordedCall, distinct
    from lm_predictor.reconcile import measured_of

    out: list[RecordedCall] = []
    for trace in traces:
        for call in trace.calls:
            if call.class_name != class_name:
                continue
            children = tuple(
                ChildCall(c.module_path, c.class_name, c.formula_key,
                          registry.resolve_key(c.formula_key) is not None, measured_of(c))
                for c in trace.children(call))
            out.append(RecordedCall(call.module_path, tuple(call.inputs), dict(call.kwargs),
                                    call.outputs, dict(call.attributes), dict(trace.config),
                                    measured_of(call), _inclusive_ops(trace, call), children,
                                    depth=call.depth))
    return distinct(out)


def resolve_class_name(traces: list[Trace], name: str) -> str:
    """The recorded class name `name` designates in `traces` (AgentError if none or several)."""
    found = sorted({c.class_name for t in traces for c in t.calls if matches(c, name)})
    if not found:
        raise AgentError(f"the traced model makes no call of {name!r}; check the class name "
                         f"('lm-predictor analyze' lists the classes it calls)")
    if len(found) > 1:
        raise AgentError(f"{name!r} matches several classes ({', '.join(found)}); give the "
                         f"dotted name")
    return found[0]


def trace_model(model_id: str, shapes: tuple[tuple[int, int], ...] = AGENT_SHAPES
                ) -> list[Trace]:
    """Traces of `model_id` on meta, one prefill pass per (batch, seq) shape (the pipeline of
    `lm_predictor.run`, without reconciling)."""
    from lm_predictor.run import RunSpec, resolve, trace_run

    resolved = resolve(RunSpec(model_id))
    traces: list[Trace] = []
    model = None
    for batch, seq in shapes:
        out = trace_run(RunSpec(model_id, batch_size=batch, seq_len=seq), None,
                        config=resolved.config, model=model)
        model = out.model
        traces.append(out.trace)
    return traces


def target_class(class_name: str) -> type:
    """The class object of a recorded class name (the trace has imported its module)."""
    from formula_db.agent.source import find_class

    cls = find_class(class_name)
    if cls is None:
        try:  # a name the user typed or a trace recorded, never one the agent chose
            importlib.import_module(class_name.rpartition(".")[0])
        except ImportError:
            pass
        cls = find_class(class_name)
    if cls is None:
        raise AgentError(f"cannot find class {class_name!r} to read its source; it must be "
                         f"importable")
    return cls


def make_task(traces: list[Trace], class_name: str, registry: Registry, note: str = ""
              ) -> AgentTask:
    """The agent's task for one recorded class: its source and its distinct calls."""
    from formula_db.agent.runner import AgentTask
    from formula_db.agent.source import SourceError, class_source

    try:
        source = class_source(target_class(class_name))
    except SourceError as exc:
        raise AgentError(str(exc)) from None
    return AgentTask(source, recorded_calls(traces, class_name, registry), note)


# --- running and recording -----------------------------------------------------------------------

def user_db_of(registry: Registry) -> Path:
    """The user layer's file of a registry (where the agent caches entries)."""
    from formula_db.registry import user_db_path

    for layer in reversed(registry.layers):
        if layer.name == "user" and layer.path is not None:
            return layer.path
    return user_db_path()


def reload_user(registry: Registry) -> Registry:
    """The registry with its user layer read again from disk (after the agent cached one)."""
    from formula_db.registry import Layer, Registry
    from formula_db.store import load_database

    path = user_db_of(registry)
    layers = [layer for layer in registry.layers if layer.name != "user"]
    return Registry(layers + [Layer("user", path, load_database(path))])


def execute(task: AgentTask, registry: Registry, limits: AgentLimits,
            transcripts: Path | None = None, model: str | None = None) -> AgentRun:
    """Run the agent on a task with the configured transport."""
    from formula_db.agent.runner import run_agent

    transport = transport_factory(task) if transport_factory is not None else None
    return run_agent(task, registry=registry, user_db=user_db_of(registry), limits=limits,
                     transcript_dir=transcripts, transport=transport, model=model)


def credentials_missing() -> str | None:
    """How to configure credentials, or None when configured (or a test transport is set)."""
    from formula_db.agent.auth import credentials_problem

    return None if transport_factory is not None else credentials_problem()


def record_run(run: AgentRun, db: str | os.PathLike[str] | None, model_id: str | None) -> Path:
    """Append the run's cost and outcome to `agent_runs`; returns the database file."""
    from lm_predictor.store import Store

    store = Store(db)
    store.write_agent_run([run.started_at.replace(tzinfo=None), run.full_class_name, run.key,
                           run.outcome, run.num_turns, run.input_tokens, run.output_tokens,
                           run.cache_read_tokens, run.cache_creation_tokens, run.cost_usd,
                           run.duration_s, run.submissions, model_id, str(run.transcript),
                           run.error])
    return store.path


def _record(run: AgentRun, db: str | os.PathLike[str] | None, model_id: str | None,
            say: Progress) -> None:
    from lm_predictor.errors import StoreError

    try:
        path = record_run(run, db, model_id)
    except StoreError as exc:
        say(f"warning: the agent run was not recorded in agent_runs: {exc}")
    else:
        cached = (f"; entry {run.key} cached in the user formula database"
                  if run.outcome == "cached" else "")
        say(f"recorded the agent run ({run.outcome}) in {path} (table agent_runs){cached}")


def stored_model_for(class_name: str, db: str | os.PathLike[str] | None) -> str | None:
    """The model of the latest stored traced run that calls `class_name`, if any."""
    from lm_predictor.errors import StoreError
    from lm_predictor.settings import db_path
    from lm_predictor.store import Store
    from lm_predictor.store.queries import latest_model_calling

    if not db_path(db).exists():
        return None
    try:
        return latest_model_calling(Store(db), class_name, key_for(class_name))
    except StoreError:
        return None


# --- `lm-predictor module` on a miss -------------------------------------------------------------

def fill_module_gap(name: str, registry: Registry, say: Progress = _stderr
                    ) -> FormulaEntry | None:
    """Fill a `module` miss with the agent when credentials and a stored trace allow it (what
    `lm-predictor module NAME` does on a miss); None when it cannot, saying why via `say`."""
    problem = credentials_missing()
    if problem:
        say(f"lm-predictor: formula agent not run: {problem}")
        return None
    model_id = stored_model_for(name, None)
    if model_id is None:
        say(f"lm-predictor: formula agent not run: no stored run calls {name!r}; run "
            f"'lm-predictor agent {name} --model-id MODEL'")
        return None
    traces = trace_model(model_id)
    class_name = resolve_class_name(traces, name)
    task = make_task(traces, class_name, registry, note=f"{model_id} on meta")
    say(f"no formula for {name!r}: running the formula agent on {class_name}")
    result = execute(task, registry, AgentLimits())
    _record(result, None, model_id, say)
    say(result.report())
    return result.entry


# --- `analyze --fill-gaps` -----------------------------------------------------------------------

@dataclass
class FillReport:
    """What `fill_gaps` did: the registry to reconcile with, the runs, notes for the user."""

    registry: Registry
    runs: list[AgentRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def uncovered_deepest_first(trace: Trace, registry: Registry) -> list[str]:
    """Classes of the trace without a formula, deepest (max call depth) first, then by name."""
    depth: dict[str, int] = {}
    for call in trace.calls:
        if registry.resolve_key(call.formula_key) is None:
            depth[call.class_name] = max(depth.get(call.class_name, 0), call.depth)
    return sorted(depth, key=lambda name: (-depth[name], name))


def fill_gaps(trace: Trace, registry: Registry, *, db: str | os.PathLike[str] | None = "",
              model_id: str | None = None, limits: AgentLimits = AgentLimits(),
              progress: Progress | None = None) -> FillReport:
    """Run the agent for every uncovered class of `trace`, deepest first (see the module doc).

    `model_id` adds meta traces at `AGENT_SHAPES` to the calls the agent sees; `db=None` skips
    recording the runs (`""`: the default file). Never raises for a class the agent cannot
    fill: that becomes a note, and the class stays predicted as the sum of its children."""
    say = progress or (lambda _msg: None)
    report = FillReport(registry)
    classes = uncovered_deepest_first(trace, registry)
    if not classes:
        return report
    problem = credentials_missing()
    if problem:
        report.notes.append(f"formula agent not run: {problem}; {len(classes)} uncovered "
                            f"class(es) are predicted as the sum of their children")
        return report
    traces = [trace]
    if model_id is not None:
        say(f"tracing {model_id} on meta for the formula agent")
        traces += trace_model(model_id)
    for class_name in classes:
        if report.registry.resolve_key(key_for(class_name)) is not None:
            continue
        say(f"formula agent: {class_name}")
        try:
            task = make_task(traces, class_name, report.registry,
                             note=model_id or "the analysed trace")
        except AgentError as exc:
            report.notes.append(f"formula agent skipped {class_name}: {exc}")
            continue
        result = execute(task, report.registry, limits)
        report.runs.append(result)
        if db is not None:
            _record(result, db or None, model_id, report.notes.append)
        report.notes.append(result.report().splitlines()[0]
                            + f" (transcript {result.transcript})")
        if result.outcome == "cached":
            report.registry = reload_user(report.registry)
    return report


# --- one class ---------------------------------------------------------------------------------

def refuse_existing(registry: Registry, name: str) -> None:
    """AgentError when `name` already has an entry (re-analysis needs force)."""
    existing = registry.find(name)
    if existing is not None:
        v = existing.validation
        raise AgentError(f"{existing.key} already has a formula (layer "
                         f"{registry.source_of(existing.key)}, source {v.source}, {v.status}"
                         f"{', ' + str(v.date) if v.date else ''}); pass --force to re-analyse")


def run_for_class(name: str, registry: Registry, limits: AgentLimits, *,
                  model_id: str | None = None, force: bool = False,
                  db: str | os.PathLike[str] | None = None, transcripts: Path | None = None,
                  claude_model: str | None = None, say: Progress = _stderr) -> AgentRun:
    """Run the agent on one class: the calls come from tracing `model_id` on meta (default: the
    model of the latest stored run that calls the class); the run is recorded in `agent_runs`."""
    from lm_predictor.errors import EnvironmentProblem

    if not force:
        refuse_existing(registry, name)
    problem = credentials_missing()
    if problem:
        raise EnvironmentProblem(problem)
    model_id = model_id or stored_model_for(name, db)
    if model_id is None:
        raise AgentError(f"no stored run calls {name!r}; pass --model-id MODEL to trace one on "
                         f"meta")
    say(f"tracing {model_id} on meta at (batch, seq) {AGENT_SHAPES}")
    traces = trace_model(model_id)
    class_name = resolve_class_name(traces, name)
    if not force:
        refuse_existing(registry, class_name)
    task = make_task(traces, class_name, registry,
                     note=f"{model_id} on meta, (batch, seq) {AGENT_SHAPES}")
    say(f"running the formula agent on {class_name} ({len(task.calls)} distinct calls)")
    result = execute(task, registry, limits, transcripts, claude_model)
    _record(result, db, model_id, say)
    return result
