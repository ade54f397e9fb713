"""Symbolic evaluation: nested templates expand to closed forms equal to hand-written sympy
expressions, fixed booleans resolve conditionals, and substitution agrees with exact evaluation."""
from __future__ import annotations

import pytest
import sympy

from formula_db.errors import FormulaError
from formula_db.parser import parse
from formula_db.registry import Registry
from formula_db.symbolic import symbol, to_sympy

b, s, h, q = (symbol(n) for n in ("b", "s", "h", "q"))


def same(a, expected) -> bool:
    return sympy.simplify(a - expected) == 0


@pytest.fixture
def reg(make_entry, P):
    mat = make_entry("sym.Mat", ["m", "n", P("k", default=1)], flops="2*${m}*${n}*${k}",
                     bytes_read="(${m}*${n} + ${n}*${k}) * 2")
    layer = make_entry(
        "sym.Layer", ["b", "s", "h", P("bias", type="bool", default=False)],
        flops="{sym__Mat}(${b} * ${s}, ${h}, 3 * ${h}) + {sym__Mat}(${b} * ${s}, ${h}, ${h})"
              " + (${bias} ? ${b} * ${s} * 4 * ${h} : 0)",
        bytes_read="{sym__Mat}(${b} * ${s}, ${h})",
        module_depends=["sym__Mat"])
    leaf = make_entry("sym.Leaf", ["x", "y"], flops="${x} * ${y} + 1")
    mid = make_entry("sym.Mid", ["p"], flops="{sym__Leaf}(${p}, ${p} + 1) * 2",
                     module_depends=["sym__Leaf"])
    top = make_entry("sym.Top", ["q"], flops="{sym__Mid}(${q}) + {sym__Leaf}(${q}, 3)",
                     module_depends=["sym__Mid", "sym__Leaf"])
    tiles = make_entry("sym.Tiles", ["s", "h"],
                       flops="ceil_div(${s}, 64) * ${h} + ${s} // 3 + max(${s}, ${h})",
                       vector_flops="${s} > 128 ? ${s} * 2 : ${s}")
    dtype = make_entry("sym.Dtype", ["n", P("dtype", type="str", default="float16")],
                       bytes_read="${n} * (${dtype} == 'float16' ? 2 : 4)")
    return Registry.from_entries([mat, layer, leaf, mid, top, tiles, dtype])


def test_nested_template_closed_form(reg):
    # 2*(bs)*h*3h + 2*(bs)*h*h = 8*b*s*h**2 (bias defaults to False)
    expr = reg.symbolic("sym.Layer", "flops", free=["b", "s", "h"])
    assert same(expr, 8 * b * s * h**2)
    assert expr.free_symbols == {b, s, h}
    # 2*(bs*h + h*1), k taking its default 1 inside the callee
    assert same(reg.symbolic("sym.Layer", "bytes_read", free=["b", "s", "h"]),
                2 * b * s * h + 2 * h)


def test_three_level_nesting_closed_form(reg):
    # Top(q) = 2*(q*(q+1) + 1) + (3q + 1) = 2q**2 + 5q + 3
    expr = reg.symbolic("sym.Top", "flops")
    assert same(expr, 2 * q**2 + 5 * q + 3)
    assert not same(expr, 2 * q**2 + 5 * q + 2)    # the check can fail
    raw = reg.symbolic("sym.Top", "flops", simplify=False)
    assert same(raw, 2 * q**2 + 5 * q + 3)


def test_conditional_with_fixed_bool_resolves(reg):
    with_bias = reg.symbolic("sym.Layer", "flops", fixed={"bias": True})
    assert same(with_bias, 8 * b * s * h**2 + 4 * b * s * h)
    assert not with_bias.has(sympy.Piecewise)
    without = reg.symbolic("sym.Layer", "flops", fixed={"bias": False})
    assert same(without, 8 * b * s * h**2)
    fixed_h = reg.symbolic("sym.Layer", "flops", fixed={"bias": True, "h": 64})
    assert same(fixed_h, 8 * 64**2 * b * s + 4 * 64 * b * s)
    assert fixed_h.free_symbols == {b, s}


def test_symbolic_condition_stays_piecewise(reg):
    expr = reg.symbolic("sym.Tiles", "vector_flops", free=["s"], fixed={"h": 1})
    assert expr.has(sympy.Piecewise)
    assert expr.subs(s, 200) == 400 and expr.subs(s, 100) == 100


def test_string_parameters(reg):
    assert same(reg.symbolic("sym.Dtype", "bytes_read", free=["n"]), 2 * symbol("n"))
    assert same(reg.symbolic("sym.Dtype", "bytes_read", fixed={"dtype": "float32"}),
                4 * symbol("n"))
    with pytest.raises(FormulaError, match="string parameters must be given values"):
        reg.symbolic("sym.Dtype", "bytes_read", free=["n", "dtype"])


@pytest.mark.parametrize("key, field, points", [
    ("sym.Layer", "flops", [{"b": 1, "s": 1, "h": 1, "bias": True},
                            {"b": 8, "s": 2048, "h": 4096, "bias": True},
                            {"b": 3, "s": 7, "h": 11, "bias": False}]),
    ("sym.Top", "flops", [{"q": 1}, {"q": 10}, {"q": 10**12}]),
    ("sym.Tiles", "flops", [{"s": 130, "h": 7}, {"s": 64, "h": 1000}, {"s": 1, "h": 1}]),
    ("sym.Tiles", "vector_flops", [{"s": 129, "h": 1}, {"s": 128, "h": 1}]),
])
def test_substitution_equals_exact_evaluation(reg, key, field, points):
    for point in points:
        fixed = {k: v for k, v in point.items() if isinstance(v, bool)}
        expr = reg.symbolic(key, field, fixed=fixed)
        subs = {symbol(k): v for k, v in point.items() if k not in fixed}
        value = expr.subs(subs)
        exact = reg.evaluate(key, field, point)
        assert value == exact and sympy.Integer(exact) == value


def test_hand_values_of_tiles(reg):
    # ceil(130/64)*7 + 130//3 + max(130, 7) = 21 + 43 + 130
    assert reg.evaluate("sym.Tiles", "flops", {"s": 130, "h": 7}) == 194
    expr = reg.symbolic("sym.Tiles", "flops")
    assert expr.subs({s: 130, h: 7}) == 194


def test_to_sympy_without_registry():
    expr = to_sympy(parse("2 * ${m} * ${k} * ${n} + (${bias} ? ${m} * ${n} : 0)"),
                    {"bias": True}, ["m", "k", "n"])
    m, k, n = symbol("m"), symbol("k"), symbol("n")
    assert same(expr, 2 * m * k * n + m * n)
    assert same(to_sympy(parse("${a} // 2 + ${a} % 2"), free=["a"]).subs(symbol("a"), 7), 4)
    with pytest.raises(FormulaError, match="needs a formula registry"):
        to_sympy(parse("{x__Y}(1)"))
