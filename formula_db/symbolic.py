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

The evaluator's limits hold here too: at most MAX_STEPS (25,000) nodes converted per
conversion, nested calls with the same callee and argument expressions converted once
(memoised), numeric exponents in 0..MAX_EXPONENT, numbers under 2**MAX_BITS, constant division
by zero refused; `closed_form` leaves a product unexpanded when expanding it would give more than
MAX_EXPANDED_TERMS terms.

Example:
    >>> from formula_db.parser import parse
    >>> to_sympy(parse("2 * ${m} * ${k} * ${n} + (${bias} ? ${m} * ${n} : 0)"), {"bias": True})
    2*k*m*n + m*n
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Mapping

import sympy

from formula_db.ast import BinOp, Bool, Call, Cond, Func, Num, Param, Str, Unary, Node
from formula_db.errors import CycleError, FormulaError
from formula_db.evaluate import MAX_BITS, MAX_CALL_DEPTH, MAX_EXPONENT, Resolver

MAX_EXPANDED_TERMS = 5_000
MAX_STEPS = 25_000  # nodes one conversion may visit (zoo models: under 1,300)

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
        if value != value or value in (float("inf"), float("-inf")):
            raise FormulaError(f"cannot use the non-finite value {value} symbolically")
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
    work: dict[str, Any] = field(default_factory=lambda: {"steps": 0, "memo": {}})

    def error(self, message: str, node: Node) -> FormulaError:
        return FormulaError(message, self.text, node.pos, self.where or None)

    def spend(self, node: Node) -> None:
        self.work["steps"] += 1
        if self.work["steps"] > MAX_STEPS:
            raise self.error(f"conversion exceeds {MAX_STEPS} steps (nested calls fan out with "
                             f"different arguments); call shared sub-formulas once", node)


def _truth(value: Any) -> Any:
    """A condition: booleans stay, numbers and symbols mean `!= 0`."""
    if isinstance(value, (sympy.logic.boolalg.Boolean, sympy.core.relational.Relational)):
        return value
    return sympy.Ne(value, 0)


def convert(node: Node, env: SymEnv) -> Any:
    """Convert one AST node (and its subtree) into a sympy object."""
    env.spend(node)
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
        args = [convert(a, env) for a in node.args]
        if any(isinstance(a, str) for a in args):
            raise env.error(f"{node.name}() takes numbers, not strings", node)
        if node.name == "ceil_div" and _is_zero(args[1]):
            raise env.error("ceil_div(): division by zero", node)
        return _sized(_FUNCS[node.name](*args), node, env)
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
    if op in ("/", "//", "%") and _is_zero(right):
        raise env.error("division by zero", node)
    if op == "**":
        _check_power(left, right, node, env)
    if op == "+":
        return _sized(left + right, node, env)
    if op == "-":
        return _sized(left - right, node, env)
    if op == "*":
        return _sized(left * right, node, env)
    if op == "/":
        return _sized(left / right, node, env)
    if op == "//":
        return _sized(sympy.floor(left / right), node, env)
    if op == "%":
        return _sized(sympy.Mod(left, right), node, env)
    if op == "**":
        return _sized(left ** right, node, env)
    raise env.error(f"unknown operator {op!r}", node)


def _is_zero(value: Any) -> bool:
    return isinstance(value, sympy.Expr) and value.is_number and value == 0


def _check_power(base: Any, exp: Any, node: Node, env: SymEnv) -> None:
    """Numeric exponents as the evaluator allows them: integers in 0..MAX_EXPONENT, results
    under 2**MAX_BITS when the base is a number too."""
    if not (isinstance(exp, sympy.Expr) and exp.is_number):
        return
    if not exp.is_integer or exp < 0 or exp > MAX_EXPONENT:
        raise env.error(f"exponent {exp} outside 0..{MAX_EXPONENT} (integers only)", node)
    if isinstance(base, sympy.Expr) and base.is_number and base.is_finite:
        size = abs(base)
        if size > 1 and float(sympy.log(size, 2)) * int(exp) > MAX_BITS:
            raise env.error(f"power would exceed 2**{MAX_BITS}", node)


_LIMIT = sympy.Integer(2) ** MAX_BITS


def _sized(value: Any, node: Node, env: SymEnv) -> Any:
    """A numeric result must be finite and under 2**MAX_BITS (as in exact evaluation)."""
    if isinstance(value, sympy.Expr) and value.is_number:
        if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            raise env.error("result is not finite", node)
        if value.is_comparable and abs(value) > _LIMIT:
            raise env.error(f"intermediate value exceeds 2**{MAX_BITS}", node)
    return value


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
    try:
        memo_key: Any = (callee.key, env.metric, tuple(sorted(
            (k, type(v).__name__, v) for k, v in values.items())))
        hash(memo_key)
    except TypeError:
        memo_key = None
    if memo_key is not None and memo_key in env.work["memo"]:
        return env.work["memo"][memo_key]
    inner = SymEnv(values, callee.text, f"{callee.key}.{env.metric}", env.metric, env.resolve,
                   env.stack + (node.key,), env.work)
    result = convert(callee.node, inner)
    if isinstance(result, str) or isinstance(result, sympy.logic.boolalg.Boolean):
        raise env.error(f"{{{node.key}}} gives a {'string' if isinstance(result, str) else 'truth value'}, "
                        f"not a number", node)
    if memo_key is not None:
        env.work["memo"][memo_key] = result
    return result


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
    if isinstance(expr, str) or isinstance(expr, sympy.logic.boolalg.Boolean):
        raise FormulaError(f"the template gives {'a string' if isinstance(expr, str) else 'a truth value'}"
                           f" ({str(expr)[:60]}), not a number")
    if expanded_terms(expr) > MAX_EXPANDED_TERMS:
        return expr  # expanding would blow up; the unexpanded form is exact
    if isinstance(expr, (sympy.Piecewise,)):
        return sympy.piecewise_fold(sympy.simplify(expr))
    return sympy.factor_terms(sympy.expand(expr))


def expanded_terms(expr: Any, cap: int = 10**9) -> int:
    """An upper bound on the number of terms `sympy.expand(expr)` can produce (capped)."""
    if not isinstance(expr, sympy.Basic) or not expr.args:
        return 1
    if isinstance(expr, sympy.Add):
        return min(cap, sum(expanded_terms(a, cap) for a in expr.args))
    if isinstance(expr, sympy.Mul):
        total = 1
        for a in expr.args:
            total = min(cap, total * expanded_terms(a, cap))
        return total
    if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and int(expr.exp) > 0:
        base = expanded_terms(expr.base, cap)
        return cap if base > 1 and int(expr.exp) > 64 else min(cap, base ** int(expr.exp))
    return min(cap, max(expanded_terms(a, cap) for a in expr.args) ** 2) if expr.args else 1
