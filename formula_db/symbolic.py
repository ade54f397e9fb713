"""Symbolic evaluation: the formula AST turned into a sympy expression, node by node.

No template text ever reaches `sympy.sympify`/`parse_expr` (they evaluate strings); each AST node
maps to one sympy constructor. Nested `{key}(args)` calls are expanded by converting the callee's
AST with its parameters bound to the caller's argument expressions, so a whole model's template
becomes one closed form in its free parameters (batch, seq_len, ...), which `closed_form`
simplifies.

Parameters given a value are substituted as exact numbers; the others become integer,
non-negative sympy symbols (not positive: a cache length of 0 must keep `kv_len > 0 ? ...`
branches alive). `//` becomes floor(a/b), `%` Mod, `ceil_div` ceiling(a/b), a conditional a
Piecewise.

Example:
    >>> from formula_db.parser import parse
    >>> to_sympy(parse("2 * ${m} * ${k} * ${n} + (${bias} ? ${m} * ${n} : 0)"), {"bias": True})
    2*k*m*n + m*n
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping

import sympy

from formula_db.ast import BinOp, Bool, Call, Cond, Func, Num, Param, Str, Unary, Node
from formula_db.errors import CycleError, FormulaError
from formula_db.evaluate import MAX_CALL_DEPTH, Resolver

_FUNCS: dict[str, Callable[..., sympy.Expr]] = {
    "min": lambda *a: sympy.Min(*a),
    "max": lambda *a: sympy.Max(*a),
    "abs": lambda a: sympy.Abs(a),
    "ceil": lambda a: sympy.ceiling(a),
    "floor": lambda a: sympy.floor(a),
    "int": lambda a: sympy.floor(a),  # parameters are non-negative: truncation == floor
    "ceil_div": lambda a, b: sympy.ceiling(a / b),
}


def symbol(name: str) -> sympy.Symbol:
    """The sympy symbol used for a free parameter."""
    return sympy.Symbol(name, integer=True, nonnegative=True)


def constant(value: Any) -> Any:
    """A Python parameter value as an exact sympy number (strings stay Python strings)."""
    if isinstance(value, bool):
        return sympy.true if value else sympy.false
    if isinstance(value, int):
        return sympy.Integer(value)
    if isinstance(value, Fraction):
        return sympy.Rational(value.numerator, value.denominator)
    if isinstance(value, float):
        return sympy.Float(value)
    if isinstance(value, str):
        return value
    raise FormulaError(f"cannot use a {type(value).__name__} value symbolically")


@dataclass
class SymEnv:
    """Symbols or values of the parameters in scope, and how to resolve nested calls."""

    params: Mapping[str, Any]
    text: str = ""
    where: str = ""
    metric: str = "flops"
    resolve: Resolver | None = None
    stack: tuple[str, ...] = ()

    def error(self, message: str, node: Node) -> FormulaError:
        return FormulaError(message, self.text, node.pos, self.where or None)


def _truth(value: Any) -> Any:
    """A condition: booleans stay, numbers and symbols mean `!= 0`."""
    if isinstance(value, (sympy.logic.boolalg.Boolean, sympy.core.relational.Relational)):
        return value
    return sympy.Ne(value, 0)


def convert(node: Node, env: SymEnv) -> Any:
    """Convert one AST node (and its subtree) into a sympy object."""
    if isinstance(node, Num):
        return sympy.Integer(node.value) if isinstance(node.value, int) else sympy.Float(node.value)
    if isinstance(node, Bool):
        return sympy.true if node.value else sympy.false
    if isinstance(node, Str):
        return node.value
    if isinstance(node, Param):
        if node.name not in env.params:
            raise env.error(f"unknown parameter ${{{node.name}}}", node)
        return env.params[node.name]
    if isinstance(node, Unary):
        value = convert(node.operand, env)
        if node.op == "not":
            return sympy.Not(_truth(value))
        return -value if node.op == "-" else value
    if isinstance(node, BinOp):
        return _binop(node, env)
    if isinstance(node, Cond):
        test = _truth(convert(node.test, env))
        if test is sympy.true:
            return convert(node.if_true, env)
        if test is sympy.false:
            return convert(node.if_false, env)
        return sympy.Piecewise((convert(node.if_true, env), test),
                               (convert(node.if_false, env), True))
    if isinstance(node, Func):
        if node.name not in _FUNCS:
            raise env.error(f"function {node.name!r} has no symbolic form", node)
        return _FUNCS[node.name](*(convert(a, env) for a in node.args))
    if isinstance(node, Call):
        return _call(node, env)
    raise env.error(f"{type(node).__name__} nodes (binds) have no symbolic form", node)


def _binop(node: BinOp, env: SymEnv) -> Any:
    left = convert(node.left, env)
    right = convert(node.right, env)
    op = node.op
    if isinstance(left, str) or isinstance(right, str):
        if op in ("==", "!="):
            if isinstance(left, str) and isinstance(right, str):
                return sympy.true if (left == right) == (op == "==") else sympy.false
        raise env.error("string parameters must be given values for symbolic evaluation", node)
    if op == "and":
        return sympy.And(_truth(left), _truth(right))
    if op == "or":
        return sympy.Or(_truth(left), _truth(right))
    if op in ("==", "!="):
        rel = sympy.Eq(left, right)
        return rel if op == "==" else sympy.Not(rel)
    if op in ("<", "<=", ">", ">="):
        return {"<": sympy.Lt, "<=": sympy.Le, ">": sympy.Gt, ">=": sympy.Ge}[op](left, right)
    if isinstance(left, sympy.logic.boolalg.BooleanAtom):
        left = sympy.Integer(int(bool(left)))
    if isinstance(right, sympy.logic.boolalg.BooleanAtom):
        right = sympy.Integer(int(bool(right)))
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return left / right
    if op == "//":
        return sympy.floor(left / right)
    if op == "%":
        return sympy.Mod(left, right)
    if op == "**":
        return left ** right
    raise env.error(f"unknown operator {op!r}", node)


def _call(node: Call, env: SymEnv) -> Any:
    if env.resolve is None:
        raise env.error(f"nested call {{{node.key}}}(...) needs a formula registry", node)
    if node.key in env.stack:
        cycle = " -> ".join(env.stack[env.stack.index(node.key):] + (node.key,))
        raise CycleError(f"recursive formula cycle {cycle}", env.text, node.pos, env.where or None)
    if len(env.stack) >= MAX_CALL_DEPTH:
        raise env.error(f"nested calls deeper than {MAX_CALL_DEPTH}", node)
    callee = env.resolve(node.key, env.metric)
    required = [p for p in callee.param_names if p not in callee.defaults]
    if not len(required) <= len(node.args) <= len(callee.param_names):
        raise env.error(f"{{{node.key}}} takes {len(callee.param_names)} arguments, "
                        f"got {len(node.args)}", node)
    values = {k: constant(v) for k, v in callee.defaults.items()}
    for name, arg in zip(callee.param_names, node.args):
        values[name] = convert(arg, env)
    inner = SymEnv(values, callee.text, f"{callee.key}.{env.metric}", env.metric, env.resolve,
                   env.stack + (node.key,))
    return convert(callee.node, inner)


def to_sympy(node: Node, fixed: Mapping[str, Any] | None = None, free: list[str] | None = None,
             resolve: Resolver | None = None, metric: str = "flops", text: str = "",
             where: str = "", stack: tuple[str, ...] = ()) -> Any:
    """Convert a template AST: `fixed` parameters become numbers, `free` ones symbols; `stack`
    holds the key of the entry being converted (so a cycle is named from it)."""
    params: dict[str, Any] = {name: symbol(name) for name in (free or [])}
    params.update({k: constant(v) for k, v in (fixed or {}).items()})
    return convert(node, SymEnv(params, text, where, metric, resolve, stack))


def closed_form(expr: Any) -> Any:
    """Expand and simplify a converted expression into a compact closed form."""
    if isinstance(expr, (sympy.Piecewise,)):
        return sympy.piecewise_fold(sympy.simplify(expr))
    return sympy.factor_terms(sympy.expand(expr))
