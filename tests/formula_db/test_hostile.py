"""Hostile templates and binds: every one is refused with a FormulaError (never executed, never
a RecursionError or a memory blow-up), and the package never evaluates text as Python."""
from __future__ import annotations

import ast as pyast
from pathlib import Path

import pydantic
import pytest
import torch
from torch import nn

import formula_db
from formula_db.bind import bind_parameters, call_roots
from formula_db.errors import CycleError, FormulaError, UnknownKeyError
from formula_db.parser import parse
from formula_db.registry import Registry


def refused(text: str, mode: str = "template") -> FormulaError:
    with pytest.raises(FormulaError) as info:
        parse(text, mode)  # type: ignore[arg-type]
    return info.value


# -- attribute access and names ------------------------------------------------------------------
def test_attribute_access_in_template_refused(make_data):
    exc = refused("${a}.__class__")
    assert exc.pos == 4 and "attribute access is not allowed" in exc.message
    exc = refused("${a}.__class__.__subclasses__()")
    assert exc.pos == 4
    with pytest.raises(pydantic.ValidationError, match="attribute access is not allowed"):
        formula_db.schema.FormulaEntry.model_validate(
            make_data("hostile.Attr", ["a"], flops="${a}.__class__"))


def test_private_attribute_in_bind_refused(make_data, P):
    exc = refused("module._parameters", "bind")
    assert exc.pos == 7 and "'_parameters' is private" in exc.message
    exc = refused("input[0].__class__", "bind")
    assert exc.pos == 9 and "private" in exc.message
    with pytest.raises(pydantic.ValidationError, match="private and never reachable"):
        formula_db.schema.FormulaEntry.model_validate(
            make_data("hostile.Priv", [P("w", bind="module._parameters")]))


def test_private_key_subscript_in_bind_finds_nothing(make_entry, P):
    # the bind roots hold plain data only: private attributes were never copied into them
    entry = make_entry("hostile.Sub", [P("w", bind="module['_parameters']")])
    layer = nn.Linear(2, 3)
    roots = call_roots(layer, (torch.zeros(1, 2),), {}, torch.zeros(1, 3))
    assert "_parameters" not in roots["module"] and "weight" not in roots["module"]
    with pytest.raises(FormulaError, match="no key '_parameters'"):
        bind_parameters(entry, roots)
    entry = make_entry("hostile.Weight", [P("w", bind="module.weight")])
    with pytest.raises(FormulaError, match="no attribute 'weight' here"):
        bind_parameters(entry, roots)
    entry = make_entry("hostile.Data", [P("w", bind="input[0].data")])
    with pytest.raises(FormulaError, match="tensors expose only .*not 'data'"):
        bind_parameters(entry, roots)


def test_non_whitelisted_root_in_bind_refused(make_data, P):
    for text in ("os.system", "os.system('ls')", "torch.ones(3)", "__builtins__"):
        exc = refused(text, "bind")
        assert exc.pos == 0 and "unknown name" in exc.message
        assert "binds may start from config, input, kwargs, module, output" in exc.message
    with pytest.raises(pydantic.ValidationError, match="unknown name 'os'"):
        formula_db.schema.FormulaEntry.model_validate(
            make_data("hostile.Os", [P("w", bind="os.system")]))


def test_bare_names_refused():
    exc = refused("2 * foo")
    assert exc.pos == 4 and "bare name 'foo' is not allowed" in exc.message


def test_unknown_parameter_refused_at_validation(make_data):
    with pytest.raises(pydantic.ValidationError) as info:
        formula_db.schema.FormulaEntry.model_validate(
            make_data("hostile.Unknown", ["a"], flops="${a} * ${nope}"))
    text = str(info.value)
    assert "${nope}" in text and "hostile__Unknown.flops" in text and "at position 7" in text
    assert "declared: a" in text


@pytest.mark.parametrize("text, name", [("open(1)", "open"), ("__import__('os')", "__import__"),
                                        ("eval('1')", "eval"), ("exec('1')", "exec"),
                                        ("getattr(1, 'x')", "getattr"), ("1 + print(2)", "print")])
@pytest.mark.parametrize("mode", ["template", "bind"])
def test_functions_outside_whitelist_refused(text, name, mode):
    exc = refused(text, mode)
    assert f"function {name!r} is not allowed" in exc.message
    assert exc.pos == text.index(name)
    assert "allowed: abs, ceil, ceil_div" in exc.message


