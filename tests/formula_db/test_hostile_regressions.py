"""Regression tests for the formula-language defects of issue 13 (hostile input): overflow that
escaped the evaluator, exponential fan-out, the length limit checked after tokenising,
non-numbers accepted as metric values, and a deeply nested formula file."""
from __future__ import annotations

import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import pydantic
import pytest
import sympy

from formula_db import symbolic
from formula_db.errors import DatabaseError, FormulaError
from formula_db.evaluate import MAX_METRIC_VALUE, MAX_STEPS, Env, evaluate, metric_value
from formula_db.parser import parse
from formula_db.registry import Registry
from formula_db.schema import FormulaEntry
from formula_db.store import load_database, save_entry

from .conftest import entry_data, make, param


def refused_at_load(flops: str, params: list | None = None) -> str:
    with pytest.raises(pydantic.ValidationError) as info:
        FormulaEntry.model_validate(entry_data("h.E", params or [], flops=flops))
    return str(info.value)


# -- overflow never escapes ----------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("ceil(1e300 // 1e-300)", "result is not finite"),
    ("floor(1e300 // 1e-300)", "result is not finite"),
    ("(2**200)**20 * 1.0", "arithmetic overflow in '*'"),
    ("1.5 // (2**200)**20", "arithmetic overflow in '//'"),
    ("(2**200)**20 % 1.5", "arithmetic overflow in '%'"),
    ("(2**200)**20 / 2.0", "arithmetic overflow in '/'"),
    ("int(1e300 * 1e300)", "result is not finite"),
    ("1e300 * 1e10", "result is not finite"),
])
def test_overflow_is_a_formula_error(text: str, message: str) -> None:
    with pytest.raises(FormulaError) as info:
        evaluate(parse(text), Env(params={}, text=text))
    assert message in info.value.message
    # constant templates are evaluated once when the entry loads: refused there already
    assert message in refused_at_load(text)


@pytest.mark.parametrize("text, value", [("ceil(${x})", "inf"), ("int(${x})", "inf"),
                                         ("floor(${x})", "nan"), ("ceil(${x} * 1.0)", "big")])
def test_functions_catch_overflow_and_value_errors(text: str, value: str) -> None:
    x = {"inf": float("inf"), "nan": float("nan"), "big": (2**200)**20}[value]
    reg = Registry.from_entries([make("h.F", [param("x", "float")], flops=text)])
    with pytest.raises(FormulaError) as info:
        reg.evaluate("h.F", "flops", {"x": x})
    assert info.value.where == "h__F.flops"


def test_floor_division_results_are_size_checked() -> None:
    text = "${a} // ${b}"
    with pytest.raises(FormulaError, match=r"intermediate value exceeds 2\*\*4096"):
        evaluate(parse(text), Env(params={"a": Fraction(2**4000, 1), "b": Fraction(1, 2**200)},
                                  text=text))


# -- metric values are finite, non-negative numbers under the bound ------------------------------
@pytest.mark.parametrize("flops, fragment", [
    ("'x'", "this gives a string"),
    ("true", "this gives a truth value"),
    ("${n} > 3", "this gives a truth value"),
    ("${n} > 30720 ? 'x' : 2 * ${n}", "this gives a string"),
    ("${n} > 1 ? (${n} > 2 ? 1 : false) : 0", "this gives a truth value"),
    ("${d}", "this gives a string"),
    ("'x' * 3", "a string used as a number"),
    ("max(${flag}, 2)", "a truth value used as a number"),
    ("(2**200)**20", "exceeds the bound 10**30"),
    ("-1", "must not be negative"),
    ("2 - 3", "must not be negative"),
    ("1 / 3", "inexact integer division"),
])
def test_non_numbers_refused_at_load(flops: str, fragment: str) -> None:
    params = [param("n"), param("d", "str"), param("flag", "bool")]
    text = refused_at_load(flops, params)
    assert fragment in text and "h__E.flops" in text


def test_user_entry_with_huge_constant_refused_when_the_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "formulas.json"
    good = make("h.Huge", [])
    save_entry(path, good)
    text = path.read_text().replace('"flops": "0"', '"flops": "(2**200)**20"', 1)
    path.write_text(text)
    with pytest.raises(DatabaseError, match=r"exceeds the bound 10\*\*30.*was not modified"):
        load_database(path)
    assert path.read_text() == text


@pytest.mark.parametrize("n, fragment", [
    (2**40, "exceeds the bound 10**30"),       # 2**160
    (0, "must not be negative"),               # 0 - 1
])
def test_metric_values_checked_at_every_evaluation(n: int, fragment: str) -> None:
    reg = Registry.from_entries([make("h.V", ["n"], flops="${n} ** 4 - 1")])
    assert reg.evaluate("h.V", "flops", {"n": 10}) == 9999
    with pytest.raises(FormulaError) as info:
        reg.evaluate("h.V", "flops", {"n": n})
    assert fragment in info.value.message and info.value.where == "h__V.flops"


def test_string_param_branch_refused_at_evaluation() -> None:
    # `${x}` has no static kind when its branch mixes: evaluation still refuses a string
    reg = Registry.from_entries([make("h.S", ["n", param("s", "str", default="a")],
                                      flops="${n} > 30720 ? ${n} : 0")])
    assert reg.evaluate("h.S", "flops", {"n": 40000}) == 40000
    with pytest.raises(FormulaError, match="a metric must be a number, got str"):
        metric_value("x", "h__S.flops")
    for bad in (True, float("inf"), float("nan"), {"a": 1}, -1, MAX_METRIC_VALUE + 1, None):
        with pytest.raises(FormulaError):
            metric_value(bad, "w")
    assert metric_value(Fraction(3, 2)) == Fraction(3, 2) and metric_value(MAX_METRIC_VALUE)


