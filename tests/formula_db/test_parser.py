"""Parser: precedence, associativity, the conditional, and errors with exact positions."""
from __future__ import annotations

import pytest

from formula_db.ast import BinOp, Call, Cond, Num, Param, Unary
from formula_db.errors import FormulaError
from formula_db.parser import parse, tokenize


@pytest.mark.parametrize("text, expected", [
    ("-2**2", -4),             # power binds tighter than unary minus
    ("(-2)**2", 4),
    ("2**3**2", 512),          # right-associative: 2**(3**2)
    ("(2**3)**2", 64),
    ("2**2*3", 12),            # ** before *
    ("3*2**2", 12),
])
def test_power(ev_template, text, expected):
    assert ev_template(text) == expected


def test_negative_exponent_binds_to_the_power(ev_template):
    # 2**-1+1 parses as (2**(-1))+1; the negative exponent is refused at evaluation
    node = parse("2**-1+1")
    assert node.op == "+" and node.left.op == "**" and node.left.right == Unary("-", Num(1, 4), 3)
    with pytest.raises(FormulaError, match="exponent -1 outside 0..256") as info:
        ev_template("2**-1+1")
    assert info.value.pos == 1


@pytest.mark.parametrize("text, expected", [
    ("1+2*3", 7),
    ("(1+2)*3", 9),
    ("1*2+3", 5),
    ("7//2*2", 6),             # (7//2)*2, left to right
    ("7//(2*2)", 1),
    ("2*7//4", 3),             # (2*7)//4
    ("10-4-3", 3),             # left-associative minus
    ("100/10/5", 2),           # left-associative division
    ("7%3", 1),
    ("-7%3", 2),               # unary binds tighter than %: (-7) % 3, Python modulo
    ("-7//2", -4),             # floor division floors
    ("2+3%2", 3),              # % binds like *
    ("2*3%4", 2),              # (2*3)%4
    ("((2))*(3+(4))", 14),
    ("- -3", 3),
    ("+4 - -4", 8),
])
def test_arithmetic_precedence(ev_template, text, expected):
    assert ev_template(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("1 + 1 == 2", True),      # arithmetic before comparison
    ("2 * 3 > 5", True),
    ("3 <= 2", False),
    ("3 >= 3", True),
    ("1 != 1", False),
    ("2 < 3", True),
    ("'float16' == 'float16'", True),
    ("'float16' != \"bfloat16\"", True),
    ("1 < 2 and 2 < 1", False),
    ("1 < 2 or 2 < 1", True),
    ("not 1 < 2", False),      # not applies to the whole comparison
    ("not 1 < 2 or true", True),
    ("true or false and false", True),    # and binds tighter than or
    ("(true or false) and false", False),
    ("not false and false", False),       # (not false) and false
    ("not (false and false)", True),
    ("false and 1/0", False),             # short-circuit: right side never evaluated
    ("true or 1/0", True),
])
def test_comparisons_and_booleans(ev_template, text, expected):
    assert ev_template(text) is expected


@pytest.mark.parametrize("text, params, expected", [
    ("${b} ? 10 : 20", {"b": True}, 10),
    ("${b} ? 10 : 20", {"b": False}, 20),
    # lazy: the untaken branch divides by zero
    ("${n} == 0 ? 0 : 100 / ${n}", {"n": 0}, 0),
    ("${n} == 0 ? 0 : 100 / ${n}", {"n": 4}, 25),
    ("${n} != 0 ? 1 // ${n} : 7", {"n": 0}, 7),
    # right-associative: a ? b : (c ? d : e)
    ("1 ? 2 : 0 ? 3 : 4", {}, 2),
    ("0 ? 2 : 0 ? 3 : 4", {}, 4),
    ("0 ? 2 : 1 ? 3 : 4", {}, 3),
    # lowest precedence: the test takes the whole comparison, the else branch the whole sum
    ("1 + 1 == 2 ? 5 : 6", {}, 5),
    ("0 ? 1 : 2 + 3", {}, 5),
    ("(0 ? 1 : 2) + 3", {}, 5),
    ("(1 ? 1 : 2) + 3", {}, 4),
    ("${b} and ${n} > 2 ? ${n} * 2 : -1", {"b": True, "n": 3}, 6),
])
def test_conditional(ev_template, text, params, expected):
    assert ev_template(text, **params) == expected


