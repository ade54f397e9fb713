"""Exact evaluation (Python ints, exact '/', fractions on request) and nested {key}(...) calls."""
from __future__ import annotations

from fractions import Fraction

import pytest

from formula_db.errors import FormulaError
from formula_db.registry import Registry


# -- exact integer arithmetic --------------------------------------------------------------------
def test_huge_values_stay_exact(ev_template):
    a = b = 10**12
    value = ev_template("2*${a}*${b} + 1", a=a, b=b)
    assert type(value) is int
    assert value == 2_000_000_000_000_000_000_000_001
    # the same computation in floats loses the +1 (2e24 needs more than 53 bits of mantissa)
    as_float = 2.0 * float(a) * float(b) + 1.0
    assert int(as_float) != value
    assert as_float == 2.0 * float(a) * float(b)     # the +1 vanished
    # with powers of two the float result is exact, and still one short
    assert ev_template("2*${a}*${b} + 1", a=2**40, b=2**40) == 2**81 + 1
    assert int(2.0 * 2.0**40 * 2.0**40 + 1.0) == 2**81


def test_huge_values_exact_through_registry(make_entry):
    entry = make_entry("ex.Big", ["a", "b"], flops="2*${a}*${b} + 1", bytes_read="${a}*${b} - 1")
    reg = Registry.from_entries([entry])
    got = reg.evaluate("ex.Big", "flops", {"a": 10**12, "b": 10**12})
    assert got == 2 * 10**24 + 1 and type(got) is int
    assert reg.evaluate("ex__Big", "bytes_read", {"a": 3 * 10**9, "b": 7 * 10**10}) \
        == 209_999_999_999_999_999_999


@pytest.mark.parametrize("text, params, expected", [
    ("12 / 4", {}, 3),
    ("${a} / ${b}", {"a": 10**20, "b": 4}, 25 * 10**18),
    ("${a} * ${b} / 6", {"a": 4, "b": 9}, 6),
    ("-12 / 4", {}, -3),
])
def test_exact_division_yields_int(ev_template, text, params, expected):
    value = ev_template(text, **params)
    assert value == expected and type(value) is int


def test_inexact_division_is_an_error(ev_template):
    with pytest.raises(FormulaError) as info:
        ev_template("${a} / 2", a=7)
    exc = info.value
    assert exc.pos == 5
    assert "inexact integer division 7 / 2" in exc.message
    assert "//" in exc.message and "allow_fractional" in exc.message


def test_inexact_division_allowed_gives_fraction(make_entry):
    frac = make_entry("ex.Frac", ["a"], flops="${a} / 2", vector_flops="(${a} / 3) * 3",
                      bytes_read="${a} / 2 + ${a} / 3", allow_fractional=True)
    strict = make_entry("ex.Strict", ["a"], flops="${a} / 2")
    reg = Registry.from_entries([frac, strict])
    value = reg.evaluate("ex.Frac", "flops", {"a": 7})
    assert value == Fraction(7, 2) and isinstance(value, Fraction)
    back = reg.evaluate("ex.Frac", "vector_flops", {"a": 7})
    assert back == 7 and type(back) is int          # denominators of 1 become ints
    assert reg.evaluate("ex.Frac", "bytes_read", {"a": 7}) == Fraction(35, 6)
    with pytest.raises(FormulaError, match="//"):
        reg.evaluate("ex.Strict", "flops", {"a": 7})
    assert reg.evaluate("ex.Strict", "flops", {"a": 8}) == 4


def test_float_literal_makes_float(ev_template):
    value = ev_template("1.5 * ${a}", a=2)
    assert value == 3.0 and isinstance(value, float)
    assert ev_template("${a} / 2.0", a=7) == 3.5


