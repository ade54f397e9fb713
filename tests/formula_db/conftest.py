"""Shared helpers for the formula_db tests: build entries and registries in the test itself
(never from the builtin module_db.json)."""
from __future__ import annotations

from typing import Any, Callable

import pytest

from formula_db.evaluate import Env, evaluate
from formula_db.parser import parse
from formula_db.registry import Registry
from formula_db.schema import METRICS, FormulaEntry


def param(name: str, type: str = "int", bind: str | None = None, default: Any = None) -> dict:
    data: dict[str, Any] = {"name": name, "type": type, "description": f"the {name}"}
    if bind is not None:
        data["bind"] = bind
    if default is not None:
        data["default"] = default
    return data


def entry_data(full_class_name: str, params: list, **fields: Any) -> dict:
    """Raw entry dict: every metric defaults to "0"; params are names or param() dicts."""
    data: dict[str, Any] = {
        "full_class_name": full_class_name,
        "parameters": [param(p) if isinstance(p, str) else p for p in params],
    }
    for metric in METRICS:
        data[metric] = fields.pop(metric, "0")
    data.update(fields)
    return data


def make(full_class_name: str, params: list, **fields: Any) -> FormulaEntry:
    return FormulaEntry.model_validate(entry_data(full_class_name, params, **fields))


def ev(text: str, **params: Any) -> Any:
    """Evaluate a template on its own (no registry)."""
    return evaluate(parse(text), Env(params=params, text=text))


@pytest.fixture
def make_entry() -> Callable[..., FormulaEntry]:
    return make


@pytest.fixture
def make_data() -> Callable[..., dict]:
    return entry_data


@pytest.fixture
def P() -> Callable[..., dict]:
    return param


@pytest.fixture
def ev_template() -> Callable[..., Any]:
    return ev


@pytest.fixture
def registry_of() -> Callable[..., Registry]:
    return lambda *entries: Registry.from_entries(list(entries))