def test_bind_functions_not_in_templates():
    exc = refused("numel(${a})")
    assert "function 'numel' is not allowed" in exc.message


# -- resource limits -----------------------------------------------------------------------------
def test_huge_power_refused_by_exponent(make_entry, make_data):
    # a constant template is evaluated once when the entry is loaded: refused there
    with pytest.raises(pydantic.ValidationError,
                       match=r"hostile__Pow.flops, template '2\*\*10\*\*10', at position 1: "
                             r"exponent 10000000000 outside 0..256"):
        formula_db.schema.FormulaEntry.model_validate(make_data("hostile.Pow", [],
                                                                flops="2**10**10"))
    reg = Registry.from_entries([make_entry("hostile.PowN", ["n"], flops="2**10**${n}")])
    with pytest.raises(FormulaError) as info:
        reg.evaluate("hostile.PowN", "flops", {"n": 10})
    assert "exponent 10000000000 outside 0..256" in info.value.message
    assert info.value.template == "2**10**${n}" and info.value.pos == 1


def test_power_blow_up_refused(make_entry):
    # intermediate values may exceed the metric bound (10**30) but never 2**4096
    entry = make_entry("hostile.Pow256", ["x"], flops="${x}**256 // ${x}**255",
                       vector_flops="(((((((((${x}**2)**2)**2)**2)**2)**2)**2)**2)**2) % 1000003")
    reg = Registry.from_entries([entry])
    assert reg.evaluate("hostile.Pow256", "flops", {"x": 3}) == 3
    with pytest.raises(FormulaError, match=r"power would exceed 2\*\*4096"):
        reg.evaluate("hostile.Pow256", "flops", {"x": 2**20})   # 21 bits * 256 > 4096
    # nine nested squarings: x**512; 2 -> 2**512 is fine, 2**10 -> 2**5120 is not
    assert reg.evaluate("hostile.Pow256", "vector_flops", {"x": 2}) == pow(2, 512, 1000003)
    with pytest.raises(FormulaError, match=r"exceed 2\*\*4096"):
        reg.evaluate("hostile.Pow256", "vector_flops", {"x": 2**10})
    with pytest.raises(FormulaError, match=r"metric value ~2\*\*405 exceeds the bound 10\*\*30"):
        Registry.from_entries([make_entry("hostile.P", ["x"], flops="${x}**256")]).evaluate(
            "hostile.P", "flops", {"x": 3})


def test_multiplication_blow_up_through_nested_calls(make_entry):
    sq = make_entry("hostile.Sq", ["x"], flops="${x} * ${x}")
    nine = "${x}"
    for _ in range(9):
        nine = "{hostile__Sq}(" + nine + ")"
    tower = make_entry("hostile.Tower", ["x"], flops=nine, module_depends=["hostile__Sq"])
    reg = Registry.from_entries([sq, tower])
    assert reg.evaluate("hostile.Tower", "flops", {"x": 1}) == 1
    # every nested call's result is a metric value: 2**128 (the 7th squaring) is over 10**30
    for x in (2, 3, 2**10):
        with pytest.raises(FormulaError) as info:
            reg.evaluate("hostile.Tower", "flops", {"x": x})
        assert "exceeds the bound 10**30" in info.value.message
        assert info.value.where == "hostile__Sq.flops"
    # an intermediate value inside a nested call is held under 2**4096 and names the callee
    cube = make_entry("hostile.Big", ["x"], flops="${x} ** 64 % 1000003")
    top = make_entry("hostile.Top", ["x"], flops="{hostile__Big}({hostile__Big}(${x}))",
                     module_depends=["hostile__Big"])
    reg = Registry.from_entries([cube, top])
    assert reg.evaluate("hostile.Top", "flops", {"x": 5}) == pow(pow(5, 64, 1000003), 64, 1000003)
    with pytest.raises(FormulaError) as info:
        reg.evaluate("hostile.Top", "flops", {"x": 2**70})   # 71 bits * 64 > 4096
    assert "power would exceed 2**4096" in info.value.message
    assert info.value.where == "hostile__Big.flops"


