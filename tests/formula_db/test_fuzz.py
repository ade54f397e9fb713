"""A seeded fuzz of the formula language: generated and mutated templates through every stage.

Each case is a template text, generated from the grammar (hostile numbers, every operator,
function, conditional, string and nested call) or mutated from a generated one or from a
builtin zoo template (characters deleted, duplicated, swapped, hostile tokens inserted). It goes
through parse, entry validation (load), exact evaluation at several bindings (zero, huge, float,
inf/nan), raw evaluation without a registry, and, for a sample, symbolic conversion. The only
exceptions allowed out are the project's own (`FormulaError`, and pydantic's `ValidationError`
carrying one when an entry is loaded), and every successful metric evaluation must be a finite,
non-negative number (int, float or Fraction, never a bool) no larger than MAX_METRIC_VALUE.
"""
from __future__ import annotations

import math
import random
import re
import time
import zlib
from collections import Counter
from fractions import Fraction
from typing import Any

import pydantic

from formula_db.ast import called_keys
from formula_db.errors import FormulaError
from formula_db.evaluate import MAX_METRIC_VALUE, Env, evaluate
from formula_db.parser import parse
from formula_db.registry import Registry
from formula_db.schema import METRICS, FormulaEntry

from .conftest import entry_data, make, param

SEED = 13
CASES = 10_000
SYMBOLIC_EVERY = 4  # of the loaded entries (sympy is slow)
PARAMS = [param("a"), param("b", "float"), param("f", "bool"), param("s", "str"), param("k")]
BINDINGS: list[dict[str, Any]] = [
    {"a": 0, "b": 0.0, "f": False, "s": "x", "k": 0},
    {"a": 7, "b": 0.5, "f": True, "s": "float32", "k": 3},
    {"a": 10**29, "b": 1e300, "f": True, "s": "x", "k": 2**100},
    {"a": 2**61 - 1, "b": 1e-300, "f": False, "s": "", "k": 1},
    {"a": 1, "b": float("inf"), "f": True, "s": "x", "k": 10**30},
    {"a": 3, "b": float("nan"), "f": False, "s": "x", "k": 2},
]
POOL = [make("pool.F", ["a"], flops="${a} * 2 + 1"),
        make("pool.G", ["a", param("b", default=3)], flops="max(${a}, ${b}) // 2"),
        make("pool.H", ["a"], flops="{pool__F}(${a}) + {pool__F}(${a} + 1)",
             module_depends=["pool__F"])]
NUMBERS = ["0", "1", "2", "7", "255", "4096", "0.5", "1.5", "1e300", "1e-300", "1e308", "2.5e-7",
           "9" * 40, "2**200", "(2**200)**20", "1e300 // 1e-300", ".5", "3."]
TOKENS = ["**", "//", "%", "/", "*", "+", "-", "(", ")", "?", ":", ",", "==", "<", "and", "or",
          "not ", "'x'", '"float32"', "true", "false", "${a}", "${b}", "${f}", "${s}", "${k}",
          "${zz}", "{pool__F}(", "{pool__G}(", "{pool__H}(", "{nope__X}(", "ceil(", "floor(",
          "int(", "abs(", "min(", "max(", "ceil_div(", "numel(", "__import__(", ".__class__",
          "[0]", "$", "{", "}", "\x00", "é", "1e999", *NUMBERS]


def gen(rng: random.Random, depth: int = 0) -> str:
    """A random template from the grammar (mostly well-formed, often hostile)."""
    if depth > 5 or rng.random() < 0.25:
        return rng.choice(NUMBERS + ["${a}", "${b}", "${k}", "${f}", "${s}", "'x'", "true",
                                     "false", "${a}", "${k}"])
    roll = rng.random()
    sub = lambda: gen(rng, depth + 1)  # noqa: E731
    if roll < 0.45:
        op = rng.choice(["+", "-", "*", "/", "//", "%", "**", "*", "+", "==", "<", ">=", "and",
                         "or"])
        return f"({sub()} {op} {sub()})" if rng.random() < 0.5 else f"{sub()} {op} {sub()}"
    if roll < 0.6:
        return f"{sub()} ? {sub()} : {sub()}"
    if roll < 0.8:
        name, low, high = rng.choice([("ceil", 1, 1), ("floor", 1, 1), ("int", 1, 1),
                                      ("abs", 1, 1), ("min", 2, 4), ("max", 2, 4),
                                      ("ceil_div", 2, 2)])
        return f"{name}({', '.join(sub() for _ in range(rng.randint(low, high)))})"
    if roll < 0.9:
        key = rng.choice(["pool__F", "pool__G", "pool__H"])
        return f"{{{key}}}({', '.join(sub() for _ in range(rng.randint(1, 2)))})"
    return rng.choice(["-", "+", "not "]) + sub()


