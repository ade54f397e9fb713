"""The formula language's abstract syntax tree: small frozen dataclasses, one per construct.

Every node carries `pos`, the 0-based character offset in the template text where it starts, so
that evaluation errors can point at the exact place. Nodes are data only; the parser builds them,
`evaluate.py` computes them exactly, `symbolic.py` turns them into sympy expressions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union


@dataclass(frozen=True)
class Num:
    """An integer or float literal."""

    value: int | float
    pos: int


@dataclass(frozen=True)
class Bool:
    """`true` or `false`."""

    value: bool
    pos: int


@dataclass(frozen=True)
class Str:
    """A quoted string literal (only compared with `==`/`!=`, e.g. a dtype name)."""

    value: str
    pos: int


@dataclass(frozen=True)
class Param:
    """`${name}`: a parameter of the entry (or an earlier parameter, inside a bind)."""

    name: str
    pos: int


@dataclass(frozen=True)
class Name:
    """A bare root name in a bind expression: module, input, output, kwargs, config."""

    name: str
    pos: int


@dataclass(frozen=True)
class Attr:
    """`obj.name` (binds only, whitelisted roots)."""

    obj: "Node"
    name: str
    pos: int


@dataclass(frozen=True)
class Index:
    """`obj[index]` (binds only)."""

    obj: "Node"
    index: "Node"
    pos: int


@dataclass(frozen=True)
class Unary:
    """`-x`, `+x` or `not x`."""

    op: str
    operand: "Node"
    pos: int


@dataclass(frozen=True)
class BinOp:
    """Arithmetic `+ - * / // % **`, comparison `== != < <= > >=`, boolean `and`/`or`."""

    op: str
    left: "Node"
    right: "Node"
    pos: int


@dataclass(frozen=True)
class Cond:
    """`test ? if_true : if_false` (only the chosen branch is evaluated)."""

    test: "Node"
    if_true: "Node"
    if_false: "Node"
    pos: int


@dataclass(frozen=True)
class Func:
    """A whitelisted function call: `max(a, b)`, `ceil_div(a, b)`, `numel(input[0])`."""

    name: str
    args: tuple["Node", ...]
    pos: int


@dataclass(frozen=True)
class Call:
    """`{key}(arg, ...)`: the same metric of another entry, arguments bound positionally."""

    key: str
    args: tuple["Node", ...]
    pos: int


Node = Union[Num, Bool, Str, Param, Name, Attr, Index, Unary, BinOp, Cond, Func, Call]


def children(node: Node) -> tuple[Node, ...]:
    """Direct sub-nodes of `node`."""
    if isinstance(node, (Attr,)):
        return (node.obj,)
    if isinstance(node, Index):
        return (node.obj, node.index)
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, BinOp):
        return (node.left, node.right)
    if isinstance(node, Cond):
        return (node.test, node.if_true, node.if_false)
    if isinstance(node, (Func, Call)):
        return node.args
    return ()


def walk(node: Node) -> Iterator[Node]:
    """All nodes of the tree, parents before children (iterative: trees may be deep)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def called_keys(node: Node) -> set[str]:
    """Keys of every `{key}(...)` call in the tree."""
    return {n.key for n in walk(node) if isinstance(n, Call)}


def param_names(node: Node) -> set[str]:
    """Names of every `${name}` in the tree."""
    return {n.name for n in walk(node) if isinstance(n, Param)}
