"""The whitelist of functions a template or bind may call: name -> (min args, max args, impl).

Template functions are pure functions of numbers. Bind functions read tensor metadata
(`formula_db.meta.TensorMeta`) and plain values; they exist only in bind expressions. Anything
else is refused when the entry is validated, before any evaluation.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable

from formula_db.meta import TensorMeta, merges, rows_view

FuncSpec = tuple[int, int, Callable[..., Any]]


def _ceil_div(a: int, b: int) -> int:
    if b == 0:
        raise ValueError("division by zero")
    return -(-a // b)


def _tensor(name: str, value: Any) -> TensorMeta:
    if not isinstance(value, TensorMeta):
        raise TypeError(f"{name}() expects a tensor, got {type(value).__name__}")
    return value


def _size(t: Any, dim: int) -> int:
    return _tensor("size", t).shape[dim]


TEMPLATE_FUNCS: dict[str, FuncSpec] = {
    "min": (2, 8, min),
    "max": (2, 8, max),
    "abs": (1, 1, abs),
    "ceil": (1, 1, lambda x: math.ceil(Fraction(x) if not isinstance(x, float) else x)),
    "floor": (1, 1, lambda x: math.floor(Fraction(x) if not isinstance(x, float) else x)),
    "ceil_div": (2, 2, _ceil_div),
    "int": (1, 1, int),
}

BIND_FUNCS: dict[str, FuncSpec] = {
    "numel": (1, 1, lambda t: _tensor("numel", t).numel),
    "itemsize": (1, 1, lambda t: _tensor("itemsize", t).itemsize),
    "nbytes": (1, 1, lambda t: _tensor("nbytes", t).nbytes),
    "ndim": (1, 1, lambda t: _tensor("ndim", t).ndim),
    "size": (2, 2, _size),
    "len": (1, 1, len),
    "prod": (1, 1, math.prod),
    "is_none": (1, 1, lambda x: x is None),
    "is_tensor": (1, 1, lambda x: isinstance(x, TensorMeta)),
    "is_contiguous": (1, 1, lambda t: _tensor("is_contiguous", t).contiguous),
    "merges": (2, 2, lambda t, n: merges(_tensor("merges", t), n)),
    "rows_view": (1, 1, lambda t: rows_view(_tensor("rows_view", t))),
    "get": (2, 3, lambda m, k, d=None: m.get(k, d) if isinstance(m, dict) else d),
}


def allowed(mode: str) -> dict[str, FuncSpec]:
    """Functions callable in `template` or `bind` mode."""
    return TEMPLATE_FUNCS if mode == "template" else {**TEMPLATE_FUNCS, **BIND_FUNCS}
