"""Load-time checks of a metric template: what it can produce, found without any parameter values.

A metric template must produce a number on every path. `check_metric(node, types)` refuses, when
the entry is loaded:
- a branch (or the whole template) that is a string or a truth value: `${n} > 30720 ? 'x' : ...`,
  `"flops": "true"`, `${dtype}` for a `str` parameter, a comparison;
- a string or truth value used as an arithmetic operand or a function argument: `'x' * 3`;
- a constant template (no parameters, no nested calls) whose exact value is not a valid metric
  value: `"(2**200)**20"`, `"1e300 * 1e300"`, `"-1"`, `"2 / 3"` (evaluated once, here).
What depends on parameter values is checked at every evaluation (`evaluate.metric_value`).

Example:
    >>> check_metric(parse("${n} > 4 ? 'x' : ${n}"), {"n": "int"}, "...", "E.flops")
    FormulaError: E.flops, template '...', at position 11: a metric template must give a number ...
"""
from __future__ import annotations

from typing import Literal, Mapping

from formula_db.ast import BinOp, Bool, Call, Cond, Func, Node, Num, Param, Str, Unary, walk
from formula_db.errors import FormulaError
from formula_db.evaluate import Env, evaluate, metric_value

Kind = Literal["number", "bool", "str", "any"]
ARITHMETIC = frozenset({"+", "-", "*", "/", "//", "%", "**"})
_TYPE_KIND: dict[str, Kind] = {"int": "number", "float": "number", "bool": "bool", "str": "str"}


def kind_of(node: Node, types: Mapping[str, str]) -> Kind:
    """What `node` produces, as far as is known without parameter values."""
    if isinstance(node, Num):
        return "number"
    if isinstance(node, Bool):
        return "bool"
    if isinstance(node, Str):
        return "str"
    if isinstance(node, Param):
        return _TYPE_KIND.get(types.get(node.name, ""), "any")
    if isinstance(node, Unary):
        return "bool" if node.op == "not" else "number"
    if isinstance(node, BinOp):
        return "number" if node.op in ARITHMETIC else "bool"
    if isinstance(node, Cond):
        a, b = kind_of(node.if_true, types), kind_of(node.if_false, types)
        return a if a == b else "any"
    if isinstance(node, (Func, Call)):
        return "number"
    return "any"


def _refuse(message: str, node: Node, text: str, where: str) -> FormulaError:
    return FormulaError(message, text, node.pos, where)


def _check_results(node: Node, types: Mapping[str, str], text: str, where: str) -> None:
    """Every value the template can return (each branch of each conditional) is a number."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Cond):
            stack.extend((current.if_true, current.if_false))
            continue
        kind = kind_of(current, types)
        if kind in ("str", "bool"):
            what = "a string" if kind == "str" else "a truth value"
            raise _refuse(f"a metric template must give a number on every branch; this gives "
                          f"{what}", current, text, where)


def _check_operands(node: Node, types: Mapping[str, str], text: str, where: str) -> None:
    """No string or truth value is used as a number (arithmetic operand, function argument)."""
    for current in walk(node):
        if isinstance(current, BinOp) and current.op in ARITHMETIC:
            operands = (current.left, current.right)
        elif isinstance(current, Unary) and current.op != "not":
            operands = (current.operand,)
        elif isinstance(current, Func):
            operands = current.args
        else:
            continue
        for operand in operands:
            kind = kind_of(operand, types)
            if kind in ("str", "bool"):
                what = "a string" if kind == "str" else "a truth value"
                raise _refuse(f"{what} used as a number; use it only in a comparison or as a "
                              f"condition", operand, text, where)


def _is_constant(node: Node) -> bool:
    return not any(isinstance(n, (Param, Call)) for n in walk(node))


def check_metric(node: Node, types: Mapping[str, str], text: str, where: str,
                 allow_fractional: bool = False) -> None:
    """Refuse a metric template that cannot always give a valid metric value (see module doc)."""
    _check_results(node, types, text, where)
    _check_operands(node, types, text, where)
    if _is_constant(node):
        env = Env(params={}, text=text, where=where, allow_fractional=allow_fractional)
        try:
            metric_value(evaluate(node, env), where, text)
        except RecursionError:
            raise FormulaError("template too deep to evaluate", text, 0, where) from None
