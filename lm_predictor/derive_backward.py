"""Backward for covered entries: a verified `backward` block (and training-mode forward terms)
for every transferred or derived entry of a model, fitted and checked on traced training steps.

`lm_predictor.coverage.cover_model` transfers or derives forward entries from inference traces.
A training step (`tracing.train.trace_training_step`: forward with labels, the loss,
`loss.backward()`) adds what those traces never show: the backward ops of the autograd nodes each
call created, and the tensors autograd keeps alive (activation bytes in training mode). This
module traces training steps on `meta` (prefill only, no cache, in the model's dtype) at fit
shapes (batch 1-3 x seq 2, 3, 5) and held-out shapes ((4, 7), (1, 4)), under each attention
backward kind asked for (flash and math by default), and visits the transferred and derived
entries of the traced classes deepest first, so a parent sees its children's new backward:

- transferred: the source's backward block (nested calls already rewritten by the transfer) is
  kept only if the entry, forward and backward, equals measurement on every call at every
  training sample; otherwise another same-suffix source whose backward is exact is adopted
  (SeedOss adopted Qwen2-MoE's RMSNorm, which has no backward, and gets Llama's; once other
  entries call the class, only a source with the same parameters); otherwise the block is
  dropped and a backward is derived (below) over the transferred forward, with `batch` /
  `seq_len` (or generic sizes `x0`, `x1`), `s` and the derived entries' config guard appended
  to its parameters (callers' positional nested calls stay valid; the entry now holds for this
  config and is marked derived, `transferred_from` kept); when that fails the transferred entry
  stays, without a backward block, with the reason;
- derived: a `grad_enabled` parameter (`get(module, 'grad_enabled', false)`, as zoo entries)
  gates the training-mode forward: a counter metric that differs in training becomes
  `T + (${grad_enabled} ? delta : 0)`, activation bytes `(${grad_enabled} ? train : infer)`;
  backward templates are the children's backward formulas as nested calls (children whose entry
  has a backward block exact at every fit call; the nested call evaluates the callee's backward
  of the same metric) plus the class's own backward cost, an exact polynomial in the entry's
  variables (degree <= 1 in batch, <= 2 in seq_len), one per regime when one does not fit:
  attention backward kind (`${flash} ? flash_poly : math_poly`, `flash` bound as zoo entries
  bind it) and batch > 1 (the causal-LM loss copies the shifted labels only then). The entry is
  kept only if every call at every training sample, held-out shapes included, is exact forward and
  backward, and every inference sample is still exact; otherwise it stays forward-only and the
  reason is recorded.

`BackwardCoverer` runs this inside `cover_model`: `add` for each entry as it is accepted
(deepest first), `finish` for the model's other transferred or derived entries (stored by an
earlier run without backward). Derived backward templates hold for the traced config (the
forward's guard parameter still applies) and for training without a cache (kv_len 0), like the
zoo's backward blocks.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import product
from typing import Any

import torch

from formula_db.errors import FormulaError
from formula_db.registry import Registry
from formula_db.schema import METRICS, FormulaEntry
from lm_predictor.derive import (GUARD, Deriver, Point, Sample, _literal, child_slots,
                                 nested_calls_text,
                                 config_hash, guard_bind, guard_values, instances, itemsize_bind,
                                 poly_text, roots_of, solve_exact, verify, with_entries)
from lm_predictor.results import BACKWARD_METRICS
from tracing.records import CallRecord

TRAIN_FIT_POINTS: tuple[Point, ...] = tuple(Point(b, s) for b in (1, 2, 3) for s in (2, 3, 5))
TRAIN_HELD_OUT_POINTS: tuple[Point, ...] = (Point(4, 7), Point(1, 4))
KINDS: tuple[str, ...] = ("flash", "math")
VARIABLES = ("batch", "seq_len", "x0", "x1")  # derived entries' shape parameters (kv_len: 0)
GRAD = "grad_enabled"
GRAD_PARAM = {"name": GRAD, "type": "bool", "default": False,
              "bind": "get(module, 'grad_enabled', false)",
              "description": "autograd records the forward (training step): tensors saved for "
                             "backward stay alive"}
FLASH_PARAM = {"name": "flash", "type": "bool", "default": True,
               "bind": "get(config, 'attention_backward', 'flash') == 'flash'",
               "description": "the SDPA backward is counted as the flash kernel (else the math "
                              "backward)"}


@dataclass
class TrainSample:
    """A traced training step at one (batch, seq) and attention backward kind."""

    point: Point
    kind: str
    trace: Any
    held_out: bool = False


@dataclass
class BackwardOutcome:
    """What happened to one class's backward: `kept` (the transferred block is exact),
    `retransferred` (another source with the same parameters and an exact backward adopted),
    `derived` (fitted and verified), `forward_only` (no verified backward; see `reason`),
    `exact` (the entry already had an exact backward)."""

    key: str
    class_name: str
    source: str  # the entry's validation source after this step
    status: str
    reason: str = ""


@dataclass
class BackwardReport:
    """Entries changed by `cover_backward` (by key) and one outcome per visited class."""

    entries: dict[str, FormulaEntry] = field(default_factory=dict)
    outcomes: list[BackwardOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def lines(self) -> list[str]:
        out = [f"  backward: {self.count('kept')} kept, {self.count('retransferred')} "
               f"retransferred, {self.count('derived')} derived, "
               f"{self.count('exact')} already exact, {self.count('forward_only')} forward only "
               f"({self.seconds:.1f} s)"]
        out += [f"  forward only: {o.class_name}: {o.reason}" for o in self.outcomes
                if o.status == "forward_only"]
        return out


def training_samples(config: Any, dtype: torch.dtype = torch.float32,
                     points: Iterable[Point] = TRAIN_FIT_POINTS,
                     held_out: Iterable[Point] = TRAIN_HELD_OUT_POINTS,
                     kinds: Sequence[str] = KINDS,
                     model: torch.nn.Module | None = None) -> list[TrainSample]:
    """One traced training step of `config` (built once on meta in `dtype`) per point and
    attention backward kind."""
    from lm_predictor.models import build_model
    from tracing.train import trace_training_step

    model = model or build_model(config, device="meta", dtype=dtype)
    out: list[TrainSample] = []
    for held, pts in ((False, points), (True, held_out)):
        for p in pts:
            for kind in kinds:
                ids = torch.zeros((p.batch, p.seq_len), dtype=torch.long, device="meta")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = trace_training_step(model, {"input_ids": ids}, attention_backward=kind,
                                            device_timing=False)
                out.append(TrainSample(p, kind, t, held))
    return out


def _measured(call: CallRecord) -> dict[str, int]:
    out = call.inclusive.as_dict()
    out["activation_bytes"] = call.activation_bytes
    return out


def training_problem(entry: FormulaEntry, registry: Registry,
                     calls: Sequence[tuple[TrainSample, CallRecord]]) -> str | None:
    """None when `entry` (over `registry`) equals measurement on every training call, forward
    (five metrics) and backward (four); else the first difference."""
    reg = with_entries(registry, [entry])
    if entry.backward is None:
        return "no backward block"
    for s, c in calls:
        where = (f"{c.module_path or '(model)'} at batch {s.point.batch}, seq {s.point.seq_len} "
                 f"({s.kind})")
        try:
            params = reg.bind(entry.key, roots_of(c, s.trace.config))
            forward = reg.evaluate_all(entry.key, params)
            backward = reg.evaluate_backward(entry.key, params) or {}
        except FormulaError as exc:
            return f"{where}: {exc}"
        measured = _measured(c)
        for m in METRICS:
            if forward[m] != measured[m]:
                return f"{where}: forward {m} measured {measured[m]}, formula {forward[m]}"
        bmeasured = c.backward_inclusive.as_dict()
        for m in BACKWARD_METRICS:
            if backward.get(m) != bmeasured[m]:
                return f"{where}: backward {m} measured {bmeasured[m]}, formula {backward.get(m)}"
    return None


def _wrap(text: str) -> str:
    return text if text.replace("_", "").isalnum() else f"({text})"


class BackwardDeriver:
    """Gives the transferred and derived entries of one model a verified backward."""

    def __init__(self, train: list[TrainSample], infer: list[Sample], registry: Registry,
                 model_type: str = "") -> None:
        self.train = train
        self.infer = infer
        self.registry = registry
        self.model_type = model_type
        self.kinds = sorted({s.kind for s in train})

    # calls ----------------------------------------------------------------------------------
    def calls(self, key: str, held_out: bool | None = None
              ) -> list[tuple[TrainSample, CallRecord]]:
        return [(s, c) for s in self.train if held_out is None or s.held_out == held_out
                for c in instances(s.trace, key).values() if c.phase != "recompute"]

    def infer_calls(self, key: str) -> list[tuple[Sample, CallRecord]]:
        return [(s, c) for s in self.infer for c in instances(s.trace, key).values()]

    # the entry point per class --------------------------------------------------------------
    def visit(self, key: str, class_name: str, entry: FormulaEntry | None = None,
              keep_signature: bool = True) -> tuple[FormulaEntry | None, BackwardOutcome]:
        """(changed entry or None, outcome) for the class `key`: `entry`, else the registry's.
        `keep_signature`: other entries may already call this one (its parameters must stay);
        False while covering deepest first, before any parent exists."""
        entry = entry or self.registry.get(key)
        source = entry.validation.source
        calls = self.calls(key)
        if not calls:
            return None, BackwardOutcome(key, class_name, source, "forward_only",
                                         "the class is not called in a training step")
        if entry.backward is not None:
            problem = training_problem(entry, self.registry, calls)
            if problem is None:
                return None, BackwardOutcome(key, class_name, source,
                                             "kept" if source == "transferred" else "exact")
            if source == "transferred":
                status_reason = f"transferred backward not exact: {problem}"
            else:
                status_reason = f"backward not exact: {problem}"
        else:
            status_reason = "no backward block"
        base = entry
        if source == "transferred":
            other = self._retransfer(entry, calls, keep_signature)
            if other is not None:
                return other, BackwardOutcome(
                    key, class_name, source, "retransferred",
                    f"adopted {other.validation.transferred_from} instead of "
                    f"{entry.validation.transferred_from} ({status_reason})")
            # the transferred forward reads the config; a derived backward needs shape
            # variables and holds for this config only: append them (and the guard) after the
            # entry's parameters, so that callers' positional nested calls stay valid
            bases = self._with_variables(entry)
            if isinstance(bases, str):
                return _without_backward(entry), BackwardOutcome(
                    key, class_name, source, "forward_only", f"{status_reason}; {bases}")
            reasons: list[str] = []
            for candidate in bases:
                result = self.derive(candidate, calls)
                if not isinstance(result, str):
                    break
                reasons.append(result)
            else:
                return _without_backward(entry), BackwardOutcome(
                    key, class_name, source, "forward_only",
                    f"{status_reason}; derived backward: {reasons[0]}")
        else:
            result = self.derive(base, calls)
            if isinstance(result, str):
                kept = _without_backward(base) if base.backward else None
                return kept, BackwardOutcome(key, class_name, source, "forward_only", result)
        note = (f"forward transferred, backward derived for this config ({status_reason})"
                if source == "transferred" else "")
        return result, BackwardOutcome(key, class_name, result.validation.source, "derived", note)

    def _retransfer(self, entry: FormulaEntry, calls: list[tuple[TrainSample, CallRecord]],
                    keep_signature: bool) -> FormulaEntry | None:
        """Another same-suffix source (with the same parameters when `keep_signature`, so
        callers' nested calls stay valid) whose backward block is exact in training and whose
        forward is exact at every inference sample; None when there is none."""
        from lm_predictor.transfer import Transferrer

        traced = sorted({c.class_name for s in self.infer[:1] for c in s.trace.calls})
        transferrer = Transferrer(self.infer, self.registry, traced)
        names = [p.name for p in entry.parameters]
        for cand in transferrer.candidates(entry.full_class_name):
            if cand.backward is None or cand.key == entry.validation.transferred_from or (
                    keep_signature and [p.name for p in cand.parameters] != names):
                continue
            try:
                new = transferrer.rewrite(cand, entry.full_class_name)
            except ValueError:
                continue
            if training_problem(new, self.registry, calls) is None and \
                    verify(new, self.registry, self.infer_calls(entry.key)) is None:
                return new
        return None

    def _with_variables(self, entry: FormulaEntry) -> list[FormulaEntry] | str:
        """The transferred entry with shape variables (bound from the call), `s` and the config
        guard appended (with defaults), marked derived, for its backward to be fitted: first
        with `batch` / `seq_len`, then with one or two generic features (`x0`, `x1`: MoE
        experts and routers see tokens x hidden)."""
        deriver = Deriver(self.infer, self.registry, self.model_type)
        calls = deriver._calls(entry.key)
        if isinstance(calls, str):
            return f"no shape variables: {calls}"
        have = {p.name for p in entry.parameters}
        shape = deriver.shape_of(calls)
        shapes = [[(n, b) for n, b in zip(shape.names, shape.binds)
                   if n in ("batch", "seq_len") and n not in have]]
        if not shapes[0] and not {"batch", "seq_len"} & have:
            shapes = []
        if not {"x0", "x1"} & have:
            shapes += [list(zip(g.names, g.binds)) for g in deriver._generic_shapes(calls)][:6]
        if not shapes:
            return "no batch, sequence or size variable binds on the class's calls"
        out: list[FormulaEntry] = []
        for variables in shapes:
            added = [{"name": name, "type": "int", "default": 1, "bind": bind,
                      "description": f"{name} (bound from the call; the derived backward's "
                                     f"variable)"} for name, bind in variables]
            made = self._augmented(entry, added, deriver, calls)
            if isinstance(made, str):
                return made
            out.append(made)
        return out

    def _augmented(self, entry: FormulaEntry, added: list[dict[str, Any]], deriver: Deriver,
                   calls: list[tuple[Sample, CallRecord]]) -> FormulaEntry | str:
        have = {p.name for p in entry.parameters}
        s_bind, itemsize = itemsize_bind(calls[0][1], deriver.traced_itemsize())
        if "s" not in have:
            added.append({"name": "s", "type": "int", "default": itemsize, "bind": s_bind,
                          "description": "bytes per element of the activations"})
        added.append({"name": GUARD, "type": "int", "default": 1,
                      "bind": guard_bind(deriver.config, self.model_type, itemsize),
                      "description": "refuses configs other than the one the backward was "
                                     "derived for"})
        data = entry.model_dump(mode="json")
        data["backward"] = None
        data["parameters"] = data["parameters"] + added
        values = guard_values(deriver.config)
        data["validation"] = dict(data["validation"], source="derived",
                                  config_hash=config_hash(values), config_values=values)
        data["description"] = ("backward derived for one config; " + data["description"])
        try:
            return FormulaEntry.model_validate(data)
        except ValueError as exc:
            return f"entry invalid: {str(exc).splitlines()[-1][:200]}"

    # derivation -----------------------------------------------------------------------------
    def _variables(self, entry: FormulaEntry, reg: Registry,
                   calls: Sequence[tuple[TrainSample, CallRecord]]
                   ) -> tuple[list[str], list[dict[str, Any]]] | str:
        names = [p.name for p in entry.parameters if p.name in VARIABLES]
        bound: list[dict[str, Any]] = []
        for s, c in calls:
            try:
                params = reg.bind(entry.key, roots_of(c, s.trace.config))
            except FormulaError as exc:
                return f"does not bind in a training step: {exc}"
            if params.get("kv_len", 0):
                return "kv_len > 0 in a training step (a filled cache is not modelled)"
            bound.append(params)
        return names, bound

    def _fit(self, names: list[str], data: list[tuple[dict[str, Any], int]]) -> str | None:
        """Polynomial text through every (variables + flash, target) pair; when one polynomial
        does not fit, one per regime: attention backward kind (`${flash}`) and/or batch > 1
        (the causal-LM loss copies shifted labels only for batch > 1)."""
        options: list[tuple[str, ...]] = [()]
        kinds = {v["flash"] for v, _ in data}
        batches = {v["batch"] for v, _ in data} if "batch" in names else set()
        if len(kinds) > 1:
            options.append(("flash",))
        if 1 in batches and len(batches) > 2:
            options.append(("batch",))
            if len(kinds) > 1:
                options.append(("flash", "batch"))
        for keys in options:
            text = _fit_split(names, data, keys)
            if text is not None:
                return text
        return None

    def _nested(self, names: list[str], fit: list[tuple[TrainSample, CallRecord]],
                values: list[dict[str, Any]], flash_param: list[dict[str, Any]]
                ) -> tuple[list[tuple[str, list[str]]], list[dict[str, int]]]:
        """Children with an exact backward as nested calls (key, argument texts), and per fit
        call the summed backward they predict."""
        s0, c0 = fit[0]
        sums = [{m: 0 for m in BACKWARD_METRICS} for _ in fit]
        nested: list[tuple[str, list[str]]] = []
        for slot, child0 in child_slots(s0.trace, c0).items():
            entry = self.registry.find(child0.formula_key)
            if entry is None or entry.backward is None:
                continue
            per: list[tuple[dict[str, Any], dict[str, Any]]] = []
            for s, c in fit:
                child = child_slots(s.trace, c).get(slot)
                if child is None or child.formula_key != child0.formula_key:
                    break
                try:
                    params = self.registry.bind(entry.key, roots_of(child, s.trace.config))
                    predicted = self.registry.evaluate_backward(entry.key, params) or {}
                except FormulaError:
                    break
                measured = child.backward_inclusive.as_dict()
                if any(predicted.get(m) != measured[m] for m in BACKWARD_METRICS):
                    break  # only exact children are nested; others fold into own cost
                per.append((params, predicted))
            if len(per) != len(fit):
                continue
            args: list[str] = []
            for p in entry.parameters:
                vals = [params[p.name] for params, _ in per]
                same = next((n for n in names if all(v == vv[n] for v, vv in zip(vals, values))),
                            None)
                if same is not None:
                    args.append(f"${{{same}}}")
                elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                    text = self._fit(names, [(vv, v) for v, vv in zip(vals, values)])
                    if text is None:
                        break
                    args.append(text)
                elif len(set(map(repr, vals))) == 1 and _literal(vals[0]) is not None:
                    args.append(str(_literal(vals[0])))
                elif all(v == vv["flash"] for v, vv in zip(vals, values)):
                    flash_param[:] = [FLASH_PARAM]
                    args.append("${flash}")
                else:
                    break
            else:
                nested.append((entry.key, args))
                for acc, (_, predicted) in zip(sums, per):
                    for m in BACKWARD_METRICS:
                        acc[m] += int(predicted[m])
        return nested, sums

    def derive(self, entry: FormulaEntry, calls: list[tuple[TrainSample, CallRecord]]
               ) -> FormulaEntry | str:
        """`entry` with training-mode forward terms and a fitted backward block, or the reason."""
        data = entry.model_dump(mode="json")
        data["backward"] = None
        have = {p["name"] for p in data["parameters"]}
        if GRAD not in have:  # appended: callers' positional nested calls stay valid
            data["parameters"] = data["parameters"] + [dict(GRAD_PARAM)]
        start = FormulaEntry.model_validate(data)
        reg = with_entries(self.registry, [start])
        fit = [(s, c) for s, c in calls if not s.held_out]
        got = self._variables(start, reg, fit)
        if isinstance(got, str):
            return got
        names, bound = got
        values = [dict(b, flash=s.kind == "flash") for b, (s, _) in zip(bound, fit)]
        # training-mode forward: what the inference templates miss, gated on grad_enabled
        for m in METRICS:
            diffs = []
            for b, (s, c) in zip(bound, fit):
                predicted = reg.evaluate(start.key, m, b)
                diffs.append(_measured(c)[m] - predicted)
            if not any(diffs):
                continue
            if m == "activation_bytes":
                text = self._fit(names, [(v, _measured(c)[m]) for v, (_, c) in zip(values, fit)])
                if text is None:
                    return (f"training-mode {m} is not one polynomial in "
                            f"{', '.join(names) or 'no variables'}")
                data[m] = f"(${{{GRAD}}} ? {text} : {_wrap(data[m])})"
            else:
                text = self._fit(names, [(v, d) for v, d in zip(values, diffs)])
                if text is None:
                    return (f"training-mode forward {m} is not one polynomial in "
                            f"{', '.join(names) or 'no variables'}")
                data[m] = f"{data[m]} + (${{{GRAD}}} ? {text} : 0)"
        # backward: children's backward as nested calls plus the class's own cost
        flash_param: list[dict[str, Any]] = []
        nested, sums = self._nested(names, fit, values, flash_param)
        calls_text = nested_calls_text(nested)
        backward: dict[str, str] = {}
        for m in BACKWARD_METRICS:
            own = [(v, c.backward_inclusive.as_dict()[m] - acc[m])
                   for v, acc, (_, c) in zip(values, sums, fit)]
            text = self._fit(names, own)
            if text is None:
                return (f"backward {m} is not one polynomial in "
                        f"{', '.join(names) or 'no variables'} over the training shapes")
            if "${flash}" in text:
                flash_param[:] = [FLASH_PARAM]
            backward[m] = text if not calls_text else \
                calls_text if text == "0" else f"{calls_text} + {text}"
        data["backward"] = backward
        if "flash" not in have:
            data["parameters"] = data["parameters"] + flash_param
        deps = set(data["module_depends"]) | {ck for ck, _ in nested}
        data["module_depends"] = sorted(deps)
        validation = dict(data["validation"])
        validation["notes"] = (f"{validation.get('notes') or ''}; backward and training-mode "
                               f"forward fitted over meta training steps "
                               f"({', '.join(self.kinds)} attention backward), verified at "
                               f"held-out shapes").lstrip("; ")
        data["validation"] = validation
        try:
            out = FormulaEntry.model_validate(data)
        except ValueError as exc:
            return f"entry invalid: {str(exc).splitlines()[-1][:200]}"
        problem = training_problem(out, self.registry, calls)
        if problem is not None:
            return f"held-out training check: {problem}"
        problem = verify(out, self.registry, self.infer_calls(entry.key))
        if problem is not None:
            return f"inference check after adding training terms: {problem}"
        return out


def poly_fit(data: list[tuple[dict[str, Any], int]], names: list[str]
             ) -> dict[tuple[tuple[str, int], ...], Fraction] | None:
    """Exact polynomial through every (values, target) pair: degree <= 1 in batch (rows of a
    batch are independent), <= 2 in every other variable, <= 3 in total; None if none fits."""
    mons = [tuple((n, d) for n, d in zip(names, degs) if d)
            for degs in product(*[range((1 if n == "batch" else 2) + 1) for n in names])
            if sum(degs) <= 3]
    mons.sort(key=lambda m: (sum(d for _, d in m), m))
    rows = [[Fraction(_mono(m, v)) for m in mons] for v, _ in data]
    sol = solve_exact(rows, [Fraction(t) for _, t in data])
    if sol is None:
        return None
    return {m: c for m, c in zip(mons, sol) if c != 0}


def _fit_split(names: list[str], data: list[tuple[dict[str, Any], int]],
               keys: tuple[str, ...]) -> str | None:
    if not keys:
        poly = poly_fit(data, names)
        return None if poly is None else poly_text(poly)
    key, rest = keys[0], keys[1:]
    if key == "flash":
        yes = [(v, t) for v, t in data if v["flash"]]
        no = [(v, t) for v, t in data if not v["flash"]]
        cond = "${flash}"
    else:
        yes = [(v, t) for v, t in data if v["batch"] > 1]
        no = [(v, t) for v, t in data if v["batch"] == 1]
        cond = "${batch} > 1"
    if not yes or not no:
        return None
    a, b = _fit_split(names, yes, rest), _fit_split(names, no, rest)
    if a is None or b is None:
        return None
    return a if a == b else f"({cond} ? {a} : {b})"


def _without_backward(entry: FormulaEntry) -> FormulaEntry:
    data = entry.model_dump(mode="json")
    data["backward"] = None
    return FormulaEntry.model_validate(data)


def _mono(m: Any, values: Mapping[str, Any]) -> int:
    out = 1
    for name, deg in m:
        out *= values[name] ** deg
    return out


def _depth_order(train: list[TrainSample], registry: Registry) -> list[tuple[str, str]]:
    """(key, class name) of traced classes whose entry is transferred or derived, deepest
    first."""
    depth: dict[str, tuple[int, str]] = {}
    for s in train[:1]:
        for call in s.trace.calls:
            key = registry.resolve_key(call.formula_key)
            if key is None:
                continue
            if registry.get(key).validation.source not in ("transferred", "derived"):
                continue
            d = depth.get(key, (-1, call.class_name))[0]
            depth[key] = (max(d, call.depth), call.class_name)
    return [(k, n) for k, (d, n) in sorted(depth.items(), key=lambda kv: (-kv[1][0], kv[0]))]


class BackwardCoverer:
    """Backward for one model's covered entries: `add` while `cover_model` accepts them
    (deepest first, so a transferred entry may still be swapped for another source), then
    `finish` for the model's other transferred or derived entries (stored by earlier runs).
    Training steps are traced on first use only."""

    def __init__(self, config: Any, infer: list[Sample], *, dtype: torch.dtype = torch.float32,
                 model_type: str = "", kinds: Sequence[str] = KINDS,
                 train: list[TrainSample] | None = None) -> None:
        self.config = config
        self.infer = infer
        self.dtype = dtype
        self.model_type = model_type
        self.kinds = tuple(kinds)
        self._train = train
        self.report = BackwardReport()
        self.handled: set[str] = set()

    @property
    def train(self) -> list[TrainSample]:
        if self._train is None:
            self._train = training_samples(self.config, self.dtype, kinds=self.kinds)
        return self._train

    def _visit(self, key: str, name: str, registry: Registry, entry: FormulaEntry | None,
               keep_signature: bool) -> FormulaEntry | None:
        import time

        start = time.perf_counter()
        deriver = BackwardDeriver(self.train, self.infer, registry, self.model_type)
        new, outcome = deriver.visit(key, name, entry, keep_signature)
        self.report.outcomes.append(outcome)
        self.handled.add(key)
        if new is not None:
            self.report.entries[key] = new
        self.report.seconds += time.perf_counter() - start
        return new

    def add(self, key: str, name: str, entry: FormulaEntry, registry: Registry) -> FormulaEntry:
        """`entry` (just transferred or derived for class `key`, not yet in `registry`) with a
        verified backward when one is found, else as it is (or without its backward block)."""
        return self._visit(key, name, registry, entry, keep_signature=False) or entry

    def finish(self, registry: Registry) -> Registry:
        """Visit the traced classes whose transferred or derived entry was not added here;
        returns `registry` with every changed entry."""
        if self.infer and not any(
                (key := registry.resolve_key(c.formula_key)) is not None
                and key not in self.handled
                and registry.get(key).validation.source in ("transferred", "derived")
                for c in self.infer[0].trace.calls):
            return registry  # nothing else to visit: no training step to trace for it
        for key, name in _depth_order(self.train, registry):
            if key in self.handled:
                continue
            new = self._visit(key, name, registry, None, keep_signature=True)
            if new is not None:
                registry = with_entries(registry, [new])
        return registry


def cover_backward(config: Any, registry: Registry, infer: list[Sample], *,
                   dtype: torch.dtype = torch.float32, model_type: str = "",
                   kinds: Sequence[str] = KINDS,
                   train: list[TrainSample] | None = None) -> BackwardReport:
    """Give every transferred or derived entry (in `registry`) of the model built from
    `config` a verified backward; `infer` are the inference samples the forward was verified
    on (re-checked after training terms are added). The changed entries are returned, not
    stored."""
    coverer = BackwardCoverer(config, infer, dtype=dtype, model_type=model_type, kinds=kinds,
                              train=train)
    coverer.finish(registry)
    return coverer.report
