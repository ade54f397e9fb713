"""Cover a model with verified formulas: transfer, then derivation, for every uncovered class.

`cover_model(config, registry)` traces the model at the sample shapes of `lm_predictor.derive`
(prefill and one-token decode, fit and held-out) that it can run (`lm_predictor.sampling`:
prefill only for encoders, encoder-decoder and cache-less models, batch only for vision models;
on meta, or on CPU for a model that reads values), then visits every class
that has no entry, deepest first, so a parent sees its children's new entries:

1. transfer (`lm_predictor.transfer`): an entry of another architecture with the same suffix,
   its nested calls rewritten to this architecture, adopted only if exact everywhere;
2. derivation (`lm_predictor.derive`): children as nested calls plus an exact closed form of the
   class's own cost, verified at held-out shapes; refused with the reason otherwise;
3. otherwise the class stays uncovered (`none`) with the reasons; the formula agent
   (`lm-predictor agent`) is the last resort for it.

Accepted entries are stored in the user formula database (`formula_db.store.save_entries`).
The report gives coverage by source (builtin / transferred / derived / agent / user / none) as
shares of measured FLOPs and bytes, before and after, and separately how many calls are exact.
A call counts as covered only if its formula binds and evaluates.

Example:
    >>> report = cover_model(tiny_config(OlmoConfig()), Registry.default())
    >>> report.after.fully_exact
    True
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from formula_db.errors import FormulaError
from formula_db.registry import Registry, user_db_path
from formula_db.store import save_entries
from formula_db.schema import FormulaEntry
from lm_predictor.derive import (FIT_POINTS, HELD_OUT_POINTS, Deriver, Point, Sample,
                                 config_hash, guard_values, roots_of, sample_traces,
                                 with_entries)
from lm_predictor.reconcile import reconcile
from lm_predictor.results import Reconciliation
from lm_predictor.transfer import Transferrer
from tracing.records import CallRecord, Trace

SOURCES = ("builtin", "transferred", "derived", "agent", "user", "none")


@dataclass
class ClassOutcome:
    """What happened to one uncovered class."""

    key: str
    class_name: str
    source: str  # transferred / derived / none
    transferred_from: str | None = None
    reason: str = ""
    tried: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class CoverageSummary:
    """Coverage of one trace: shares of measured flops and bytes explained per source, and
    exactness of the calls that have a working formula."""

    flops_by_source: dict[str, float]
    bytes_by_source: dict[str, float]
    calls_by_source: dict[str, int]
    calls: int
    exact_calls: int
    failed_binds: int

    @property
    def covered_flops(self) -> float:
        return 1.0 - self.flops_by_source.get("none", 0.0)

    @property
    def covered_bytes(self) -> float:
        return 1.0 - self.bytes_by_source.get("none", 0.0)

    @property
    def fully_exact(self) -> bool:
        """Every call has a formula that binds, evaluates and equals measurement."""
        return self.exact_calls == self.calls


@dataclass
class CoverageReport:
    """Outcome of `cover_model`: per-class results, coverage before and after, what was stored."""

    model_type: str
    config_hash: str
    outcomes: list[ClassOutcome]
    before: CoverageSummary
    after: CoverageSummary
    entries: list[FormulaEntry]
    stored_in: Path | None = None
    backward: Any = None  # lm_predictor.derive_backward.BackwardReport when asked for
    sampled: str = "decoder"  # what was sampled (lm_predictor.sampling): decoder/prefill/vision
    sample_method: str = "meta"  # how the samples were traced: meta, meta+answered-scalars, cpu
    notes: list[str] = field(default_factory=list)  # points left out and why

    def count(self, source: str) -> int:
        return sum(1 for o in self.outcomes if o.source == source)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output (entries by key and source)."""
        return {"model_type": self.model_type, "config_hash": self.config_hash,
                "outcomes": [asdict(o) for o in self.outcomes],
                "before": asdict(self.before), "after": asdict(self.after),
                "entries": {e.key: e.validation.source for e in self.entries},
                "stored_in": str(self.stored_in) if self.stored_in else None,
                "sampled": self.sampled, "sample_method": self.sample_method,
                "notes": list(self.notes)}

    def lines(self) -> list[str]:
        """A short human-readable summary."""
        out = [f"{self.model_type}: {len(self.outcomes)} uncovered classes -> "
               f"{self.count('transferred')} transferred, {self.count('derived')} derived, "
               f"{self.count('none')} still uncovered"]
        if self.sampled != "decoder" or self.sample_method != "meta" or self.notes:
            what = {"decoder": "prefill and decode", "prefill": "prefill only",
                    "vision": "batch only (image size fixed)"}.get(self.sampled, self.sampled)
            out.append(f"  sampled {what} on {self.sample_method}"
                       + "".join(f"; {n}" for n in self.notes))
        for label, s in (("before", self.before), ("after", self.after)):
            shares = ", ".join(f"{k} {s.flops_by_source.get(k, 0):.1%}/"
                               f"{s.bytes_by_source.get(k, 0):.1%}" for k in SOURCES
                               if s.flops_by_source.get(k) or s.bytes_by_source.get(k))
            out.append(f"  {label}: flops/bytes by source: {shares}; exact calls "
                       f"{s.exact_calls}/{s.calls}")
        for o in self.outcomes:
            if o.source == "none":
                out.append(f"  none: {o.class_name}: {o.reason}")
        return out + (self.backward.lines() if self.backward is not None else [])


