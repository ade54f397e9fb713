"""Parser of the formula language: template text -> AST (`formula_db.ast`), no `eval` anywhere.

A hand-written tokenizer and recursive-descent parser. Grammar (lowest precedence first):

    expr     := or_expr ( '?' expr ':' expr )?
    or_expr  := and_expr ( 'or' and_expr )*
    and_expr := not_expr ( 'and' not_expr )*
    not_expr := 'not' not_expr | compare
    compare  := sum ( ('=='|'!='|'<'|'<='|'>'|'>=') sum )?
    sum      := term ( ('+'|'-') term )*
    term     := unary ( ('*'|'/'|'//'|'%') unary )*
    unary    := ('-'|'+') unary | power
    power    := postfix ( '**' unary )?            # right-associative, -2**2 == -4
    postfix  := primary ( '.' IDENT | '[' expr ']' )*      # binds only
    primary  := INT | FLOAT | STRING | 'true' | 'false' | '${' IDENT '}'
              | '{' KEY '}' '(' args? ')' | IDENT '(' args? ')' | IDENT | '(' expr ')'
    args     := expr ( ',' expr )*

Two modes share the grammar. `template` mode (cost templates) refuses bare names, attribute access
and subscripts: parameters are written `${name}`. `bind` mode (parameter binds) allows the roots
`module input output kwargs config` with `.attr` and `[i]` paths; what a path may reach is
checked again at evaluation. Limits that stop hostile input before it costs anything: template
length, nesting depth, literal size.

Example:
    >>> parse("2 * ${batch} * ${in_features} * ${out_features}")
    BinOp(op='*', ...)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from formula_db.ast import (Attr, BinOp, Bool, Call, Cond, Func, Index, Name, Node, Num, Param,
                            Str, Unary, children)
from formula_db.errors import FormulaError
from formula_db.functions import allowed

Mode = Literal["template", "bind"]

MAX_TEMPLATE_CHARS = 4000
MAX_DEPTH = 64
MAX_TREE_DEPTH = 200  # depth of the AST, which evaluation and symbolic conversion recurse on
MAX_LITERAL_DIGITS = 40
BIND_ROOTS = frozenset({"module", "input", "output", "kwargs", "config"})
KEYWORDS = frozenset({"and", "or", "not", "true", "false"})


@dataclass(frozen=True)
class Token:
    kind: str  # NUM, STR, IDENT, PARAM, KEY, OP, END
    text: str
    pos: int


_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<param>\$\{\s*(?P<pname>[A-Za-z_][A-Za-z0-9_]*)\s*\})
  | (?P<key>\{\s*(?P<kname>[A-Za-z][A-Za-z0-9_]*)\s*\})
  | (?P<str>"[^"\\\n]{0,200}"|'[^'\\\n]{0,200}')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\*\*|//|==|!=|<=|>=|[-+*/%()<>?:,.\[\]])
""", re.VERBOSE)