def test_huge_literals_refused():
    assert parse("9" * 40).value == 10**40 - 1
    exc = refused("1 + " + "9" * 41)
    assert exc.pos == 4 and "numeric literal longer than 40 digits" in exc.message
    exc = refused("1" * 41 + ".0")
    assert "longer than 40 digits" in exc.message
    exc = refused("2 * 1e999")
    assert exc.pos == 4 and "out of range" in exc.message


def test_ten_thousand_deep_parentheses_refused_without_recursion_error():
    text = "(" * 10_000 + "1" + ")" * 10_000
    with pytest.raises(FormulaError) as info:     # a RecursionError would escape this
        parse(text)
    assert "template longer than 4000 characters" in info.value.message


def test_hundred_deep_parentheses_refused_for_depth():
    exc = refused("(" * 100 + "1" + ")" * 100)
    assert "nesting deeper than 64 levels" in exc.message
    assert exc.pos == 64
    assert parse("(" * 60 + "1" + ")" * 60).value == 1


@pytest.mark.parametrize("text", ["-" * 3000 + "1", "not " * 900 + "true",
                                  "max(" * 70 + "1" + ", 1)" * 70,
                                  "1 ? " * 80 + "1" + " : 0" * 80])
def test_other_deep_forms_refused_for_depth(text):
    assert len(text) <= 4000
    exc = refused(text)
    assert "nesting deeper than 64 levels" in exc.message


def test_long_operator_chain_refused_not_recursion_error(ev_template):
    # 1+1+...+1 is deep without any nesting (left-leaning tree); evaluation recurses on it
    two_hundred = "+".join(["1"] * 200)
    assert ev_template(two_hundred) == 200
    exc = refused("+".join(["1"] * 201))
    assert "expression deeper than 200 levels" in exc.message
    with pytest.raises(FormulaError, match="deeper than 200"):
        parse("*".join(["${a}"] * 800))   # 3999 characters


# -- calls between entries -----------------------------------------------------------------------
@pytest.fixture
def cyclic(make_entry):
    a = make_entry("hostile.CycA", ["x"], flops="{hostile__CycB}(${x}) + 1",
                   module_depends=["hostile__CycB"])
    b = make_entry("hostile.CycB", ["x"], flops="{hostile__CycA}(${x}) * 2",
                   module_depends=["hostile__CycA"])
    ok = make_entry("hostile.Fine", ["x"], flops="${x}")
    return Registry.from_entries([ok, a, b])


def test_cycle_found_by_check(cyclic):
    assert cyclic.find_cycle() == ["hostile__CycA", "hostile__CycB", "hostile__CycA"]
    assert cyclic.check() == [
        "recursive formula cycle hostile__CycA -> hostile__CycB -> hostile__CycA"]
    with pytest.raises(CycleError, match="hostile__CycA -> hostile__CycB -> hostile__CycA"):
        cyclic.raise_on_problems()


def test_cycle_found_by_evaluation(cyclic):
    with pytest.raises(CycleError) as info:
        cyclic.evaluate("hostile.CycA", "flops", {"x": 1})
    assert "recursive formula cycle hostile__CycA -> hostile__CycB -> hostile__CycA" in str(info.value)
    with pytest.raises(CycleError, match="hostile__CycB -> hostile__CycA -> hostile__CycB"):
        cyclic.evaluate("hostile__CycB", "flops", {"x": 1})
    with pytest.raises(CycleError, match="hostile__CycA -> hostile__CycB -> hostile__CycA"):
        cyclic.symbolic("hostile.CycA", "flops")
    assert cyclic.evaluate("hostile.Fine", "flops", {"x": 5}) == 5


def test_self_and_three_cycles(make_entry):
    me = make_entry("hostile.Self", ["x"], flops="${x} ? {hostile__Self}(${x} - 1) : 0",
                    module_depends=["hostile__Self"])
    a = make_entry("hostile.A", [], vector_flops="{hostile__B}()", module_depends=["hostile__B"])
    b = make_entry("hostile.B", [], vector_flops="{hostile__C}()", module_depends=["hostile__C"])
    c = make_entry("hostile.C", [], vector_flops="{hostile__A}()", module_depends=["hostile__A"])
    reg = Registry.from_entries([a, b, c])
    assert reg.find_cycle() == ["hostile__A", "hostile__B", "hostile__C", "hostile__A"]
    with pytest.raises(CycleError, match="hostile__B -> hostile__C -> hostile__A -> hostile__B"):
        reg.evaluate("hostile.B", "vector_flops", {})
    solo = Registry.from_entries([me])
    assert solo.find_cycle() == ["hostile__Self", "hostile__Self"]
    # even a recursion that would terminate is refused: templates never recurse
    with pytest.raises(CycleError, match="hostile__Self -> hostile__Self"):
        solo.evaluate("hostile.Self", "flops", {"x": 2})


