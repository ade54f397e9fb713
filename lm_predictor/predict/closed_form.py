"""Closed forms as data: a sympy expression ↔ a JSON tree ↔ exact Python closures.

`Predictor` reduces each metric once to a sympy closed form in the shape parameters; `to_tree`
turns that expression into a small JSON-able tree (so it can be cached on disk and used again
without importing sympy), and `compile_tree` walks the tree into nested closures (no `lambdify`,
no `eval`/`exec`), so each point costs a few dozen integer operations. Supported nodes: integers
and rationals, symbols, Add, Mul, integer Pow, Piecewise with relational/boolean conditions,
Min, Max, floor, ceiling and Mod. Arithmetic stays exact (`int` and `fractions.Fraction`);
anything else is `Unsupported` and the caller falls back to AST evaluation.

Tree nodes: `["int", n]`, `["rat", p, q]`, `["sym", name]`, `["true"]`, `["false"]`,
`[op, *children]` for op in add, mul, min, max, and, or, not, floor, ceil, mod, gt, ge, lt, le,
eq, ne; `["pow", base, n]`; `["pw", [value, cond], ...]`.

Example:
    >>> f = compile_tree(["add", ["int", 1], ["mul", ["int", 2], ["pow", ["sym", "b"], 2]]])
    >>> f({"b": 3})
    19
"""
from __future__ import annotations

import math
import operator
from fractions import Fraction
from typing import Any, Callable

Fn = Callable[[dict[str, int]], Any]
Tree = list[Any]
MAX_TREE_DEPTH = 200  # a cached file is data from disk: bound the recursion it can cause

_RELATIONS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le,
    "eq": operator.eq, "ne": operator.ne,
}


class Unsupported(Exception):
    """A node this compiler does not handle."""


# --- sympy -> tree ---------------------------------------------------------------------------

def to_tree(expr: Any) -> Tree:
    """The tree of a sympy expression (`Unsupported` for nodes outside the list above)."""
    import sympy

    relations = {sympy.StrictGreaterThan: "gt", sympy.GreaterThan: "ge",
                 sympy.StrictLessThan: "lt", sympy.LessThan: "le", sympy.Equality: "eq",
                 sympy.Unequality: "ne"}

    def walk(e: Any) -> Tree:
        if e is sympy.true or e is sympy.false:
            return ["true"] if e is sympy.true else ["false"]
        if isinstance(e, sympy.Integer):
            return ["int", int(e)]
        if isinstance(e, sympy.Rational):
            return ["rat", int(e.p), int(e.q)]
        if isinstance(e, sympy.Symbol):
            return ["sym", e.name]
        if isinstance(e, sympy.Add):
            return ["add", *[walk(a) for a in e.args]]
        if isinstance(e, sympy.Mul):
            return ["mul", *[walk(a) for a in e.args]]
        if isinstance(e, sympy.Pow) and isinstance(e.exp, sympy.Integer):
            return ["pow", walk(e.base), int(e.exp)]
        if isinstance(e, sympy.Piecewise):
            return ["pw", *[[walk(v), walk(c)] for v, c in e.args]]
        for klass, name in relations.items():
            if isinstance(e, klass):
                return [name, walk(e.lhs), walk(e.rhs)]
        for klass, name in ((sympy.And, "and"), (sympy.Or, "or"), (sympy.Min, "min"),
                            (sympy.Max, "max")):
            if isinstance(e, klass):
                return [name, *[walk(a) for a in e.args]]
        if isinstance(e, sympy.Not):
            return ["not", walk(e.args[0])]
        if isinstance(e, (sympy.floor, sympy.ceiling)):
            return ["floor" if isinstance(e, sympy.floor) else "ceil", walk(e.args[0])]
        if isinstance(e, sympy.Mod):
            return ["mod", walk(e.args[0]), walk(e.args[1])]
        raise Unsupported(type(e).__name__)

    return walk(expr)


# --- tree -> closures ------------------------------------------------------------------------

def _const(value: Any) -> Fn:
    return lambda _env: value


def _compile(node: Any, depth: int = 0) -> Fn:
    if depth > MAX_TREE_DEPTH or not isinstance(node, list) or not node:
        raise Unsupported("malformed closed-form tree")
    op, args = node[0], node[1:]
    sub = [_compile(a, depth + 1) for a in args] if op in (
        "add", "mul", "min", "max", "and", "or", "not", "floor", "ceil", "mod",
        *_RELATIONS) else []
    if op == "true" or op == "false":
        return _const(op == "true")
    if op == "int" and len(args) == 1 and type(args[0]) is int:
        return _const(args[0])
    if op == "rat" and len(args) == 2 and all(type(a) is int for a in args) and args[1]:
        return _const(Fraction(args[0], args[1]))
    if op == "sym" and len(args) == 1 and isinstance(args[0], str):
        name = args[0]
        return lambda env: env[name]
    if op == "add":
        return lambda env: sum(p(env) for p in sub)
    if op == "mul":
        def mul(env: dict[str, int]) -> Any:
            out: Any = 1
            for p in sub:
                out *= p(env)
            return out
        return mul
    if op == "pow" and len(args) == 2 and type(args[1]) is int:
        base, exp = _compile(args[0], depth + 1), args[1]
        if exp >= 0:
            return lambda env: base(env) ** exp
        return lambda env: Fraction(1) / Fraction(base(env)) ** (-exp)
    if op == "pw":
        pieces = []
        for piece in args:
            if not isinstance(piece, list) or len(piece) != 2:
                raise Unsupported("malformed Piecewise")
            pieces.append((_compile(piece[0], depth + 1), _compile(piece[1], depth + 1)))

        def piecewise(env: dict[str, int]) -> Any:
            for value, cond in pieces:
                if cond(env):
                    return value(env)
            raise Unsupported("no Piecewise branch applies")
        return piecewise
    if op in _RELATIONS and len(sub) == 2:
        rel, lhs, rhs = _RELATIONS[op], sub[0], sub[1]
        return lambda env: rel(lhs(env), rhs(env))
    if op in ("and", "or"):
        combine = all if op == "and" else any
        return lambda env: combine(p(env) for p in sub)
    if op == "not" and len(sub) == 1:
        inner = sub[0]
        return lambda env: not inner(env)
    if op in ("min", "max") and sub:
        pick = min if op == "min" else max
        return lambda env: pick(p(env) for p in sub)
    if op in ("floor", "ceil") and len(sub) == 1:
        inner, rnd = sub[0], (math.floor if op == "floor" else math.ceil)
        return lambda env: rnd(inner(env))
    if op == "mod" and len(sub) == 2:
        a, b = sub
        return lambda env: a(env) % b(env)
    raise Unsupported(f"node {op!r}")


def compile_tree(tree: Tree) -> Fn:
    """A closure computing the tree exactly from {symbol name: value} (`Unsupported` if the tree
    has a node this compiler does not know)."""
    fn = _compile(tree)

    def exact(env: dict[str, int]) -> Any:
        value = fn(env)
        if isinstance(value, Fraction) and value.denominator == 1:
            return int(value)
        return value
    return exact


def compile_expr(expr: Any) -> Fn | None:
    """A closure computing a sympy expression exactly, or None if it is unsupported."""
    try:
        return compile_tree(to_tree(expr))
    except Unsupported:
        return None
