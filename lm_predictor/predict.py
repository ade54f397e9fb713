"""Trace-free prediction: a model's cost from its config and the shape alone.

Once the model's top-level class (e.g. `LlamaForCausalLM`) has a formula, every metric follows
from nested templates: the top entry's `batch`, `seq_len`, `kv_len` and `s` (bytes per element)
parameters are given, every other parameter binds from `config.*`, and nested `{key}(...)` calls
pass values down. Nothing is built and nothing is traced.

For sweeps the whole nested formula is reduced once per metric to a closed form in
(batch, seq_len, kv_len) with sympy (built from the AST, never from text); when that form is a
polynomial its integer coefficients are evaluated directly (exact, fast), otherwise each point is
evaluated exactly through the AST.

Example:
    >>> p = Predictor.for_model("meta-llama/Llama-3.1-8B")
    >>> p.point(batch=1, seq_len=2048)["flops"]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import sympy
import torch

from formula_db.bind import make_roots, plain_config
from formula_db.errors import FormulaError, UnknownKeyError
from formula_db.registry import Registry
from formula_db.schema import METRICS
from formula_db.symbolic import symbol

SHAPE_PARAMS = ("batch", "seq_len", "kv_len")
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class _Poly:
    """A polynomial in the shape parameters: {(exponents...): coefficient}."""

    names: tuple[str, ...]
    terms: dict[tuple[int, ...], Any]

    def __call__(self, values: dict[str, int]) -> Any:
        xs = [values[n] for n in self.names]
        total: Any = 0
        for exps, coeff in self.terms.items():
            term = coeff
            for x, e in zip(xs, exps):
                if e:
                    term *= x ** e
            total += term
        return total


@dataclass
class Predictor:
    """Nested formulas of one model's top-level class, with its config-bound parameters fixed."""

    model_id: str
    key: str
    registry: Registry
    fixed: dict[str, Any]
    shape_params: tuple[str, ...]
    _fast: dict[str, _Poly | None] = field(default_factory=dict)

    @classmethod
    def for_config(cls, config: Any, model_id: str = "", registry: Registry | None = None,
                   dtype: str = "float32", architecture: str | None = None) -> "Predictor":
        """Bind the top-level entry's config parameters (raises UnknownKeyError without one)."""
        from lm_predictor.models import model_class

        registry = registry or Registry.default()
        klass = model_class(config, architecture)
        key = registry.resolve_key(klass)
        if key is None:
            raise UnknownKeyError(
                f"no formula for {klass.__module__}.{klass.__qualname__}, the top-level class of "
                f"{model_id or config.model_type}; trace it with 'lm-predictor analyze' and add "
                f"the missing formulas (see 'lm-predictor check')")
        entry = registry.get(key)
        shape = tuple(p for p in SHAPE_PARAMS if p in entry.param_names)
        overrides: dict[str, Any] = {p: 1 for p in shape}
        if "s" in entry.param_names:
            overrides["s"] = ITEMSIZE[dtype]
        roots = make_roots({}, (), {}, None, plain_config(config))
        bound = registry.bind(key, roots, overrides)
        fixed = {k: v for k, v in bound.items() if k not in shape}
        return cls(model_id, key, registry, fixed, shape)

    @classmethod
    def for_model(cls, model_id: str, registry: Registry | None = None, dtype: str = "float32",
                  hf_token: str | None = None) -> "Predictor":
        from lm_predictor.models import resolve_config

        resolved = resolve_config(model_id, hf_token=hf_token)
        return cls.for_config(resolved.config, model_id, registry, dtype)

    def point(self, batch: int, seq_len: int, kv_len: int = 0) -> dict[str, Any]:
        """Exact metrics at one shape (AST evaluation)."""
        params = dict(self.fixed)
        params.update({k: v for k, v in (("batch", batch), ("seq_len", seq_len),
                                         ("kv_len", kv_len)) if k in self.shape_params})
        return self.registry.evaluate_all(self.key, params)

    def closed_form(self, metric: str) -> Any:
        """The metric as a simplified sympy expression in the shape parameters."""
        return self.registry.symbolic(self.key, metric, fixed=self.fixed,
                                      free=list(self.shape_params))

    def _polynomial(self, metric: str) -> _Poly | None:
        if metric not in self._fast:
            try:
                expr = sympy.expand(self.closed_form(metric))
                symbols = [symbol(n) for n in self.shape_params]
                poly = sympy.Poly(expr, *symbols) if symbols else None
                if poly is None or not all(c.is_Rational for c in poly.coeffs()):
                    self._fast[metric] = None
                else:
                    terms = {exps: (int(c) if c.is_Integer else Fraction(int(c.p), int(c.q)))
                             for exps, c in poly.terms()}
                    self._fast[metric] = _Poly(self.shape_params, terms)
            except (sympy.PolynomialError, FormulaError, TypeError, ValueError):
                self._fast[metric] = None
        return self._fast[metric]

    def sweep(self, points: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
        """Metrics at many (batch, seq_len, kv_len) points: polynomial fast path when possible."""
        fast = {m: self._polynomial(m) for m in METRICS}
        out: list[dict[str, Any]] = []
        for b, s, k in points:
            values = {"batch": b, "seq_len": s, "kv_len": k}
            slow: dict[str, Any] | None = None
            row: dict[str, Any] = {}
            for m in METRICS:
                poly = fast[m]
                if poly is not None:
                    v = poly(values)
                    row[m] = int(v) if isinstance(v, Fraction) and v.denominator == 1 else v
                else:
                    slow = slow or self.point(b, s, k)
                    row[m] = slow[m]
            out.append(row)
        return out


def torch_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
