"""Fast exact evaluation of closed forms: a sympy expression turned into nested Python closures.

`Predictor.sweep` reduces each metric once to a sympy closed form in the shape parameters; this
module walks that expression tree (no `lambdify`, no `eval`/`exec`: every node becomes a small
closure) so each point costs a few dozen integer operations. Supported nodes: integers and
rationals, symbols, Add, Mul, integer Pow, Piecewise with relational/boolean conditions, Min,
Max, floor, ceiling and Mod. Arithmetic stays exact (`int` and `fractions.Fraction`);
`compile_expr` returns None for anything else, and the caller falls back to AST evaluation.

Example:
    >>> f = compile_expr(sympy.sympify(0) + 2 * symbol("b") ** 2)   # built in code, not parsed
    >>> f({"b": 3})
    18
"""
from __future__ import annotations

import math
import operator
from fractions import Fraction
from typing import Any, Callable

import sympy

Fn = Callable[[dict[str, int]], Any]

_RELATIONS: dict[type, Callable[[Any, Any], bool]] = {
    sympy.StrictGreaterThan: operator.gt, sympy.GreaterThan: operator.ge,
    sympy.StrictLessThan: operator.lt, sympy.LessThan: operator.le,
    sympy.Equality: operator.eq, sympy.Unequality: operator.ne,
}


class Unsupported(Exception):
    """A node this compiler does not handle."""


def _const(value: Any) -> Fn:
    return lambda _env: value


def _compile(expr: Any) -> Fn:
    if expr is sympy.true or expr is sympy.false:
        return _const(bool(expr))
    if isinstance(expr, sympy.Integer):
        return _const(int(expr))
    if isinstance(expr, sympy.Rational):
        return _const(Fraction(int(expr.p), int(expr.q)))
    if isinstance(expr, sympy.Symbol):
        name = expr.name
        return lambda env: env[name]
    if isinstance(expr, sympy.Add):
        parts = [_compile(a) for a in expr.args]
        return lambda env: sum(p(env) for p in parts)
    if isinstance(expr, sympy.Mul):
        parts = [_compile(a) for a in expr.args]

        def mul(env: dict[str, int]) -> Any:
            out: Any = 1
            for p in parts:
                out *= p(env)
            return out
        return mul
    if isinstance(expr, sympy.Pow) and isinstance(expr.exp, sympy.Integer):
        base, exp = _compile(expr.base), int(expr.exp)
        if exp >= 0:
            return lambda env: base(env) ** exp
        return lambda env: Fraction(1) / Fraction(base(env)) ** (-exp)
    if isinstance(expr, sympy.Piecewise):
        pieces = [(_compile(e), _compile(c)) for e, c in expr.args]

        def piecewise(env: dict[str, int]) -> Any:
            for value, cond in pieces:
                if cond(env):
                    return value(env)
            raise Unsupported("no Piecewise branch applies")
        return piecewise
    for klass, op in _RELATIONS.items():
        if isinstance(expr, klass):
            lhs, rhs = _compile(expr.lhs), _compile(expr.rhs)
            return lambda env, op=op: op(lhs(env), rhs(env))
    if isinstance(expr, (sympy.And, sympy.Or)):
        parts = [_compile(a) for a in expr.args]
        combine = all if isinstance(expr, sympy.And) else any
        return lambda env: combine(p(env) for p in parts)
    if isinstance(expr, sympy.Not):
        inner = _compile(expr.args[0])
        return lambda env: not inner(env)
    if isinstance(expr, (sympy.Min, sympy.Max)):
        parts = [_compile(a) for a in expr.args]
        pick = min if isinstance(expr, sympy.Min) else max
        return lambda env: pick(p(env) for p in parts)
    if isinstance(expr, (sympy.floor, sympy.ceiling)):
        inner = _compile(expr.args[0])
        rnd = math.floor if isinstance(expr, sympy.floor) else math.ceil
        return lambda env: rnd(inner(env))
    if isinstance(expr, sympy.Mod):
        a, b = _compile(expr.args[0]), _compile(expr.args[1])
        return lambda env: a(env) % b(env)
    raise Unsupported(type(expr).__name__)


def compile_expr(expr: Any) -> Fn | None:
    """A closure computing `expr` exactly from {symbol name: value}, or None if unsupported."""
    try:
        fn = _compile(expr)
    except Unsupported:
        return None

    def exact(env: dict[str, int]) -> Any:
        value = fn(env)
        if isinstance(value, Fraction) and value.denominator == 1:
            return int(value)
        return value
    return exact