def source_of(registry: Registry, key: str) -> str:
    """builtin / transferred / derived / agent / user for an entry in `registry`."""
    if registry.source_of(key) == "builtin":
        return "builtin"
    src = registry.get(key).validation.source
    return src if src in SOURCES else "user"


def summarize(trace: Trace, recon: Reconciliation, registry: Registry) -> CoverageSummary:
    """Coverage by source of one reconciled trace (failed binds count as not covered): each
    aten op is credited to the innermost call around it whose formula binds and evaluates."""
    by_id = {r.call_id: r for r in recon.calls}
    flops: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    calls_by: dict[str, int] = {}
    # each call's own ops go to the innermost enclosing call (itself included) whose formula
    # binds and evaluates; the call counts under its own formula's source
    owner: dict[int, str] = {}
    for call in trace.calls:  # parents precede children
        result = by_id[call.call_id]
        inherited = owner.get(call.parent_call_id, "none") if call.parent_call_id is not None \
            else "none"
        if result.status != "no_formula" and result.error is None:
            src = source_of(registry, registry.resolve_key(call.formula_key) or "")
            calls_by[src] = calls_by.get(src, 0) + 1
            owner[call.call_id] = src
        else:
            calls_by["none"] = calls_by.get("none", 0) + 1
            owner[call.call_id] = inherited
        own = call.self_counters
        flops[owner[call.call_id]] = flops.get(owner[call.call_id], 0) + own.flops
        nbytes[owner[call.call_id]] = nbytes.get(owner[call.call_id], 0) + own.bytes_read + \
            own.bytes_written
    total = trace.totals
    total_bytes = total.bytes_read + total.bytes_written
    outside_b = trace.outside.bytes_read + trace.outside.bytes_written
    flops["none"] = flops.get("none", 0) + trace.outside.flops
    nbytes["none"] = nbytes.get("none", 0) + outside_b
    return CoverageSummary(
        flops_by_source={k: (v / total.flops if total.flops else 0.0) for k, v in flops.items()},
        bytes_by_source={k: (v / total_bytes if total_bytes else 0.0) for k, v in nbytes.items()},
        calls_by_source=calls_by, calls=len(recon.calls),
        exact_calls=sum(1 for r in recon.calls if r.status == "exact"),
        failed_binds=sum(1 for r in recon.calls if r.error is not None))


def _summary_over(samples: list[Sample], registry: Registry) -> CoverageSummary:
    """Summary of the first prefill and first decode sample together (calls added up)."""
    picked = [next(s for s in samples if s.point.kv_len == 0)]
    picked += [s for s in samples if s.point.kv_len > 0][:1]
    parts = [summarize(s.trace, reconcile(s.trace, registry), registry) for s in picked]
    first = parts[0]
    for other in parts[1:]:
        first.calls += other.calls
        first.exact_calls += other.exact_calls
        first.failed_binds += other.failed_binds
        for k, v in other.calls_by_source.items():
            first.calls_by_source[k] = first.calls_by_source.get(k, 0) + v
    return first


def _stale(call: CallRecord, config: dict[str, Any], registry: Registry) -> bool:
    """A derived or transferred entry that does not hold for this call: a derived one that does
    not bind (made for another config or dtype), a transferred one that is not exact (verified
    on a config that did not exercise this call's code path)."""
    entry = registry.find(call.formula_key)
    if entry is None or entry.validation.source not in ("derived", "transferred"):
        return False
    try:
        params = registry.bind(entry.key, roots_of(call, config))
        if entry.validation.source == "derived":
            return False
        predicted = registry.evaluate_all(entry.key, params)
    except FormulaError:
        return True
    measured = call.inclusive.as_dict()
    measured["activation_bytes"] = call.activation_bytes
    return any(predicted[m] != measured[m] for m in measured)


def uncovered_classes(traces: list[Trace], registry: Registry) -> list[tuple[str, str]]:
    """(key, dotted class name) of classes without an entry, or whose derived / transferred
    entry does not hold for this model (see `_stale`), deepest first."""
    depth: dict[str, tuple[int, str]] = {}
    for trace in traces:
        for call in trace.calls:
            if registry.resolve_key(call.formula_key) is None or \
                    _stale(call, trace.config, registry):
                d = depth.get(call.formula_key, (-1, call.class_name))[0]
                depth[call.formula_key] = (max(d, call.depth), call.class_name)
    return [(k, name) for k, (d, name) in sorted(depth.items(), key=lambda kv: (-kv[1][0], kv[0]))]


