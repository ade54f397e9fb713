"""Formula entry schema: pydantic v2 models, the single source of the JSON Schema file.

An entry describes the cost of one module class (or torch function) as templates of the formula
language, one per metric, over declared parameters. Each parameter has a `bind`: an expression
that computes it from a traced call (module attributes, tensor metadata, kwargs, model config).

Validation goes beyond types: every template and bind must parse (template/bind mode), templates
may only use declared parameters, binds only earlier ones, and `module_depends` must equal the
set of keys the templates call. `module_db_schema_v2.json` beside this file is generated from
these models (`python -m formula_db.export_schema`); a test fails when it is stale.

Metric conventions (shared with the measuring counter in `tracing/`):
- flops: matmul-class FLOPs, 2 per multiply-accumulate (torch.utils.flop_counter's convention).
- vector_flops: element-wise, reduction, normalisation and softmax work (tracing/optable.py).
- bytes_read / bytes_written: unfused, per aten op, input and output tensor bytes.
- activation_bytes: bytes of tensors created by the call and still alive when it returns.
- backward (optional): flops, vector_flops, bytes_read, bytes_written of the backward ops of the
  autograd nodes the call's forward created (`tracing.trace(..., backward=True)`), over the
  same parameters; evaluated as fields `backward.flops` etc. A nested `{key}(...)` inside a
  backward template evaluates the callee's backward template of the same metric.
"""
from __future__ import annotations

import datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from formula_db.ast import Node, called_keys, param_names, walk, Param
from formula_db.errors import FormulaError
from formula_db.naming import key_for
from formula_db.parser import parse
from formula_db.static import check_metric
from formula_db.units import COUNTER_METRICS, METRICS  # noqa: F401  (the one vocabulary)

SCHEMA_VERSION = 2
BACKWARD_METRICS: tuple[str, ...] = COUNTER_METRICS  # activation memory has no backward
ParamValue = int | float | bool | str


class Parameter(BaseModel):
    """A named input of the templates, and how to compute it from a traced call."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    type: Literal["int", "float", "bool", "str"]
    description: str
    bind: str | None = Field(None, description="Bind expression evaluated on a traced call, e.g. "
                             "'input[0].shape[-1]' or 'module.in_features'.")
    default: ParamValue | None = Field(None, description="Value used when the bind is absent "
                                       "or a nested call omits the argument.")


class CodeLocation(BaseModel):
    """Where the class's source lives (relative to its installed package root)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    start_line: int | None = None
    end_line: int | None = None


class BreakdownItem(BaseModel):
    """One sub-operation's share of the cost; `useful` items are labelled alternatives
    (e.g. the work a causal kernel really does) and are not summed into the totals."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    description: str = ""
    kind: Literal["component", "useful"] = "component"
    flops: str | None = None
    vector_flops: str | None = None
    bytes_read: str | None = None
    bytes_written: str | None = None
    activation_bytes: str | None = None

    def templates(self) -> dict[str, str]:
        return {m: getattr(self, m) for m in METRICS if getattr(self, m) is not None}


class Backward(BaseModel):
    """Templates of the call's backward cost (the ops of the autograd nodes its forward made)."""

    model_config = ConfigDict(extra="forbid")
    flops: str
    vector_flops: str
    bytes_read: str
    bytes_written: str

    def templates(self) -> dict[str, str]:
        return {m: getattr(self, m) for m in BACKWARD_METRICS}


class Validation(BaseModel):
    """How far the entry has been checked, by whom, and against which library versions."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["pending", "validated", "mismatch", "deprecated"] = "pending"
    source: Literal["builtin", "agent", "user", "transferred", "derived"] = "user"
    date: datetime.date | None = None
    torch_version: str | None = None
    transformers_version: str | None = None
    notes: str = ""
    transferred_from: str | None = Field(None, description="Key of the entry a transferred "
                                         "entry was adopted from.")
    config_hash: str | None = Field(None, description="Hash of the config values a derived "
                                    "entry holds for (see config_values).")
    config_values: dict[str, ParamValue] | None = Field(None, description="Config values a "
                                                        "derived entry was traced with and "
                                                        "holds for.")


class Example(BaseModel):
    """Parameter values with the expected metric values (checked by validation)."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, ParamValue]
    expected: dict[str, int] = Field(default_factory=dict)