def mutate(rng: random.Random, text: str) -> str:
    """One to three character- or token-level mutations of `text`."""
    for _ in range(rng.randint(1, 3)):
        i = rng.randint(0, len(text))
        j = min(len(text), i + rng.randint(1, 8))
        roll = rng.random()
        if roll < 0.3:
            text = text[:i] + text[j:]
        elif roll < 0.7:
            text = text[:i] + rng.choice(TOKENS) + text[i:]
        elif roll < 0.85:
            text = text[:i] + text[i:j] * rng.randint(2, 6) + text[j:]
        elif len(text) > 2:
            a, b = sorted(rng.sample(range(len(text)), 2))
            text = text[:a] + text[b] + text[a + 1:b] + text[a] + text[b + 1:]
    return text


def zoo_templates() -> list[str]:
    """Builtin templates with their parameters renamed to the fuzz entry's."""
    reg = Registry.default(include_user=False)
    names = ["${a}", "${b}", "${k}", "${f}", "${s}"]
    texts = []
    for key in reg.keys():
        entry = reg.get(key)
        for metric in METRICS:
            text = getattr(entry, metric)
            texts.append(re.sub(r"\$\{\s*(\w+)\s*\}",
                                lambda m: names[zlib.crc32(m.group(1).encode()) % len(names)],
                                text))
            texts[-1] = re.sub(r"\{(\w+)\}\(", "{pool__G}(", texts[-1])
    return texts


def valid_metric(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return 0 <= value <= MAX_METRIC_VALUE


def run_case(text: str, stats: Counter) -> None:
    try:
        node = parse(text)
    except FormulaError:
        stats["refused at parse"] += 1
        return
    try:
        raw = evaluate(node, Env(params=BINDINGS[1], text=text))
        stats["raw evaluations"] += 1
        del raw
    except FormulaError:
        pass
    calls = sorted(called_keys(node))
    try:
        entry = FormulaEntry.model_validate(entry_data("fuzz.Case", PARAMS, flops=text,
                                                       module_depends=calls))
    except pydantic.ValidationError:
        stats["refused at load"] += 1
        return
    stats["loaded"] += 1
    reg = Registry.from_entries([*POOL, entry])
    for params in BINDINGS:
        try:
            value = reg.evaluate("fuzz__Case", "flops", params)
        except FormulaError:
            stats["refused at evaluation"] += 1
            continue
        assert valid_metric(value), (text, params, value)
        stats["metric values"] += 1
    if stats["loaded"] % SYMBOLIC_EVERY == 0:
        try:
            reg.symbolic("fuzz__Case", "flops", fixed={"f": True, "s": "x"})
            stats["symbolic forms"] += 1
        except FormulaError:
            stats["refused symbolically"] += 1


def test_fuzz_ten_thousand_templates_only_project_errors() -> None:
    rng = random.Random(SEED)
    corpus = zoo_templates()
    stats: Counter = Counter()
    start = time.perf_counter()
    for i in range(CASES):
        roll = rng.random()
        if roll < 0.4:
            text = gen(rng)
        elif roll < 0.75:
            text = mutate(rng, gen(rng))
        else:
            text = mutate(rng, rng.choice(corpus))
        try:
            run_case(text, stats)
        except (FormulaError, AssertionError):
            raise
        except Exception as exc:  # the point of the fuzz: nothing else may escape
            raise AssertionError(f"case {i} {text!r} raised {type(exc).__name__}: {exc}") from exc
        stats["cases"] += 1
    elapsed = time.perf_counter() - start
    print(f"\nfuzz: {dict(stats)} in {elapsed:.1f}s")
    assert stats["cases"] == CASES
    # the fuzz reaches every stage: it is not all refused at parse
    assert stats["loaded"] > 1000 and stats["metric values"] > 1000
    assert stats["refused at evaluation"] > 100 and stats["refused at load"] > 500