def test_tree_shape_and_positions():
    node = parse("1 + 2 * 3")
    assert isinstance(node, BinOp) and node.op == "+" and node.pos == 2
    assert node.left == Num(1, 0)
    assert isinstance(node.right, BinOp) and node.right.op == "*" and node.right.pos == 6
    neg = parse("-2**2")
    assert isinstance(neg, Unary) and neg.op == "-" and neg.pos == 0
    assert isinstance(neg.operand, BinOp) and neg.operand.op == "**" and neg.operand.pos == 2
    right = parse("2**3**2")
    assert right.op == "**" and right.pos == 1 and right.left == Num(2, 0)
    assert right.right.op == "**" and right.right.pos == 4
    cond = parse("${a} ? {x__Y}(${a}, 2) : 0")
    assert isinstance(cond, Cond) and cond.pos == 5
    assert cond.test == Param("a", 0)
    assert isinstance(cond.if_true, Call) and cond.if_true.key == "x__Y"
    assert cond.if_true.args == (Param("a", 14), Num(2, 20))


def test_tokens_allow_spaces_inside_braces():
    assert parse("${ a }") == Param("a", 0)
    assert [t.kind for t in tokenize("{ x__Y }(1)")] == ["KEY", "OP", "NUM", "OP", "END"]


def test_numbers():
    assert parse("1e3") == Num(1000.0, 0)
    assert isinstance(parse("1e3").value, float)
    assert parse("12").value == 12 and isinstance(parse("12").value, int)
    assert parse(".5").value == 0.5


@pytest.mark.parametrize("text, pos, expected", [
    ("(1+2", 4, "expected ')', found end of template"),          # unclosed paren
    ("((1)", 4, "expected ')', found end of template"),
    ("2 * ${a} +", 10, "found end of template"),                 # trailing operator
    ("2 * ${a} +", 10, "expected a number, ${param}"),
    ("1 *", 3, "expected a number"),
    ("", 0, "empty template"),
    ("   ", 3, "empty template"),
    ("$x", 0, "expected '${name}' after '$'"),
    ("1 + $x", 4, "expected '${name}' after '$'"),
    ("${1}", 0, "expected '${name}' after '$'"),
    ("{key}", 5, "expected '(' after {key}"),                  # {key} without parens
    ("{key} + 1", 6, "expected '(' after {key}"),
    ("{bad key}(1)", 0, "expected '{key}(...)'"),
    ("1 < 2 < 3", 6, "chained comparisons are not supported"),
    ("1 == 1 != 0", 7, "chained comparisons"),
    ("1 ? 2", 5, "expected ':' of a conditional"),
    ("1 2", 2, "expected an operator or end of template, found '2'"),
    ("1)", 1, "expected an operator or end of template, found ')'"),
    ("max(1, 2", 8, "expected ',' or ')' in the argument list"),
    ("max(1)", 0, "max() takes 2 to 8 arguments, got 1"),
    ("ceil_div(1, 2, 3)", 0, "ceil_div() takes 2 arguments, got 3"),
    ("foo", 0, "bare name 'foo' is not allowed; write parameters as ${foo}"),
    ("1 + foo", 4, "bare name 'foo'"),
    ("1 # 2", 2, "unexpected character '#'"),
    ("${a}[0]", 4, "subscripts is not allowed in cost templates"),
    ("${a}.shape", 4, "attribute access is not allowed in cost templates"),
    ("1 + and", 4, "unexpected keyword 'and'"),
])
def test_errors_carry_template_position_and_expectation(text, pos, expected):
    with pytest.raises(FormulaError) as info:
        parse(text)
    exc = info.value
    assert exc.template == text
    assert exc.pos == pos
    assert expected in exc.message
    rendered = str(exc)
    assert repr(text) in rendered and f"at position {pos}" in rendered


def test_non_string_template_is_refused():
    with pytest.raises(FormulaError, match="template must be a string, got int"):
        parse(3)  # type: ignore[arg-type]


def test_bind_mode_allows_paths_templates_do_not():
    node = parse("input[0].shape[-1]", "bind")
    assert node.pos == 14  # the outer subscript
    with pytest.raises(FormulaError) as info:
        parse("input[0].shape[-1]")
    assert info.value.pos == 0 and "bare name 'input'" in info.value.message
