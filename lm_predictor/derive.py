"""Derivation without an LLM: a formula entry for an uncovered class, fitted exactly from meta traces.

The model is traced on `meta` at a grid of shapes (`FIT_POINTS`: batch 1-3 x seq 2, 3, 5 prefill
and batch 1-3 x kv 2, 3, 5 one-token decode) plus held-out shapes (`HELD_OUT_POINTS`: batch 1 and
batches past the fitted ones, lengths past them). For one class:

1. Variables. Bind expressions for `batch`, `seq_len` and `kv_len` are searched among the
   call's described inputs (tensor dimensions, the KV cache's reported length, the cache length
   corrected by `module.layer_idx` / `module.list_index` for layers that see an already updated
   cache) and accepted only if they equal the true shape at every call of every trace. Classes
   whose inputs hide the shape (MoE experts see `tokens x hidden`, a rotary embedding sees
   position ids) fall back to one or two generic features (a tensor dimension, element count or
   row count). Instances that cost differently at the same shape (dense and MoE layers,
   alternating sliding / full attention) are told apart by a module attribute (`variant`).
2. Children. Every child call whose class has a formula exact on it becomes a nested call
   `{child}(args)`, each argument a closed form in the parent's variables fitted from the child's
   bound parameters (non-integer arguments must be constant). Children that do not bind are
   folded into the parent's own cost.
3. Own cost. Measured inclusive cost minus the children's formulas (flops, vector_flops,
   bytes_read, bytes_written); activation_bytes whole. Each is an exact polynomial (rational
   coefficients, exact linear algebra over `fractions.Fraction`), linear in batch: with a kv
   variable, one polynomial per regime, `${kv_len} > 0 ? decode(batch, kv_len) :
   prefill(batch, seq_len)` (without one, `${seq_len} == 1` tells decode apart when needed);
   batch 1 gets its own polynomial, `${batch} == 1 ? p1 : p`, when it is off the line of larger
   batches (a mask of batch 1 broadcasts where larger ones are expanded); a quadratic in batch is
   tried second (batch x batch costs); one per variant.
4. Verification. The entry is evaluated on every call at every traced shape, held-out shapes
   included, and must equal measurement on all five metrics; otherwise it is refused with the
   reason (piecewise behaviour such as a sliding window or data-dependent routing shows up here;
   a config length between the fitted and held-out lengths is named as the likely breakpoint).

Derived entries hold for the config they were traced with: config values are baked into the
coefficients, and a guard parameter (`holds_for_config`) refuses to bind for any other config,
or for activations of another size than traced (`s`, e.g. bf16 after a float32 trace), with a
one-line reason. They also hold only for prefill and single-token decode: binding a call
with both seq_len > 1 and kv_len > 0 (chunked prefill) fails with the reason.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations, product
from typing import Any, Iterable, Mapping

import torch

from formula_db.bind import make_roots
from formula_db.errors import FormulaError
from formula_db.evaluate import Env, evaluate
from formula_db.meta import TensorMeta, ValueSummary
from formula_db.parser import parse
from formula_db.registry import Layer, Registry
from formula_db.schema import METRICS, FormulaDatabase, FormulaEntry
from lm_predictor.sampling import (FIT_POINTS, HELD_OUT_POINTS, Point, Sample, min_prompt,
                                   sample_points)
from tracing.records import CallRecord, Trace

COUNTER_METRICS = ("flops", "vector_flops", "bytes_read", "bytes_written")
GUARD = "holds_for_config"
MAX_FEATURES = 40


def sample_traces(config: Any, points: Iterable[Point] = FIT_POINTS,
                  held_out: Iterable[Point] = HELD_OUT_POINTS,
                  model: torch.nn.Module | None = None,
                  dtype: torch.dtype = torch.float32, *, method: str = "meta",
                  architecture: str | None = None) -> list[Sample]:
    """Trace `config` on meta at every fit and held-out point the model can run (one model,
    built once, in `dtype`: entries are verified in the dtype they will be used in).

    The points are cut to what the model runs (`lm_predictor.sampling`): prefill only for
    encoders, encoder-decoder and cache-less models, one point per batch for vision models,
    no decode points when decode does not run. `method` is how the model traces
    (`lm_predictor.fallback`: `cpu` / `cpu-truncated` sample on CPU); the result is a
    `sampling.Samples` list that also says what was sampled (`kind`, `method`, `notes`)."""

    return sample_points(config, points, held_out, model=model, dtype=dtype, method=method,
                         architecture=architecture)


# -- call instances across samples --------------------------------------------------------------
InstanceId = tuple[str, int]  # (module path, occurrence)


def instances(trace: Trace, key: str) -> dict[InstanceId, CallRecord]:
    """Calls of formula key `key` in `trace`, by (module path, occurrence of that path)."""
    seen: dict[str, int] = {}
    out: dict[InstanceId, CallRecord] = {}
    for call in trace.calls:
        n = seen.get(call.module_path, 0)
        seen[call.module_path] = n + 1
        if call.formula_key == key:
            out[(call.module_path, n)] = call
    return out


def child_slots(trace: Trace, call: CallRecord) -> dict[InstanceId, CallRecord]:
    """Children of `call` by (module path relative to the parent's, occurrence under it)."""
    seen: dict[str, int] = {}
    out: dict[InstanceId, CallRecord] = {}
    prefix = call.module_path + "." if call.module_path else ""
    for child in trace.children(call):
        rel = child.module_path.removeprefix(prefix)
        n = seen.get(rel, 0)
        seen[rel] = n + 1
        out[(rel, n)] = child
    return out


def roots_of(call: CallRecord, config: Mapping[str, Any]) -> dict[str, Any]:
    return make_roots(call.attributes, call.inputs, call.kwargs, call.outputs, config)


def eval_bind(text: str, roots: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Any:
    """Value of a bind expression on a call (ValueSummary unwrapped); raises FormulaError."""
    value = evaluate(parse(text, "bind"), Env(params=dict(params or {}), text=text,
                                              where="derive", roots=roots))
    return value.value if isinstance(value, ValueSummary) else value


# -- features ------------------------------------------------------------------------------------
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def features(call: CallRecord) -> list[str]:
    """Integer-valued bind expressions over the call's described arguments (dims, numels)."""
    out: list[str] = []

    def walk(desc: Any, expr: str, depth: int) -> None:
        if len(out) >= MAX_FEATURES:
            return
        if isinstance(desc, TensorMeta):
            out.extend(f"{expr}.shape[{d}]" for d in range(len(desc.shape)))
            out.append(f"numel({expr})")
            if len(desc.shape) >= 3:  # rows of a last-dim op (a norm over inputs of any rank)
                out.append(f"numel({expr}) // {expr}.shape[-1]")
        elif isinstance(desc, tuple) and depth < 2:
            for j, v in enumerate(desc):
                walk(v, f"{expr}[{j}]", depth + 1)

    for name, value in call.kwargs.items():
        if _IDENT.match(name):
            walk(value, f"kwargs.{name}", 0)
    for i, value in enumerate(call.inputs):
        walk(value, f"input[{i}]", 0)
    return out


def cache_expr(call: CallRecord) -> str | None:
    """`(cache length or 0)` for the call's KV-cache keyword, if it has one."""
    for name, value in call.kwargs.items():
        if isinstance(value, ValueSummary) and ("Cache" in value.type or name in ("cache",
                                                "past_key_values", "past_key_value")):
            return f"(is_none(get(kwargs, '{name}')) ? 0 : get(kwargs, '{name}'))"
    return None


# -- exact polynomial fitting ----------------------------------------------------------------------
Monomial = tuple[tuple[str, int], ...]


def basis(names: list[str], max_degree: int = 2, max_total: int = 3,
          linear: Iterable[str] = ()) -> list[Monomial]:
    """Monomials in `names`, each variable up to `max_degree` (those in `linear` up to 1), total
    degree up to `max_total`."""
    out: list[Monomial] = []
    lin = set(linear)
    for degs in product(range(max_degree + 1), repeat=len(names)):
        if sum(degs) <= max_total and not any(d > 1 and n in lin for n, d in zip(names, degs)):
            out.append(tuple((n, d) for n, d in zip(names, degs) if d))
    return sorted(out, key=lambda m: (sum(d for _, d in m), m))


def mono_value(m: Monomial, values: Mapping[str, int]) -> int:
    out = 1
    for name, deg in m:
        out *= values[name] ** deg
    return out


def solve_exact(rows: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction] | None:
    """A solution of rows @ x == rhs over the rationals (free unknowns 0), None if inconsistent."""
    n = len(rows[0]) if rows else 0
    aug = [list(r) + [b] for r, b in zip(rows, rhs)]
    pivots: list[int] = []
    r = 0
    for c in range(n):
        pivot = next((i for i in range(r, len(aug)) if aug[i][c] != 0), None)
        if pivot is None:
            continue
        aug[r], aug[pivot] = aug[pivot], aug[r]
        inv = aug[r][c]
        aug[r] = [v / inv for v in aug[r]]
        for i in range(len(aug)):
            if i != r and aug[i][c] != 0:
                f = aug[i][c]
                aug[i] = [a - f * b for a, b in zip(aug[i], aug[r])]
        pivots.append(c)
        r += 1
        if r == len(aug):
            break
    if any(all(v == 0 for v in row[:n]) and row[n] != 0 for row in aug):
        return None
    x = [Fraction(0)] * n
    for i, c in enumerate(pivots):
        x[c] = aug[i][n]
    return x


def fit_poly(data: list[tuple[dict[str, int], int]], names: list[str],
             linear: Iterable[str] = ()) -> dict[Monomial, Fraction] | None:
    """Exact polynomial through every (values, target) pair (degree 1 in the names in
    `linear`), or None."""
    mons = basis(names, linear=linear)
    points: dict[tuple[int, ...], int] = {}
    for v, t in data:  # one row per distinct point (many instances share each)
        if points.setdefault(tuple(v[n] for n in names), t) != t:
            return None
    rows = [[Fraction(mono_value(m, dict(zip(names, k)))) for m in mons] for k in points]
    sol = solve_exact(rows, [Fraction(t) for t in points.values()])
    if sol is None:
        return None
    return {m: c for m, c in zip(mons, sol) if c != 0}


def nested_calls_text(nested: list[tuple[str, list[str]]]) -> str:
    """Template text summing nested calls `{key}(args)`, identical calls counted once with a
    multiplier ("" when there are none)."""
    grouped: dict[str, int] = {}
    for key, args in nested:
        text = f"{{{key}}}({', '.join(args)})"
        grouped[text] = grouped.get(text, 0) + 1
    return " + ".join(t if n == 1 else f"{n} * {t}" for t, n in grouped.items())


def poly_text(poly: Mapping[Monomial, Fraction]) -> str:
    """Template text of a polynomial (integer coefficients; a common denominator floors exactly
    on integer-valued polynomials)."""
    if not poly:
        return "0"
    den = 1
    for c in poly.values():
        den = den * c.denominator // _gcd(den, c.denominator)
    terms: list[str] = []
    for m, c in sorted(poly.items(), key=lambda kv: (sum(d for _, d in kv[0]), kv[0])):
        k = c * den
        factors = [f"${{{n}}}" if d == 1 else f"${{{n}}} ** {d}" for n, d in m]
        mag = abs(k.numerator)
        body = " * ".join(([str(mag)] if mag != 1 or not factors else []) + factors)
        terms.append(("- " if k < 0 else "+ ") + body)
    text = " ".join(terms).removeprefix("+ ")
    if text.startswith("- "):
        text = "-" + text[2:]
    return f"({text}) // {den}" if den != 1 else text


def _poly_at(poly: Mapping[Monomial, Fraction], values: Mapping[str, int]) -> Fraction:
    return sum((c * mono_value(m, values) for m, c in poly.items()), Fraction(0))


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


@dataclass
class Shape:
    """How a derived entry reads its variables: names and bind texts, in declared order."""

    names: list[str]
    binds: list[str]

    @property
    def regime(self) -> bool:
        return "kv_len" in self.names and "batch" in self.names


Data = list[tuple[dict[str, int], int]]


@dataclass
class Piece:
    """A fitted closed form: one polynomial, or (`one` set) a separate polynomial for batch 1.

    Batch 1 is a regime of its own in transformers: a mask or position tensor of batch 1
    broadcasts where a larger batch needs an expand copy, so costs are linear in the batch from
    batch 2 on and off that line at batch 1."""

    poly: dict[Monomial, Fraction]
    one: dict[Monomial, Fraction] | None = None

    def at(self, values: Mapping[str, int]) -> Fraction:
        if self.one is not None and values.get("batch") == 1:
            return _poly_at(self.one, values)
        return _poly_at(self.poly, values)

    def text(self) -> str:
        main = poly_text(self.poly)
        if self.one is None:
            return main
        one = poly_text(self.one)
        return main if one == main else f"(${{batch}} == 1 ? {one} : {main})"


def fit_piece(data: Data, names: list[str], batch_degree: int = 1) -> Piece | None:
    """Exact closed form of `data`: one polynomial (degree `batch_degree` in batch), else, with
    `batch_degree` 1, one polynomial over batch >= 2 and one over batch 1."""
    linear = ("batch",) if batch_degree == 1 else ()
    poly = fit_poly(data, names, linear)
    if poly is not None:
        return Piece(poly)
    if batch_degree != 1 or "batch" not in names:
        return None
    ones = [(v, t) for v, t in data if v["batch"] == 1]
    rest = [(v, t) for v, t in data if v["batch"] != 1]
    if not ones or len({v["batch"] for v, _ in rest}) < 2:
        return None
    main = fit_poly(rest, names, linear)
    one = fit_poly(ones, [n for n in names if n != "batch"]) if main is not None else None
    return None if one is None or main is None else Piece(main, one)


def fit_regimes(shape: Shape, data: Data, batch_degree: int = 1) -> str | None:
    """Template text fitting every (variables, target) pair exactly, or None. With a kv
    variable, prefill and decode are fitted apart (and joined when one form serves both);
    `batch_degree` 1 models batch 1 as its own regime when it is off the line of larger
    batches, 2 allows a quadratic in batch instead (batch x batch costs, e.g. contrastive
    logits)."""
    if shape.regime:
        pre = [(v, t) for v, t in data if v["kv_len"] == 0]
        dec = [(v, t) for v, t in data if v["kv_len"] > 0]
        names_pre = [n for n in shape.names if n != "kv_len"]
        names_dec = [n for n in shape.names if n != "seq_len"]
        p = fit_piece(pre, names_pre, batch_degree) if pre else Piece({})
        if p is None:
            return None
        if p.poly and all(p.at(v) == t for v, t in dec):  # one form serves both regimes
            return p.text()
        d = fit_piece(dec, names_dec, batch_degree) if dec else Piece({})
        if d is None:
            return None
        pt, dt = p.text(), d.text()
        return pt if pt == dt else f"(${{kv_len}} > 0 ? {dt} : {pt})"
    piece = fit_piece(data, shape.names, batch_degree)
    if piece is not None:
        return piece.text()
    if "seq_len" not in shape.names or "kv_len" in shape.names:
        return None
    # no cache variable: one token (decode) apart from several (prefill)
    single = [(v, t) for v, t in data if v["seq_len"] == 1]
    rest = [(v, t) for v, t in data if v["seq_len"] != 1]
    if not single or not rest:
        return None
    many = fit_piece(rest, shape.names, batch_degree)
    one = fit_piece(single, [n for n in shape.names if n != "seq_len"], batch_degree) \
        if many is not None else None
    if many is None or one is None:
        return None
    return f"(${{seq_len}} == 1 ? {one.text()} : {many.text()})"


@dataclass
class Variant:
    """Instances of one class that cost differently at the same shape (a decoder layer with a
    dense MLP in layer 0 and MoE after it, alternating sliding / full attention), told apart by
    a module attribute: `values[i]` is variant i + 1."""

    attr: str
    values: list[Any]

    def code(self, call: CallRecord) -> int:
        return self.values.index(call.attributes.get(self.attr)) + 1

    def bind(self) -> str:
        conds = [f"module.{self.attr} == {_literal(v)} ? {i + 1}" for i, v in
                 enumerate(self.values)]
        known = ", ".join(str(v) for v in self.values)
        return " : ".join(conds) + (f" : 'entry derived for module.{self.attr} in ({known}); "
                                    f"run lm-predictor analyze on this model to derive it again'")


_NOT_VARIANT = frozenset({"training", "has_weight", "has_bias"})
_INDEX_ATTRS = ("list_index", "layer_idx")


# -- the derivation --------------------------------------------------------------------------------
@dataclass
class Derivation:
    """Outcome for one class: the entry when accepted, else the reason it was refused."""

    key: str
    entry: FormulaEntry | None
    reason: str = ""
    calls: int = 0


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


_SKIP_CONFIG = re.compile(r"(^_|transformers_version|^architectures$|^dtype$|torch_dtype|"
                          r"_token_id$|^output_|^return_dict$|^problem_type$|initializer_range|"
                          r"_eps$|^rope_theta$|^name_or_path$|_std$|^use_return_dict$)")


def guard_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """Config values a derived entry is guarded on (those that can change the cost)."""
    out: dict[str, Any] = {}
    for k, v in sorted(config.items()):
        if _SKIP_CONFIG.search(k) or v is None or not _IDENT.match(k):
            continue
        if isinstance(v, str) and ("'" in v or "\\" in v):
            continue
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out


def _literal(v: Any) -> str | None:
    """Template literal of a constant; None when the language cannot spell it exactly (floats
    in exponent notation, inf/nan, strings with quotes)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return None if "'" in v or "\\" in v else f"'{v}'"
    if isinstance(v, float):
        text = repr(v)
        return None if any(c in text for c in "einan") else text
    if isinstance(v, int):
        return str(v)
    return None


def itemsize_bind(call: CallRecord, default: int = 4) -> tuple[str | None, int]:
    """(bind text, value) of the activations' bytes per element: the first floating tensor
    among the call's arguments or outputs; (None, `default`) when there is none (a top-level
    model returns an output object: `default` is then the traced model's activation size)."""
    def find(desc: Any, expr: str, depth: int) -> tuple[str, int] | None:
        if isinstance(desc, TensorMeta) and desc.dtype.startswith(("float", "bfloat")):
            return f"itemsize({expr})", desc.itemsize
        if isinstance(desc, tuple) and depth < 2:
            for j, v in enumerate(desc):
                if (hit := find(v, f"{expr}[{j}]", depth + 1)) is not None:
                    return hit
        return None

    for name, value in call.kwargs.items():
        if _IDENT.match(name) and (hit := find(value, f"kwargs.{name}", 0)):
            return hit
    for i, value in enumerate(call.inputs):
        if (hit := find(value, f"input[{i}]", 0)):
            return hit
    return find(call.outputs, "output", 0) or (None, default)


def guard_bind(config: Mapping[str, Any], model_type: str, itemsize: int) -> str:
    values = guard_values(config)
    reason = (f"'entry derived for the {model_type} config {config_hash(values)}; run "
              f"lm-predictor analyze on this config to derive it again'")
    conds: list[str] = []
    for k, v in values.items():
        literal = _literal(v)
        if literal is None:
            continue
        conds.append(f"get(config, '{k}') == {literal}")
        if len(" and ".join(conds)) > 3200:
            conds.pop()
            break
    body = " and ".join(conds) or "true"
    return (f"${{s}} != {itemsize} ? 'entry derived for {itemsize}-byte activations; run "
            f"lm-predictor analyze with this dtype to derive it again' : (({body}) ? 1 : {reason})")


_LENGTH = re.compile(r"(window|cache|chunk|length|kernel|index_topk)", re.I)
_WINDOW = re.compile(r"(sliding_window|attention_window|attention_chunk_size|window_size|"
                     r"index_topk|^chunk_size)$")


def _domain_bind(shape: Shape, config: Mapping[str, Any]) -> str | None:
    """Bind text refusing shapes the samples cannot vouch for: chunked prefill, and lengths past
    a sliding window / attention chunk / sparse-attention indexer's top-k of the config
    (piecewise beyond it)."""
    conds: list[str] = []
    if "kv_len" in shape.names and "seq_len" in shape.names:
        conds.append("${kv_len} > 0 and ${seq_len} > 1 ? 'derived entries model prefill and "
                     "one-token decode, not chunked prefill (seq_len > 1 with a filled cache)'")
    shortest = min_prompt(config)
    if "seq_len" in shape.names and shortest > 2:
        prompt = "${kv_len} == 0 and " if "kv_len" in shape.names else ""
        conds.append(f"{prompt}${{seq_len}} > 1 and ${{seq_len}} < {shortest} ? 'entry derived "
                     f"for prompts of at least {shortest} tokens (short convolution); shorter "
                     f"ones are not modelled'")
    if "seq_len" in shape.names:
        length = "${seq_len} + ${kv_len}" if "kv_len" in shape.names else "${seq_len}"
        for k, v in sorted(config.items()):
            if _WINDOW.search(k) and isinstance(v, int) and not isinstance(v, bool) and v > 0:
                conds.append(f"{length} > {v} ? 'entry derived below {k}={v} tokens; longer "
                             f"sequences are not modelled'")
    return " : ".join(conds) + " : 1" if conds else None


Predicted = tuple[dict[str, Any], dict[str, Any]]  # (bound parameters, predicted metrics)


class Deriver:
    """Derives entries for uncovered classes of one model from its samples."""

    def __init__(self, samples: list[Sample], registry: Registry, model_type: str = "") -> None:
        self.samples = samples
        self.registry = registry
        self.model_type = model_type
        self.config = samples[0].trace.config if samples else {}
        self._itemsize: int | None = None
        self._predicted: dict[tuple[str, int, int], Predicted | None] = {}

    def traced_itemsize(self) -> int:
        """Bytes per element of the sampled model's activations (first call with a floating
        tensor), for entries whose own call shows none (4 when no call does)."""
        if self._itemsize is None:
            found = (itemsize_bind(c) for c in (self.samples[0].trace.calls if self.samples
                                                 else []))
            self._itemsize = next((size for bind, size in found if bind is not None), 4)
        return self._itemsize

    def _predict(self, key: str, sample: Sample, call: CallRecord
                 ) -> Predicted | None:
        """(bound parameters, predicted metrics) of `call` under entry `key`, None when it does
        not bind or evaluate; memoised (every candidate shape nests the same children)."""
        memo = (key, id(sample), call.call_id)
        if memo not in self._predicted:
            try:
                params = self.registry.bind(key, roots_of(call, sample.trace.config))
                self._predicted[memo] = (params, self.registry.evaluate_all(key, params))
            except FormulaError:
                self._predicted[memo] = None
        return self._predicted[memo]

    # variables ----------------------------------------------------------------------------------
    def _truth(self, p: Point) -> dict[str, int]:
        return {"batch": p.batch, "seq_len": p.seq_len, "kv_len": p.kv_len}

    def _calls(self, key: str) -> list[tuple[Sample, CallRecord]] | str:
        ids: set[InstanceId] | None = None
        out: list[tuple[Sample, CallRecord]] = []
        for s in self.samples:
            found = instances(s.trace, key)
            if ids is None:
                ids = set(found)
            elif set(found) != ids:
                return "the class is called at different places at different shapes"
            out.extend((s, c) for c in found.values())
        if not out:
            return "the class is never called"
        return out

    def _matches(self, text: str, calls: list[tuple[Sample, CallRecord]], var: str,
                 params: Mapping[str, str]) -> bool:
        for s, c in calls:
            roots = roots_of(c, s.trace.config)
            env_params = {n: self._truth(s.point)[n] for n in params}
            try:
                value = eval_bind(text, roots, env_params)
            except (FormulaError, TypeError, KeyError, IndexError, ValueError):
                return False
            if isinstance(value, bool) or value != self._truth(s.point)[var]:
                return False
        return True

    def shape_of(self, calls: list[tuple[Sample, CallRecord]]) -> Shape:
        """Bind texts for batch / seq_len / kv_len found in the calls (possibly none)."""
        first = calls[0][1]
        feats = features(first)
        cache = next((e for _, c in calls if (e := cache_expr(c))), None)
        names: list[str] = []
        binds: list[str] = []
        for var in ("batch", "seq_len"):
            for text in feats:
                if self._matches(text, calls, var, {}):
                    names.append(var)
                    binds.append(text)
                    break
        kv_cands: list[str] = []
        if cache:
            kv_cands.append(cache)
            for attr in ("layer_idx", "list_index"):
                if not isinstance(first.attributes.get(attr), int) or "seq_len" not in names:
                    continue
                # layers past the first one that updates the cache (layer 0, or the first
                # attention layer of a hybrid model) see it already grown by seq_len
                idx = sorted({i for _, c in calls if isinstance(i := c.attributes.get(attr), int)})
                for k in idx[:-1] or [0]:
                    kv_cands.append(f"{cache} - (module.{attr} > {k} and {cache} > 0 ? "
                                    f"${{seq_len}} : 0)")
        if "seq_len" in names:
            kv_cands.extend(f"{t} - ${{seq_len}}" for t in feats)
        have = {n: n for n in names}
        for text in kv_cands:
            if self._matches(text, calls, "kv_len", have):
                names.append("kv_len")
                binds.append(text)
                break
        return Shape(names, binds)

    def _generic_shapes(self, calls: list[tuple[Sample, CallRecord]]) -> list[Shape]:
        """Shapes over one or two generic features whose values vary (deduplicated)."""
        first = calls[0][1]
        vectors: dict[tuple[Any, ...], str] = {}
        for text in features(first):
            vec: list[Any] = []
            for s, c in calls:
                try:
                    vec.append(eval_bind(text, roots_of(c, s.trace.config)))
                except (FormulaError, TypeError, KeyError, IndexError, ValueError):
                    vec = []
                    break
            if vec and len(set(vec)) > 1 and all(isinstance(v, int) for v in vec):
                vectors.setdefault(tuple(vec), text)
        texts = list(vectors.values())[:12]
        out = [Shape(["x0"], [t]) for t in texts]
        out += [Shape(["x0", "x1"], [a, b]) for a, b in combinations(texts, 2)]
        return out

    def _values(self, shape: Shape, sample: Sample, call: CallRecord) -> dict[str, int]:
        if shape.names and shape.names[0] in ("batch", "seq_len", "kv_len"):
            return {n: self._truth(sample.point)[n] for n in shape.names}
        roots = roots_of(call, sample.trace.config)
        return {n: int(eval_bind(t, roots)) for n, t in zip(shape.names, shape.binds)}

    # the entry ----------------------------------------------------------------------------------
    def derive(self, key: str, full_class_name: str) -> Derivation:
        calls = self._calls(key)
        if isinstance(calls, str):
            return Derivation(key, None, calls)
        shape = self.shape_of(calls)
        variant = self._variant(key)
        reasons: list[str] = []
        tries = [(shape, 1, variant)]
        tries += [(shape, 2, variant)] if "batch" in shape.names else []
        tries += [(cand, 1, None) for cand in self._generic_shapes(calls)]
        for cand, batch_degree, var in tries:
            result = self._derive_with(key, full_class_name, cand, calls, batch_degree, var)
            if isinstance(result, FormulaEntry):
                return Derivation(key, result, calls=len(calls))
            reasons.append(result)
        return Derivation(key, None, reasons[0] if reasons else "no variables", len(calls))

    def _variant(self, key: str) -> Variant | None:
        """The module attribute that tells apart instances of `key` costing differently at the
        same fit shape (fewest values first, a layer index last); None when all cost alike or
        no attribute tells them apart."""
        costs: dict[InstanceId, list[tuple[int, ...]]] = {}
        attrs: dict[InstanceId, Mapping[str, Any]] = {}
        for s in self.samples:
            if s.held_out:
                continue
            for iid, c in instances(s.trace, key).items():
                costs.setdefault(iid, []).append(
                    (*c.inclusive.as_dict().values(), c.activation_bytes))
                attrs.setdefault(iid, c.attributes)
        group = {iid: tuple(v) for iid, v in costs.items()}
        if len(set(group.values())) < 2:
            return None
        best: Variant | None = None
        names = sorted({a for at in attrs.values() for a in at} - _NOT_VARIANT,
                       key=lambda a: (a in _INDEX_ATTRS, a))
        for attr in names:
            seen: dict[Any, tuple[tuple[int, ...], ...]] = {}
            ok = True
            for iid, at in attrs.items():
                v = at.get(attr)
                if v is None or isinstance(v, float) or _literal(v) is None or \
                        seen.setdefault(v, group[iid]) != group[iid]:
                    ok = False
                    break
            if ok and len(seen) > 1 and (best is None or len(seen) < len(best.values)):
                best = Variant(attr, sorted(seen, key=repr))
        return best

    def _child_part(self, shape: Shape, calls: list[tuple[Sample, CallRecord]],
                    batch_degree: int = 1
                    ) -> tuple[list[tuple[str, list[str]]], dict[tuple[int, int], dict[str, int]]]:
        """Nested calls (key, argument texts) and, per (sample idx, call id), their summed
        predicted counters."""
        s0, c0 = calls[0]
        slots = child_slots(s0.trace, c0)
        nested: list[tuple[str, list[str]]] = []
        sums: dict[tuple[int, int], dict[str, int]] = {}
        for slot_id, child0 in slots.items():
            key = child0.formula_key
            entry = self.registry.find(key)
            if entry is None:
                continue
            per_call: list[tuple[Sample, CallRecord, dict[str, Any], dict[str, Any]]] = []
            ok = True
            for s, c in calls:
                child = child_slots(s.trace, c).get(slot_id)
                if child is None or child.formula_key != key:
                    ok = False
                    break
                got = self._predict(entry.key, s, child)
                if got is None:
                    ok = False
                    break
                params, predicted = got
                measured = child.inclusive.as_dict()
                if any(predicted[m] != measured[m] for m in COUNTER_METRICS):
                    ok = False  # only exact children are nested; others fold into own cost
                    break
                per_call.append((s, c, params, predicted))
            if not ok:
                continue
            args: list[str] = []
            for p in entry.parameters:
                vals = [pc[2][p.name] for pc in per_call]
                same = next((n for n in shape.names if all(
                    v == self._values(shape, s, c)[n] for (s, c, _, _), v in zip(per_call, vals))),
                    None)
                if same is not None:
                    args.append(f"${{{same}}}")
                elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                    data = [(self._values(shape, s, c), v) for (s, c, _, _), v in
                            zip(per_call, vals)]
                    text = fit_regimes(shape, data, batch_degree)
                    if text is None:
                        ok = False
                        break
                    args.append(text)
                elif len(set(map(repr, vals))) == 1 and _literal(vals[0]) is not None:
                    args.append(str(_literal(vals[0])))
                else:
                    ok = False
                    break
            if not ok:
                continue
            nested.append((entry.key, args))
            for s, c, _, predicted in per_call:
                acc = sums.setdefault((id(s), c.call_id), {m: 0 for m in COUNTER_METRICS})
                for m in COUNTER_METRICS:
                    acc[m] += int(predicted[m])
        return nested, sums

    def _templates(self, shape: Shape, fit_calls: list[tuple[Sample, CallRecord]],
                   batch_degree: int) -> tuple[dict[str, str], set[str]] | str:
        """Per metric, nested children plus fitted own cost over `fit_calls`, and the nested
        keys; or the reason there is none."""
        try:
            nested, sums = self._child_part(shape, fit_calls, batch_degree)
        except (FormulaError, ValueError) as exc:
            return f"children: {exc}"
        calls_text = nested_calls_text(nested)
        templates: dict[str, str] = {}
        for m in METRICS:
            data: list[tuple[dict[str, int], int]] = []
            for s, c in fit_calls:
                measured = c.activation_bytes if m == "activation_bytes" else \
                    getattr(c.inclusive, m)
                child = 0 if m == "activation_bytes" else \
                    sums.get((id(s), c.call_id), {}).get(m, 0)
                data.append((self._values(shape, s, c), measured - child))
            own = fit_regimes(shape, data, batch_degree)
            if own is None:
                return (f"{m} is not one polynomial in {', '.join(shape.names) or 'no variables'}"
                        f" over the traced shapes (piecewise or data-dependent behaviour, or "
                        f"calls of the class that differ)")
            if m == "activation_bytes" or not calls_text:
                templates[m] = own
            else:
                templates[m] = calls_text if own == "0" else f"{calls_text} + {own}"
        return templates, {ck for ck, _ in nested}

    def _derive_with(self, key: str, full_class_name: str, shape: Shape,
                     calls: list[tuple[Sample, CallRecord]], batch_degree: int = 1,
                     variant: Variant | None = None) -> FormulaEntry | str:
        fit_calls = [(s, c) for s, c in calls if not s.held_out]
        groups = [fit_calls] if variant is None else [
            [(s, c) for s, c in fit_calls if variant.code(c) == i + 1]
            for i in range(len(variant.values))]
        per_group: list[dict[str, str]] = []
        dep_set: set[str] = set()
        for i, group in enumerate(groups):
            result = self._templates(shape, group, batch_degree)
            if isinstance(result, str):
                where = f" (module.{variant.attr} == {variant.values[i]})" if variant else ""
                return result + where
            per_group.append(result[0])
            dep_set |= result[1]
        templates: dict[str, str] = {}
        for m in METRICS:
            texts = [g[m] for g in per_group]
            if len(set(texts)) == 1:
                templates[m] = texts[0]
            else:
                templates[m] = "(" + " : ".join(f"${{variant}} == {i + 1} ? {t}" for i, t in
                                                enumerate(texts[:-1])) + f" : {texts[-1]})"
        params = [{"name": n, "type": "int", "description": f"{n} (bound from the call)",
                   "bind": b} for n, b in zip(shape.names, shape.binds)]
        if variant is not None:
            params.append({"name": "variant", "type": "int", "bind": variant.bind(),
                           "description": f"which instances (module.{variant.attr}) the call "
                                          f"belongs to"})
        domain = _domain_bind(shape, self.config)
        if domain:
            params.append({"name": "in_domain", "type": "int", "default": 1, "bind": domain,
                           "description": "refuses shapes outside prefill / one-token decode"})
        guard = guard_values(self.config)
        s_bind, itemsize = itemsize_bind(calls[0][1], self.traced_itemsize())
        params.append({"name": "s", "type": "int", "default": itemsize, "bind": s_bind,
                       "description": "bytes per element of the activations (only the traced "
                                      "size is valid)"})
        params.append({"name": GUARD, "type": "int", "default": 1,
                       "bind": guard_bind(self.config, self.model_type, itemsize),
                       "description": "refuses configs other than the one derived for"})
        deps = sorted(dep_set)
        try:
            entry = FormulaEntry.model_validate({
                "full_class_name": full_class_name, "kind": "module",
                "description": f"derived from {len(fit_calls)} meta-traced calls; exact at held-out "
                               f"shapes; holds for one config",
                "parameters": params, **templates, "module_depends": deps,
                "validation": {"status": "validated", "source": "derived",
                               "date": datetime.date.today().isoformat(),
                               "torch_version": torch.__version__.split("+")[0],
                               "transformers_version": _tf_version(),
                               "config_hash": config_hash(guard),
                               "config_values": guard,
                               "notes": "exact closed form fitted over meta traces (prefill and "
                                        "one-token decode), verified at held-out shapes"}})
        except ValueError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines()
                     if ln.strip() and "errors.pydantic.dev" not in ln]
            return f"entry invalid: {(lines[-1] if lines else str(exc))[:300]}"
        problem = verify(entry, self.registry, calls)
        return entry if problem is None else f"held-out check: {problem}{self._length_hint()}"

    def _length_hint(self) -> str:
        """Config lengths past the fitted ones but within the held-out ones (a breakpoint the
        fit could not see: a conv cache, window or top-k reached only by held-out shapes)."""
        fit = max((s.point.seq_len for s in self.samples if not s.held_out), default=0)
        top = max((s.point.seq_len + s.point.kv_len for s in self.samples), default=0)
        hits = [f"{k}={v}" for k, v in sorted(self.config.items())
                if _LENGTH.search(k) and isinstance(v, int) and not isinstance(v, bool)
                and fit < v <= top]
        return (f" (config {', '.join(hits)} lies between the fitted and the held-out lengths:"
                f" piecewise past it, not modelled)") if hits else ""


def _tf_version() -> str | None:
    try:
        import transformers
        return transformers.__version__
    except ImportError:  # pragma: no cover
        return None


def with_entries(registry: Registry, entries: list[FormulaEntry]) -> Registry:
    """`registry` with `entries` stacked on top (an in-memory layer)."""
    layer = Layer("candidate", None, FormulaDatabase(entries={e.key: e for e in entries}))
    return Registry(list(registry.layers) + [layer])


def verify(entry: FormulaEntry, registry: Registry,
           calls: list[tuple[Sample, CallRecord]]) -> str | None:
    """None when `entry` (over `registry`) equals measurement on every call; else the first
    difference (held-out calls first: a wrong entry fails there soonest)."""
    reg = with_entries(registry, [entry])
    for s, c in sorted(calls, key=lambda sc: not sc[0].held_out):
        try:
            params = reg.bind(entry.key, roots_of(c, s.trace.config))
            predicted = reg.evaluate_all(entry.key, params)
        except FormulaError as exc:
            if s.held_out and "in_domain" in str(exc):
                continue  # the entry (or one it calls) refuses this shape: refused, not wrong
            return f"{c.module_path} at {s.point}: {exc}"
        for m in METRICS:
            measured = c.activation_bytes if m == "activation_bytes" else getattr(c.inclusive, m)
            if predicted[m] != measured:
                return (f"{c.module_path or '(model)'} at batch {s.point.batch}, seq "
                        f"{s.point.seq_len}, kv {s.point.kv_len}: {m} measured {measured}, "
                        f"formula {predicted[m]}")
    return None