def cover_model(config: Any, registry: Registry | None = None, *, store: bool = True,
                user_path: str | Path | None = None, transfer: bool = True,
                derive: bool = True, samples: list[Sample] | None = None,
                points: tuple[Point, ...] = FIT_POINTS,
                held_out: tuple[Point, ...] = HELD_OUT_POINTS,
                dtype: Any = None, backward: bool = True, method: str = "meta",
                model: Any = None, architecture: str | None = None,
                time_budget_s: float | None = None) -> CoverageReport:
    """Transfer, then derive, an entry for every uncovered class of the model built from
    `config`; with `backward`, give every transferred or derived entry a verified backward
    (`lm_predictor.derive_backward`); store the accepted ones in the user database (unless
    `store=False`).

    The samples are traced as `lm_predictor.sampling.sample_points` says: `model` (or
    `architecture`) is the class to sample (default: `build_model`'s choice for `config`),
    `method` how the model traced (`lm_predictor.fallback`; `cpu` / `cpu-truncated` sample on
    CPU the config given, which under `cpu-truncated` must be the truncated one).
    `time_budget_s`: classes reached after this many seconds (sampling included) are not tried
    (their outcome says so), for callers with a deadline (the sweep)."""
    started = time.monotonic()
    registry = registry or Registry.default(user_path)
    samples = samples or sample_traces(config, points, held_out, model=model,
                                       method=method, architecture=architecture,
                                       **({"dtype": dtype} if dtype is not None else {}))
    before = _summary_over(samples, registry)
    trace0 = samples[0].trace
    work = registry
    outcomes: list[ClassOutcome] = []
    accepted: list[FormulaEntry] = []
    preferred: dict[str, int] = {}
    traced = sorted({c.class_name for c in trace0.calls})
    model_type = str(getattr(config, "model_type", "") or "")
    probe = [trace0] + [s.trace for s in samples if s.point.kv_len > 0][:1]
    bw = None
    backward_notes: list[str] = []
    if backward:
        from lm_predictor.derive_backward import BackwardCoverer
        bw = BackwardCoverer(config, samples, model_type=model_type,
                             **({"dtype": dtype} if dtype is not None else {}))
    for key, name in uncovered_classes(probe, registry):
        outcome = ClassOutcome(key, name, "none")
        entry: FormulaEntry | None = None
        if time_budget_s is not None and time.monotonic() - started > time_budget_s:
            outcome.reason = f"not tried: covering ran past its time budget ({time_budget_s:g} s)"
            outcomes.append(outcome)
            continue
        if transfer:
            result = Transferrer(samples, work, traced, preferred).transfer(key, name)
            outcome.tried = result.tried
            if result.entry is not None and result.source_key:
                entry = result.entry
                src_module = work.get(result.source_key).full_class_name.rpartition(".")[0]
                preferred[src_module] = preferred.get(src_module, 0) + 1
                outcome.source, outcome.transferred_from = "transferred", result.source_key
        if entry is None and derive:
            result_d = Deriver(samples, work, model_type).derive(key, name)
            if result_d.entry is not None:
                entry = result_d.entry
                outcome.source = "derived"
            else:
                outcome.reason = result_d.reason
        if entry is None and not outcome.reason:
            outcome.reason = "; ".join(f"{k}: {r}" for k, r in outcome.tried[:3]) or \
                "no candidate"
        if entry is not None and bw is not None:  # a verified backward (derive_backward)
            try:
                entry = bw.add(key, name, entry, work)
            except Exception as exc:  # noqa: BLE001 - the model cannot train here: forward only
                backward_notes.append(f"backward not covered: a training step of this model "
                                      f"cannot be traced ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0][:160] if str(exc) else ''})")
                bw = None
            else:
                outcome.source = entry.validation.source
                outcome.transferred_from = entry.validation.transferred_from
        if entry is not None:
            accepted.append(entry)
            work = with_entries(work, [entry])
        outcomes.append(outcome)
    if bw is not None:
        try:
            work = bw.finish(work)
        except Exception as exc:  # noqa: BLE001 - forward entries stand
            backward_notes.append(f"backward not covered: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:160] if str(exc) else ''}")
            bw = None
    if bw is not None:
        changed = dict(bw.report.entries)
        accepted = [changed.pop(e.key, e) for e in accepted] + list(changed.values())
        work = with_entries(registry, accepted)
    after = _summary_over(samples, work)
    stored: Path | None = None
    if store and accepted:
        stored = user_db_path(user_path)
        save_entries(stored, accepted)
    return CoverageReport(model_type, config_hash(guard_values(trace0.config)), outcomes,
                          before, after, accepted, stored, bw.report if bw else None,
                          sampled=str(getattr(samples, "kind", "decoder")),
                          sample_method=str(getattr(samples, "method", "meta")),
                          notes=list(getattr(samples, "notes", [])) + backward_notes)