def test_unknown_keys(make_entry):
    caller = make_entry("hostile.Caller", ["x"], flops="{hostile__Missing}(${x})",
                        module_depends=["hostile__Missing"])
    reg = Registry.from_entries([caller])
    with pytest.raises(UnknownKeyError, match=r"unknown formula key \{hostile__Missing\}"):
        reg.evaluate("hostile.Caller", "flops", {"x": 1})
    assert reg.check() == ["hostile__Caller.flops: calls unknown key {hostile__Missing}"]
    with pytest.raises(UnknownKeyError) as info:
        reg.get("hostile.Nowhere")
    assert "'hostile.Nowhere'" in str(info.value) and "'hostile__Nowhere'" in str(info.value)
    with pytest.raises(UnknownKeyError, match="no formula for 'hostile.Nowhere'"):
        reg.evaluate("hostile.Nowhere", "flops", {})


def test_wrong_arity_between_entries(make_entry, P):
    callee = make_entry("hostile.Two", ["a", P("b", default=2)], flops="${a} * ${b}")
    caller = make_entry("hostile.Three", ["x"], flops="{hostile__Two}(${x}, 1, 2)",
                        module_depends=["hostile__Two"])
    none = make_entry("hostile.None", ["x"], flops="{hostile__Two}()",
                      module_depends=["hostile__Two"])
    reg = Registry.from_entries([callee, caller, none])
    with pytest.raises(FormulaError, match=r"\{hostile__Two\} takes 2 arguments \(a, b\), got 3"):
        reg.evaluate("hostile.Three", "flops", {"x": 1})
    with pytest.raises(FormulaError, match=r"\{hostile__Two\} takes 2 arguments \(a, b\), got 0"):
        reg.evaluate("hostile.None", "flops", {"x": 1})
    assert sorted(reg.check()) == ["hostile__None.flops: {hostile__Two} takes 2 arguments, got 0",
                                   "hostile__Three.flops: {hostile__Two} takes 2 arguments, got 3"]


# -- no Python evaluation anywhere ---------------------------------------------------------------
def test_package_never_evaluates_text():
    forbidden_calls = {"eval", "exec", "compile", "__import__"}
    forbidden_names = {"sympify", "parse_expr"}
    files = sorted(Path(formula_db.__file__).parent.glob("*.py"))
    assert len(files) >= 12
    found = []
    for path in files:
        tree = pyast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in pyast.walk(tree):
            if isinstance(node, pyast.Call) and isinstance(node.func, pyast.Name) \
                    and node.func.id in forbidden_calls:
                found.append(f"{path.name}:{node.lineno} {node.func.id}()")
            if isinstance(node, pyast.Attribute) and node.attr in forbidden_names | {"eval", "exec"}:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, pyast.Name) and node.id in forbidden_names:
                found.append(f"{path.name}:{node.lineno} {node.id}")
            if isinstance(node, pyast.ImportFrom) and any(
                    a.name in forbidden_names for a in node.names):
                found.append(f"{path.name}:{node.lineno} import")
    assert found == []


def test_the_check_detects_eval(tmp_path):
    # the walker above must be able to fail: run the same logic on a file that calls eval
    tree = pyast.parse("x = eval('1')\nfrom sympy import sympify\nimport sympy\nsympy.parse_expr('1')")
    calls = [n.func.id for n in pyast.walk(tree)
             if isinstance(n, pyast.Call) and isinstance(n.func, pyast.Name)]
    attrs = [n.attr for n in pyast.walk(tree) if isinstance(n, pyast.Attribute)]
    imported = [a.name for n in pyast.walk(tree) if isinstance(n, pyast.ImportFrom) for a in n.names]
    assert calls == ["eval"] and attrs == ["parse_expr"] and imported == ["sympify"]