class FormulaEntry(BaseModel):
    """The cost model of one module class or torch function."""

    model_config = ConfigDict(extra="forbid")
    full_class_name: str = Field(min_length=1, max_length=300)
    kind: Literal["module", "function"] = "module"
    description: str = ""
    code_location: CodeLocation | None = None
    parameters: list[Parameter]
    flops: str
    vector_flops: str
    bytes_read: str
    bytes_written: str
    activation_bytes: str
    backward: Backward | None = Field(None, description="Backward cost templates (training "
                                      "steps); absent when the entry models forward only.")
    breakdown: list[BreakdownItem] = Field(default_factory=list)
    module_depends: list[str] = Field(default_factory=list)
    allow_fractional: bool = Field(False, description="Allow inexact '/' of integers "
                                   "(results become fractions).")
    validation: Validation = Field(default_factory=Validation)
    examples: list[Example] = Field(default_factory=list)

    _asts: dict[str, Node] = PrivateAttr(default_factory=dict)
    _bind_asts: dict[str, Node] = PrivateAttr(default_factory=dict)

    @property
    def key(self) -> str:
        return key_for(self.full_class_name)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def defaults(self) -> dict[str, ParamValue]:
        return {p.name: p.default for p in self.parameters if p.default is not None}

    def templates(self) -> dict[str, str]:
        """Metric -> template text of the totals."""
        return {m: getattr(self, m) for m in METRICS}

    def backward_templates(self) -> dict[str, str]:
        """`backward.<metric>` -> template text, empty without a backward block."""
        if self.backward is None:
            return {}
        return {f"backward.{m}": t for m, t in self.backward.templates().items()}

    def ast(self, field: str) -> Node:
        """Parsed AST of a total (`flops`) or breakdown item (`breakdown.NAME.flops`)."""
        return self._asts[field]

    def bind_ast(self, name: str) -> Node | None:
        return self._bind_asts.get(name)

    @model_validator(mode="after")
    def _check(self) -> "FormulaEntry":
        where = key_for(self.full_class_name)
        names = [p.name for p in self.parameters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{where}: duplicate parameter names {dupes}")
        declared = set(names)
        types = {p.name: p.type for p in self.parameters}
        texts: dict[str, str] = dict(self.templates())
        texts.update(self.backward_templates())
        for item in self.breakdown:
            for metric, text in item.templates().items():
                texts[f"breakdown.{item.name}.{metric}"] = text
        calls: set[str] = set()
        for field, text in texts.items():
            node = _parse(text, "template", f"{where}.{field}")
            used, called = _facts(text)
            unknown = used - declared
            if unknown:
                raise ValueError(FormulaError(
                    f"unknown parameter(s) {', '.join('${' + u + '}' for u in sorted(unknown))}; "
                    f"declared: {', '.join(names) or 'none'}", text,
                    _first_pos(node, unknown), f"{where}.{field}").render())
            try:
                _checked_metric(text, tuple(sorted(types.items())), self.allow_fractional)
            except FormulaError as exc:
                raise ValueError(exc.located(f"{where}.{field}").render()) from None
            calls |= called
            self._asts[field] = node
        seen: set[str] = set()
        for p in self.parameters:
            if p.bind is not None:
                node = _parse(p.bind, "bind", f"{where}.parameters.{p.name}.bind")
                later = param_names(node) - seen
                if later:
                    raise ValueError(f"{where}.parameters.{p.name}.bind: uses ${{{sorted(later)[0]}}} "
                                     f"which is not an earlier parameter")
                self._bind_asts[p.name] = node
            seen.add(p.name)
        if set(self.module_depends) != calls:
            missing = sorted(calls - set(self.module_depends))
            extra = sorted(set(self.module_depends) - calls)
            raise ValueError(f"{where}: module_depends must equal the keys the templates call; "
                             f"missing {missing}, not called {extra}")
        return self


@lru_cache(maxsize=8192)
def _facts(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(parameters used, entry keys called) of a template text (already parsed once: `parse`
    is memoised); memoised by text, since covering a model validates the same templates in
    thousands of candidate entries."""
    node = parse(text, "template")
    return frozenset(param_names(node)), frozenset(called_keys(node))


@lru_cache(maxsize=8192)
def _checked_metric(text: str, types: tuple[tuple[str, str], ...],
                    allow_fractional: bool) -> None:
    """`check_metric` memoised on (text, parameter types). Failures are not cached (they
    raise)."""
    check_metric(parse(text, "template"), dict(types), text, "", allow_fractional)


def _parse(text: str, mode: Literal["template", "bind"], where: str) -> Node:
    try:
        return parse(text, mode)
    except FormulaError as exc:
        raise ValueError(exc.located(where).render()) from None


def _first_pos(node: Node, names: set[str]) -> int | None:
    for n in walk(node):
        if isinstance(n, Param) and n.name in names:
            return n.pos
    return None


class FormulaDatabase(BaseModel):
    """A formula database file: schema version and entries keyed by formula key."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[2] = SCHEMA_VERSION
    entries: dict[str, FormulaEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_match(self) -> "FormulaDatabase":
        for key, entry in self.entries.items():
            if key != entry.key:
                raise ValueError(f"entry key {key!r} does not match its full_class_name "
                                 f"{entry.full_class_name!r} (expected {entry.key!r})")
        return self


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a formula database file, generated from the models."""
    schema = FormulaDatabase.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "LM-Predictor formula database (schema v2)"
    return schema