@pytest.mark.parametrize("text, expected", [
    ("ceil_div(7, 2)", 4),
    ("ceil_div(8, 2)", 4),
    ("ceil_div(0, 5)", 0),
    ("ceil_div(10**20 + 1, 10**10)", 10**10 + 1),
    ("min(3, 1, 2)", 1),
    ("max(3, 10**30, 2)", 10**30),
    ("min(5, 2) * max(5, 2)", 10),
    ("abs(3 - 10)", 7),
    ("floor(7 // 2)", 3),
    ("ceil(1.2)", 2),
    ("floor(-1.5)", -2),
    ("int(2.9)", 2),
    ("7 // 2", 3),
    ("7 % 4", 3),
])
def test_functions(ev_template, text, expected):
    value = ev_template(text)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("text, pos", [("ceil_div(1, 0)", 0), ("1 // 0", 2), ("1 % 0", 2),
                                       ("5 / 0", 2)])
def test_division_by_zero(ev_template, text, pos):
    with pytest.raises(FormulaError, match="division by zero") as info:
        ev_template(text)
    assert info.value.pos == pos


def test_bool_is_not_a_number_and_strings_cannot_be_added(ev_template):
    with pytest.raises(FormulaError, match="must be a number, got bool"):
        ev_template("${b} + 1", b=True)
    with pytest.raises(FormulaError, match="must be a number, got str"):
        ev_template("${s} * 2", s="float16")


def test_unknown_parameter_at_evaluation(ev_template):
    with pytest.raises(FormulaError, match=r"unknown parameter \$\{zz\}; known: a") as info:
        ev_template("${a} + ${zz}", a=1)
    assert info.value.pos == 7


# -- nested calls --------------------------------------------------------------------------------
@pytest.fixture
def nested(make_entry, P):
    matmul = make_entry(
        "ex.MatB", ["m", "n", P("k", default=1)],
        flops="2*${m}*${n}*${k}", vector_flops="${m}*${n}", bytes_read="${m} + ${n}",
        bytes_written="${m}*${k}")
    layer = make_entry(
        "ex.LayerA", ["batch", "hidden"],
        flops="{ex__MatB}(${batch}, ${hidden}) + {ex__MatB}(${batch}, ${hidden}, 4)",
        vector_flops="{ex__MatB}(${batch} * 2, ${hidden}) + 1",
        bytes_read="{ex__MatB}(${batch}, ${hidden}, 9)",
        bytes_written="{ex__MatB}(${batch}, ${hidden}, ${batch})",
        activation_bytes="${batch} * ${hidden} * 2",
        breakdown=[
            {"name": "proj", "flops": "{ex__MatB}(${batch}, ${hidden})",
             "bytes_read": "${batch} * 3"},
            {"name": "wide", "flops": "{ex__MatB}(${batch}, ${hidden}, 4)"},
            {"name": "half", "kind": "useful", "flops": "{ex__MatB}(${batch}, ${hidden}) // 2"},
        ],
        module_depends=["ex__MatB"])
    leaf = make_entry("ex.Leaf", ["x", "y"], flops="${x} * ${y} + 1")
    mid = make_entry("ex.Mid", ["p"], flops="{ex__Leaf}(${p}, ${p} + 1) * 2",
                     module_depends=["ex__Leaf"])
    top = make_entry("ex.Top", ["q"], flops="{ex__Mid}(${q}) + {ex__Leaf}(${q}, 3)",
                     module_depends=["ex__Mid", "ex__Leaf"])
    bad_few = make_entry("ex.TooFew", ["q"], flops="{ex__MatB}(${q})",
                         module_depends=["ex__MatB"])
    bad_many = make_entry("ex.TooMany", ["q"], flops="{ex__MatB}(1, 2, 3, ${q})",
                          module_depends=["ex__MatB"])
    return Registry.from_entries([matmul, layer, leaf, mid, top, bad_few, bad_many])