def test_nested_call_result_must_be_a_number() -> None:
    # a callee's metric is a metric value too: a negative one is refused where it is produced
    leaf = make("h.Leaf", ["n"], flops="${n} - 5")
    top = make("h.Top", ["n"], flops="{h__Leaf}(${n}) * 0 + 1", module_depends=["h__Leaf"])
    reg = Registry.from_entries([leaf, top])
    assert reg.evaluate("h.Top", "flops", {"n": 9}) == 1
    with pytest.raises(FormulaError) as info:
        reg.evaluate("h.Top", "flops", {"n": 2})
    assert "must not be negative" in info.value.message and info.value.where == "h__Leaf.flops"


# -- exponential fan-out -------------------------------------------------------------------------
def fan(levels: int, same_args: bool) -> Registry:
    """`levels` entries each calling the next twice: with the same argument, or with `2n` and
    `2n + 1` (all 2**levels leaf arguments distinct, so memoising cannot help)."""
    entries = [make(f"fan.C{levels}", ["n"], flops="${n} + 1")]
    for i in reversed(range(levels)):
        first, second = ("${n}", "${n}") if same_args else ("${n} * 2", "${n} * 2 + 1")
        entries.append(make(f"fan.C{i}", ["n"],
                            flops=f"{{fan__C{i + 1}}}({first}) + {{fan__C{i + 1}}}({second})",
                            module_depends=[f"fan__C{i + 1}"]))
    return Registry.from_entries(entries)


def test_fan_out_with_identical_arguments_is_memoised() -> None:
    reg = fan(25, same_args=True)
    assert reg.check() == []
    start = time.perf_counter()
    assert reg.evaluate("fan__C0", "flops", {"n": 1}) == 2**25 * 2
    assert time.perf_counter() - start < 2.0
    expr = reg.symbolic("fan__C0", "flops")          # the symbolic path memoises too
    n = sympy.Symbol("n", integer=True, nonnegative=True)
    assert sympy.expand(expr - 2**25 * (n + 1)) == 0


def test_fan_out_with_distinct_arguments_is_refused_by_the_work_budget() -> None:
    reg = fan(25, same_args=False)
    start = time.perf_counter()
    with pytest.raises(FormulaError) as info:
        reg.evaluate("fan__C0", "flops", {"n": 1})
    assert f"evaluation exceeds {MAX_STEPS} steps" in info.value.message
    with pytest.raises(FormulaError, match=f"conversion exceeds {symbolic.MAX_STEPS} steps"):
        reg.symbolic("fan__C0", "flops")
    assert time.perf_counter() - start < 30.0
    small = fan(6, same_args=False)   # 2**6 distinct leaf calls: fine, and exact
    assert small.evaluate("fan__C0", "flops", {"n": 1}) == sum(64 + i + 1 for i in range(64))


# -- length limit before tokenising --------------------------------------------------------------
def test_length_limit_checked_before_tokenising() -> None:
    text = "1+" * 1_000_000 + "1"
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(FormulaError, match="template longer than 4000 characters"):
        parse(text)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.05 and peak < 1_000_000


# -- deeply nested formula file ------------------------------------------------------------------
@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000,
                                  '{"entries": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                  '{"schema_version": 2, "entries": {"a": ' + '{"x": ' * 5000
                                  + "1" + "}" * 5000 + "}}",
                                  "[1, 2]", "1" * 5000])
def test_deep_or_foreign_json_file_is_a_one_line_error(tmp_path: Path, body: str) -> None:
    path = tmp_path / "formulas.json"
    path.write_bytes(body.encode())
    with pytest.raises(DatabaseError) as info:
        load_database(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "was not modified" in message
    assert path.read_bytes() == body.encode()
    with pytest.raises(DatabaseError):     # a writer refuses it too, and leaves it alone
        save_entry(path, make("h.W", []))
    assert path.read_bytes() == body.encode()


# -- no foreign exception leaves the formula language --------------------------------------------
@pytest.mark.parametrize("flops", ["${n} // 0.0 + 1", "${n} % 0", "ceil_div(${n}, 0)",
                                   "2 ** ${n}", "min(${n}, 1e308) * 1e308",
                                   "(${n} * 1.0) ** 200", "ceil(${n} / 0.5)"])
def test_symbolic_and_exact_raise_only_formula_errors(flops: str) -> None:
    reg = Registry.from_entries([make("h.X", ["n"], flops=flops)])
    for n in (0, 1, 10**29, 10**30):
        try:
            value = reg.evaluate("h.X", "flops", {"n": n})
        except FormulaError:
            continue
        assert 0 <= value <= MAX_METRIC_VALUE
    for fixed in ({}, {"n": 0}, {"n": 10**30}):
        try:
            reg.symbolic("h.X", "flops", fixed=fixed)
        except FormulaError:
            pass


def test_symbolic_refuses_non_finite_values_and_huge_powers() -> None:
    reg = Registry.from_entries([make("h.Y", [param("b", "float")], flops="${b} * 2"),
                                 make("h.Z", ["n"], flops="${n} > 1 ? 4096 ** (2**200)**20 : 1")])
    for bad in (float("inf"), float("nan")):
        with pytest.raises(FormulaError, match="non-finite"):
            reg.symbolic("h.Y", "flops", fixed={"b": bad})
    start = time.perf_counter()     # sympy would compute 4096**(2**4000): refused before
    with pytest.raises(FormulaError, match="exponent .* outside 0..256"):
        reg.symbolic("h.Z", "flops")
    assert time.perf_counter() - start < 5.0
