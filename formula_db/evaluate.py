"""Exact evaluation of formula ASTs: Python integers throughout, nested calls, hostile-input limits.

Semantics:
- Integers stay Python integers (no float rounding: 1e18+ FLOP counts are exact). A float literal
  makes its sub-expression float.
- `/` of two integers must divide exactly unless the entry allows fractions (`allow_fractional`),
  in which case the result is a `fractions.Fraction`; otherwise evaluation fails naming the
  template and position. `//` floors, `%` is Python's modulo, `ceil_div(a, b)` is -(-a // b).
- `{key}(args)` evaluates the same metric of entry `key`, its parameters bound positionally in
  declared order (trailing parameters with defaults may be omitted). A call cycle fails naming
  the cycle; nested calls deeper than MAX_CALL_DEPTH fail.
- `a ** b` needs an integer exponent in [0, MAX_EXPONENT] whose result stays under MAX_BITS
  bits; every arithmetic result is held under MAX_BITS bits, so no template can exhaust memory.
- Metric values (a registry evaluation's result, and every nested call's result) must be finite,
  non-negative numbers (int, float or Fraction; never a bool or string) no larger than
  MAX_METRIC_VALUE (10**30: sums of 10**8 calls still fit DuckDB's HUGEINT).
- Work is bounded: one evaluation visits at most MAX_STEPS nodes, nested calls included, and a
  nested call with the same callee and arguments is evaluated once (memoised), so a chain of
  entries each calling the next twice costs linear work; a fan-out of distinct arguments that
  would exceed the budget is refused naming it. Arithmetic never raises anything but FormulaError
  (overflow to or from float, inf/nan, too-large values are all refused).
- In binds, names reach only plain data: module attributes, config values, tensor metadata
  (`shape`, `dtype`, `ndim`, `numel`, `itemsize`, `nbytes`) and summaries of other arguments.

Example:
    >>> from formula_db.parser import parse
    >>> evaluate(parse("2 * ${m} * ${n}"), Env(params={"m": 3, "n": 10**18}))
    6000000000000000000
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Mapping

from formula_db.ast import (Attr, BinOp, Bool, Call, Cond, Func, Index, Name, Node, Num, Param,
                            Str, Unary)
from formula_db.errors import CycleError, FormulaError
from formula_db.functions import TEMPLATE_FUNCS, allowed
from formula_db.meta import TensorMeta, ValueSummary

MAX_EXPONENT = 256
MAX_BITS = 4096
MAX_CALL_DEPTH = 32
MAX_METRIC_VALUE = 10**30
MAX_STEPS = 100_000  # nodes one evaluation may visit, nested calls included (zoo models: <2,000)

Number = int | float | Fraction


@dataclass(frozen=True)
class Callee:
    """What a nested call needs to know of the called entry for one metric."""

    key: str
    param_names: tuple[str, ...]
    defaults: Mapping[str, Any]
    node: Node
    text: str
    allow_fractional: bool


Resolver = Callable[[str, str], Callee]


@dataclass
class Budget:
    """Work shared by one evaluation and all its nested calls: steps taken, memoised calls."""

    limit: int = MAX_STEPS
    steps: int = 0
    memo: dict[Any, Any] = field(default_factory=dict)

    def spend(self, env: "Env", node: Node) -> None:
        self.steps += 1
        if self.steps > self.limit:
            raise env.error(f"evaluation exceeds {self.limit} steps (nested calls fan out with "
                            f"different arguments, or the formulas are too large); call shared "
                            f"sub-formulas once and multiply", node)


@dataclass
class Env:
    """Evaluation environment: parameter values, where we are, and how to resolve nested calls."""

    params: Mapping[str, Any]
    text: str = ""
    where: str = ""
    metric: str = "flops"
    resolve: Resolver | None = None
    allow_fractional: bool = False
    roots: Mapping[str, Any] = field(default_factory=dict)  # bind roots: module, input, ...
    stack: tuple[str, ...] = ()
    budget: Budget = field(default_factory=Budget)

    def error(self, message: str, node: Node) -> FormulaError:
        return FormulaError(message, self.text, node.pos, self.where or None)


TENSOR_FIELDS = frozenset({"shape", "dtype", "ndim", "numel", "itemsize", "nbytes", "device"})


def _kind(value: Any) -> str:
    if isinstance(value, TensorMeta):
        return "a tensor"
    if isinstance(value, tuple):
        return "a tuple"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _check_size(value: Any, node: Node, env: Env) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise env.error(f"intermediate value exceeds 2**{MAX_BITS}", node)
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return _check_size(int(value), node, env)
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
            raise env.error(f"intermediate value exceeds 2**{MAX_BITS}", node)
    if isinstance(value, float) and not math.isfinite(value):
        raise env.error("result is not finite", node)
    return value


def _number(value: Any, node: Node, env: Env, what: str) -> Number:
    if isinstance(value, ValueSummary):
        value = value.value
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise env.error(f"{what} must be a number, got {_kind(value)}", node)
    return value


def _power(base: Number, exp: Number, node: Node, env: Env) -> Number:
    if isinstance(exp, Fraction) and exp.denominator == 1:
        exp = int(exp)
    if not isinstance(exp, int):
        raise env.error("exponent must be an integer", node)
    if exp < 0 or exp > MAX_EXPONENT:
        raise env.error(f"exponent {exp} outside 0..{MAX_EXPONENT}", node)
    if isinstance(base, (int, Fraction)):
        bits = (abs(base).numerator.bit_length() if isinstance(base, Fraction)
                else abs(base).bit_length())
        if bits * exp > MAX_BITS:
            raise env.error(f"power would exceed 2**{MAX_BITS}", node)
    elif abs(base) > 1 and exp * math.log2(abs(base)) > 1000:
        raise env.error("power overflows a float", node)
    return base ** exp


def _divide(a: Number, b: Number, node: Node, env: Env) -> Number:
    if b == 0:
        raise env.error("division by zero", node)
    if isinstance(a, float) or isinstance(b, float):
        return a / b
    q = Fraction(a) / Fraction(b)
    if q.denominator == 1:
        return int(q)
    if env.allow_fractional:
        return q
    raise env.error(f"inexact integer division {a} / {b}; use // or ceil_div(), or set "
                    f"allow_fractional on the entry", node)


_ARITH: dict[str, Callable[[Number, Number], Number]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, ValueSummary) else value


def evaluate(node: Node, env: Env) -> Any:
    """Evaluate `node` exactly in `env`; raises FormulaError with the template and position."""
    env.budget.spend(env, node)
    if isinstance(node, Num):
        return node.value
    if isinstance(node, (Bool, Str)):
        return node.value
    if isinstance(node, Param):
        if node.name not in env.params:
            raise env.error(f"unknown parameter ${{{node.name}}}; known: "
                            f"{', '.join(sorted(env.params)) or 'none'}", node)
        return env.params[node.name]
    if isinstance(node, Unary):
        value = _unwrap(evaluate(node.operand, env))
        if node.op == "not":
            return not value
        value = _number(value, node, env, "operand")
        return -value if node.op == "-" else value
    if isinstance(node, BinOp):
        return _binop(node, env)
    if isinstance(node, Cond):
        test = _unwrap(evaluate(node.test, env))
        return evaluate(node.if_true if test else node.if_false, env)
    if isinstance(node, Func):
        return _func(node, env)
    if isinstance(node, Call):
        return _call(node, env)
    if isinstance(node, Name):
        if node.name not in env.roots:
            raise env.error(f"{node.name!r} is only available in parameter binds", node)
        return env.roots[node.name]
    if isinstance(node, Attr):
        return _attr(evaluate(node.obj, env), node, env)
    if isinstance(node, Index):
        return _index(evaluate(node.obj, env), _unwrap(evaluate(node.index, env)), node, env)
    raise env.error(f"unsupported node {type(node).__name__}", node)


def _binop(node: BinOp, env: Env) -> Any:
    if node.op == "and":
        left = _unwrap(evaluate(node.left, env))
        return bool(left) and bool(_unwrap(evaluate(node.right, env)))
    if node.op == "or":
        left = _unwrap(evaluate(node.left, env))
        return bool(left) or bool(_unwrap(evaluate(node.right, env)))
    left = _unwrap(evaluate(node.left, env))
    right = _unwrap(evaluate(node.right, env))
    if node.op in _COMPARE:
        try:
            return _COMPARE[node.op](left, right)
        except TypeError:
            raise env.error(f"cannot compare {_kind(left)} with {_kind(right)}", node) from None
    a = _number(left, node, env, "left operand")
    b = _number(right, node, env, "right operand")
    try:
        if node.op in _ARITH:
            return _check_size(_ARITH[node.op](a, b), node, env)
        if node.op == "/":
            return _check_size(_divide(a, b, node, env), node, env)
        if node.op in ("//", "%"):
            if b == 0:
                raise env.error("division by zero", node)
            return _check_size(a // b if node.op == "//" else a % b, node, env)
        if node.op == "**":
            return _check_size(_power(a, b, node, env), node, env)
    except (OverflowError, ZeroDivisionError, ValueError) as exc:
        raise env.error(f"arithmetic overflow in {node.op!r} ({exc}); keep values under "
                        f"2**{MAX_BITS} and floats finite", node) from None
    raise env.error(f"unknown operator {node.op!r}", node)


def _func(node: Func, env: Env) -> Any:
    table = allowed("bind" if env.roots else "template")
    if node.name not in table:
        raise env.error(f"function {node.name!r} is not allowed; allowed: "
                        f"{', '.join(sorted(table))}", node)
    lo, hi, fn = table[node.name]
    if not lo <= len(node.args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise env.error(f"{node.name}() takes {want} arguments, got {len(node.args)}", node)
    args = [_unwrap(evaluate(a, env)) for a in node.args]
    if node.name in TEMPLATE_FUNCS:
        args = [_number(a, node, env, f"argument of {node.name}()") for a in args]
    try:
        return _check_size(fn(*args), node, env)
    except (TypeError, IndexError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise env.error(f"{node.name}(): {exc}", node) from None


def _call(node: Call, env: Env) -> Any:
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
        raise env.error(f"{{{node.key}}} takes {len(callee.param_names)} arguments "
                        f"({', '.join(callee.param_names)}), got {len(node.args)}", node)
    values = dict(callee.defaults)
    for name, arg in zip(callee.param_names, node.args):
        values[name] = evaluate(arg, env)
    memo_key = _memo_key(callee.key, env.metric, values)
    if memo_key is not None and memo_key in env.budget.memo:
        return env.budget.memo[memo_key]
    where = f"{callee.key}.{env.metric}"
    inner = Env(params=values, text=callee.text, where=where,
                metric=env.metric, resolve=env.resolve, allow_fractional=callee.allow_fractional,
                stack=env.stack + (node.key,), budget=env.budget)
    result = metric_value(evaluate(callee.node, inner), where, callee.text)
    if memo_key is not None:
        env.budget.memo[memo_key] = result
    return result


def _memo_key(key: str, metric: str, values: Mapping[str, Any]) -> Any:
    """A hashable key of a nested call (types kept apart: `True`, `1` and `1.0` differ)."""
    items = []
    for name in sorted(values):
        value = _unwrap(values[name])
        if not isinstance(value, (int, float, Fraction, str, bool)) and value is not None:
            return None
        items.append((name, type(value).__name__, value))
    return (key, metric, tuple(items))


def metric_value(value: Any, where: str | None = None, text: str | None = None) -> Any:
    """`value` if it is a valid metric value (a finite number in 0..MAX_METRIC_VALUE, not a
    bool), else a FormulaError naming what it is."""
    value = exact(_unwrap(value))
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise FormulaError(f"a metric must be a number, got {_kind(value)} {_short(value)}; "
                           f"every branch of the template must give a number", text, None, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise FormulaError(f"a metric must be finite, got {value}", text, None, where)
    if value < 0:
        raise FormulaError(f"a metric must not be negative, got {_short(value)}", text, None, where)
    if value > MAX_METRIC_VALUE:
        raise FormulaError(f"metric value {_short(value)} exceeds the bound 10**30; check the "
                           f"template's units and exponents", text, None, where)
    return value


def _short(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 128:
        return f"~2**{value.bit_length() - 1}"
    if isinstance(value, Fraction) and value.numerator.bit_length() > 128:
        return f"~2**{value.numerator.bit_length() - value.denominator.bit_length()}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _attr(obj: Any, node: Attr, env: Env) -> Any:
    if isinstance(obj, TensorMeta):
        if node.name not in TENSOR_FIELDS:
            raise env.error(f"tensors expose only {', '.join(sorted(TENSOR_FIELDS))}; "
                            f"not {node.name!r}", node)
        return getattr(obj, node.name)
    if isinstance(obj, ValueSummary) and node.name in ("value", "type"):
        return getattr(obj, node.name)
    if isinstance(obj, Mapping):
        if node.name not in obj:
            raise env.error(f"no attribute {node.name!r} here; available: "
                            f"{', '.join(sorted(map(str, obj))[:20]) or 'none'}", node)
        return obj[node.name]
    raise env.error(f"attribute {node.name!r} is not reachable on {_kind(obj)}", node)


def _index(obj: Any, index: Any, node: Index, env: Env) -> Any:
    if isinstance(obj, TensorMeta):
        raise env.error("index a tensor's .shape, not the tensor", node)
    if isinstance(obj, tuple):
        if isinstance(index, bool) or not isinstance(index, int):
            raise env.error(f"tuple index must be an integer, got {_kind(index)}", node)
        if not -len(obj) <= index < len(obj):
            raise env.error(f"index {index} out of range for length {len(obj)}", node)
        return obj[index]
    if isinstance(obj, Mapping):
        if index not in obj:
            raise env.error(f"no key {index!r}; available: {', '.join(sorted(map(str, obj))[:20])}",
                            node)
        return obj[index]
    raise env.error(f"{_kind(obj)} cannot be indexed", node)


def exact(value: Any) -> Any:
    """Normalise a result: a Fraction with denominator 1 becomes an int."""
    if isinstance(value, Fraction) and value.denominator == 1:
        return int(value)
    return value
