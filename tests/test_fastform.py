"""Compiled closed forms equal sympy's own substitution, exactly, Piecewise and floor included."""
from __future__ import annotations

import itertools

import sympy

from formula_db.symbolic import symbol
from lm_predictor.predict.closed_form import compile_expr

b, s, k = symbol("batch"), symbol("seq_len"), symbol("kv_len")


def test_compiled_forms_equal_sympy_substitution() -> None:
    exprs = [
        524288 * b * s * (5 * k + 5 * s + 265128),
        2 * b * s * (2560 * k * sympy.Piecewise((7, s > 1), (6, True)) + 6877633),
        sympy.Rational(3, 2) * b * s + sympy.Rational(1, 2) * b * s,  # exact rational arithmetic
        sympy.floor(s / 3) * b + sympy.ceiling(k / 7) + sympy.Min(s, 4) * sympy.Max(k, 2),
        sympy.Mod(s, 5) + b ** 3,
    ]
    for expr in exprs:
        fn = compile_expr(expr)
        assert fn is not None
        for bv, sv, kv in itertools.product((1, 3, 7), (1, 2, 9), (0, 5, 11)):
            want = expr.subs({b: bv, s: sv, k: kv})
            got = fn({"batch": bv, "seq_len": sv, "kv_len": kv})
            assert got == want and isinstance(got, int)


def test_unsupported_nodes_fall_back() -> None:
    assert compile_expr(sympy.sqrt(s)) is None
    assert compile_expr(sympy.log(b)) is None