def tokenize(text: str) -> list[Token]:
    """Split template text into tokens; unknown characters are an error naming the position."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            if text[pos] == "$":
                raise FormulaError("expected '${name}' after '$'", text, pos)
            if text[pos] == "{":
                raise FormulaError("expected '{key}(...)' (a formula key in braces)", text, pos)
            raise FormulaError(f"unexpected character {text[pos]!r}", text, pos)
        kind = m.lastgroup
        if kind == "pname":
            kind = "param"
        if kind == "kname":
            kind = "key"
        if kind != "ws":
            if m.group("param"):
                tokens.append(Token("PARAM", m.group("pname"), pos))
            elif m.group("key"):
                tokens.append(Token("KEY", m.group("kname"), pos))
            else:
                tokens.append(Token(kind.upper(), m.group(0), pos))
        pos = m.end()
    tokens.append(Token("END", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, mode: Mode) -> None:
        self.text = text
        self.mode = mode
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # -- helpers -----------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, pos: int | None = None) -> FormulaError:
        return FormulaError(message, self.text, self.tok.pos if pos is None else pos)

    def at(self, *texts: str) -> bool:
        return self.tok.kind in ("OP", "IDENT") and self.tok.text in texts

    def take(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def expect(self, text: str, what: str) -> Token:
        if not self.at(text):
            found = "end of template" if self.tok.kind == "END" else repr(self.tok.text)
            raise self.error(f"expected {what}, found {found}")
        return self.take()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nesting deeper than {MAX_DEPTH} levels; simplify the template")

    # -- grammar -----------------------------------------------------------------------------
    def parse(self) -> Node:
        if self.tok.kind == "END":
            raise self.error("expected an expression, found an empty template")
        node = self.expr()
        if self.tok.kind != "END":
            raise self.error(f"expected an operator or end of template, found {self.tok.text!r}")
        deep = _deeper_than(node, MAX_TREE_DEPTH)
        if deep is not None:
            raise self.error(f"expression deeper than {MAX_TREE_DEPTH} levels (a long chain of "
                             f"operators); group it with parentheses or split it into entries",
                             deep.pos)
        return node

    def expr(self) -> Node:
        self.enter()
        node = self.or_expr()
        if self.at("?"):
            pos = self.take().pos
            if_true = self.expr()
            self.expect(":", "':' of a conditional 'test ? a : b'")
            if_false = self.expr()
            node = Cond(node, if_true, if_false, pos)
        self.depth -= 1
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.at("or"):
            pos = self.take().pos
            node = BinOp("or", node, self.and_expr(), pos)
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.at("and"):
            pos = self.take().pos
            node = BinOp("and", node, self.not_expr(), pos)
        return node

    def not_expr(self) -> Node:
        if self.at("not"):
            pos = self.take().pos
            self.enter()
            node = Unary("not", self.not_expr(), pos)
            self.depth -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        node = self.sum()
        if self.at("==", "!=", "<", "<=", ">", ">="):
            tok = self.take()
            node = BinOp(tok.text, node, self.sum(), tok.pos)
            if self.at("==", "!=", "<", "<=", ">", ">="):
                raise self.error("chained comparisons are not supported; use 'and'")
        return node

    def sum(self) -> Node:
        node = self.term()
        while self.at("+", "-"):
            tok = self.take()
            node = BinOp(tok.text, node, self.term(), tok.pos)
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.at("*", "/", "//", "%"):
            tok = self.take()
            node = BinOp(tok.text, node, self.unary(), tok.pos)
        return node

    def unary(self) -> Node:
        if self.at("-", "+"):
            tok = self.take()
            self.enter()
            node = Unary(tok.text, self.unary(), tok.pos)
            self.depth -= 1
            return node
        return self.power()

    def power(self) -> Node:
        node = self.postfix()
        if self.at("**"):
            tok = self.take()
            self.enter()
            node = BinOp("**", node, self.unary(), tok.pos)
            self.depth -= 1
        return node

    def postfix(self) -> Node:
        node = self.primary()
        while self.at(".", "["):
            tok = self.take()
            if self.mode == "template":
                kind = "attribute access" if tok.text == "." else "subscripts"
                raise self.error(f"{kind} is not allowed in cost templates; bind a parameter instead",
                                 tok.pos)
            if tok.text == ".":
                name = self.tok
                if name.kind != "IDENT":
                    raise self.error("expected an attribute name after '.'")
                self.take()
                if name.text.startswith("_"):
                    raise self.error(f"attribute {name.text!r} is private and never reachable", name.pos)
                node = Attr(node, name.text, tok.pos)
            else:
                self.enter()
                index = self.expr()
                self.depth -= 1
                self.expect("]", "']'")
                node = Index(node, index, tok.pos)
        return node

    def args(self) -> tuple[Node, ...]:
        self.expect("(", "'(' to open the argument list")
        args: list[Node] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.take()
                args.append(self.expr())
        self.expect(")", "',' or ')' in the argument list")
        return tuple(args)

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "NUM":
            self.take()
            return self.number(tok)
        if tok.kind == "STR":
            self.take()
            return Str(tok.text[1:-1], tok.pos)
        if tok.kind == "PARAM":
            self.take()
            return Param(tok.text, tok.pos)
        if tok.kind == "KEY":
            self.take()
            if not self.at("("):
                raise self.error(f"expected '(' after {{{tok.text}}}: a nested formula is called "
                                 f"like {{{tok.text}}}(arg, ...)")
            return Call(tok.text, self.args(), tok.pos)
        if tok.kind == "IDENT":
            self.take()
            if tok.text in ("true", "false"):
                return Bool(tok.text == "true", tok.pos)
            if tok.text in KEYWORDS:
                raise self.error(f"unexpected keyword {tok.text!r}", tok.pos)
            if self.at("("):
                return self.function(tok)
            if self.mode == "template":
                raise self.error(f"bare name {tok.text!r} is not allowed; write parameters as "
                                 f"${{{tok.text}}}", tok.pos)
            if tok.text not in BIND_ROOTS:
                raise self.error(f"unknown name {tok.text!r}; binds may start from "
                                 f"{', '.join(sorted(BIND_ROOTS))} or ${{param}}", tok.pos)
            return Name(tok.text, tok.pos)
        if self.at("("):
            self.take()
            node = self.expr()
            self.expect(")", "')'")
            return node
        found = "end of template" if tok.kind == "END" else repr(tok.text)
        raise self.error(f"expected a number, ${{param}}, {{key}}(...), function call or '(', "
                         f"found {found}")

    def function(self, tok: Token) -> Func:
        table = allowed(self.mode)
        if tok.text not in table:
            raise self.error(f"function {tok.text!r} is not allowed; allowed: "
                             f"{', '.join(sorted(table))}", tok.pos)
        args = self.args()
        lo, hi, _ = table[tok.text]
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.error(f"{tok.text}() takes {want} arguments, got {len(args)}", tok.pos)
        return Func(tok.text, args, tok.pos)

    def number(self, tok: Token) -> Num:
        digits = len(tok.text.split("e")[0].split("E")[0].replace(".", ""))
        if digits > MAX_LITERAL_DIGITS:
            raise self.error(f"numeric literal longer than {MAX_LITERAL_DIGITS} digits", tok.pos)
        if any(c in tok.text for c in ".eE"):
            value = float(tok.text)
            if value != value or value in (float("inf"), float("-inf")):
                raise self.error("numeric literal out of range", tok.pos)
            return Num(value, tok.pos)
        return Num(int(tok.text), tok.pos)


def _deeper_than(node: Node, limit: int) -> Node | None:
    """The first node found below depth `limit` of the tree, else None (iterative). Left-leaning
    chains (`1+1+...+1`) are deep without nesting, and evaluation recurses on the tree."""
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return current
        stack.extend((child, depth + 1) for child in children(current))
    return None


def parse(text: str, mode: Mode = "template") -> Node:
    """Parse template (or bind, with `mode="bind"`) text into an AST; raises FormulaError.
    Results are memoised (the AST is immutable): covering a model validates the same texts
    thousands of times."""
    if not isinstance(text, str):
        raise FormulaError(f"template must be a string, got {type(text).__name__}")
    return _parse_cached(text, mode)


@lru_cache(maxsize=8192)
def _parse_cached(text: str, mode: Mode) -> Node:
    if not isinstance(text, str):
        raise FormulaError(f"template must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEMPLATE_CHARS:  # before tokenising: a huge text costs nothing
        raise FormulaError(f"template longer than {MAX_TEMPLATE_CHARS} characters "
                           f"({len(text)}); split it into entries", text[:80], 0)
    try:
        return _Parser(text, mode).parse()
    except RecursionError:
        raise FormulaError(f"template nested too deeply to parse (limit {MAX_DEPTH} levels)",
                           text, 0) from None