def test_positional_call_and_default(nested):
    # MatB(3,5,k=1) + MatB(3,5,4) = 2*3*5*1 + 2*3*5*4 = 30 + 120
    assert nested.evaluate("ex.LayerA", "flops", {"batch": 3, "hidden": 5}) == 150
    # the callee's metric follows the caller's: vector_flops of MatB(6, 5) = 30, + 1
    assert nested.evaluate("ex.LayerA", "vector_flops", {"batch": 3, "hidden": 5}) == 31
    assert nested.evaluate("ex.LayerA", "bytes_read", {"batch": 3, "hidden": 5}) == 8
    assert nested.evaluate("ex.LayerA", "bytes_written", {"batch": 3, "hidden": 5}) == 9
    assert nested.evaluate_all("ex.LayerA", {"batch": 2, "hidden": 7}) == {
        "flops": 28 + 112, "vector_flops": 29, "bytes_read": 9, "bytes_written": 4,
        "activation_bytes": 28}


def test_defaults_fill_omitted_trailing_arguments_at_top_level(nested):
    assert nested.evaluate("ex.MatB", "flops", {"m": 2, "n": 3}) == 12
    assert nested.evaluate("ex.MatB", "flops", {"m": 2, "n": 3, "k": 5}) == 60


def test_multi_level_nesting(nested):
    # Top(q) = Mid(q) + Leaf(q, 3); Mid(p) = Leaf(p, p+1) * 2; Leaf(x, y) = x*y + 1
    # q=4: Mid(4) = (4*5+1)*2 = 42, Leaf(4,3) = 13 -> 55
    assert nested.evaluate("ex.Top", "flops", {"q": 4}) == 55
    # q=10: (10*11+1)*2 = 222, 10*3+1 = 31 -> 253
    assert nested.evaluate("ex.Top", "flops", {"q": 10}) == 253
    assert nested.evaluate("ex.Top", "bytes_read", {"q": 10}) == 0


def test_wrong_arity_names_key_and_counts(nested):
    with pytest.raises(FormulaError) as info:
        nested.evaluate("ex.TooFew", "flops", {"q": 1})
    msg = str(info.value)
    assert "{ex__MatB} takes 3 arguments (m, n, k), got 1" in msg
    assert "ex__TooFew.flops" in msg and info.value.pos == 0
    with pytest.raises(FormulaError, match=r"\{ex__MatB\} takes 3 arguments \(m, n, k\), got 4"):
        nested.evaluate("ex.TooMany", "flops", {"q": 1})
    problems = nested.check()
    assert "ex__TooFew.flops: {ex__MatB} takes 3 arguments, got 1" in problems
    assert "ex__TooMany.flops: {ex__MatB} takes 3 arguments, got 4" in problems
    assert len(problems) == 2


def test_breakdown_items_evaluate(nested):
    parts = nested.breakdown("ex.LayerA", {"batch": 3, "hidden": 5})
    assert parts == [
        ("proj", "component", {"flops": 30, "bytes_read": 9}),
        ("wide", "component", {"flops": 120}),
        ("half", "useful", {"flops": 15}),
    ]
    assert nested.evaluate("ex.LayerA", "breakdown.wide.flops", {"batch": 1, "hidden": 1}) == 8


def test_missing_and_unknown_parameters(nested):
    with pytest.raises(FormulaError, match="missing value.*for hidden"):
        nested.evaluate("ex.LayerA", "flops", {"batch": 3})
    with pytest.raises(FormulaError, match=r"unknown parameter\(s\) zz"):
        nested.evaluate("ex.LayerA", "flops", {"batch": 3, "hidden": 5, "zz": 1})


def test_nested_error_points_into_callee(make_entry):
    callee = make_entry("ex.Div", ["a"], flops="${a} / 3")
    caller = make_entry("ex.Caller", ["a"], flops="1 + {ex__Div}(${a})", module_depends=["ex__Div"])
    reg = Registry.from_entries([callee, caller])
    assert reg.evaluate("ex.Caller", "flops", {"a": 9}) == 4
    with pytest.raises(FormulaError) as info:
        reg.evaluate("ex.Caller", "flops", {"a": 10})
    exc = info.value
    assert exc.where == "ex__Div.flops" and exc.template == "${a} / 3" and exc.pos == 5
