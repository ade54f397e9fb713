"""Entry schema validation beyond types, the database model, and the committed JSON Schema."""
from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

import formula_db
from formula_db.export_schema import SCHEMA_PATH, schema_text
from formula_db.schema import FormulaDatabase, FormulaEntry, json_schema


def invalid(data: dict) -> str:
    with pytest.raises(pydantic.ValidationError) as info:
        FormulaEntry.model_validate(data)
    return str(info.value)


def test_valid_entry_properties(make_entry, P):
    entry = make_entry("pkg.sub.My_Layer", ["a", P("b", default=3), P("c", type="bool")],
                       flops="{pkg__Other}(${a}) + ${b}", module_depends=["pkg__Other"])
    assert entry.key == "pkg__sub__My__Layer"
    assert entry.param_names == ("a", "b", "c")
    assert entry.defaults == {"b": 3}
    assert entry.templates()["flops"] == "{pkg__Other}(${a}) + ${b}"
    assert set(entry.templates()) == {"flops", "vector_flops", "bytes_read", "bytes_written",
                                      "activation_bytes"}
    assert entry.ast("flops").op == "+"


def test_module_depends_missing(make_data):
    text = invalid(make_data("sch.Dep", ["a"], flops="{sch__B}(${a}) + {sch__C}(1)",
                             module_depends=["sch__B"]))
    assert "module_depends must equal the keys the templates call" in text
    assert "missing ['sch__C'], not called []" in text


def test_module_depends_extra(make_data):
    text = invalid(make_data("sch.Dep", ["a"], flops="{sch__B}(${a})",
                             module_depends=["sch__B", "sch__Z"]))
    assert "missing [], not called ['sch__Z']" in text


def test_module_depends_counts_breakdown_calls(make_data, make_entry):
    data = make_data("sch.Dep", ["a"], breakdown=[{"name": "x", "flops": "{sch__B}(${a})"}])
    assert "missing ['sch__B']" in invalid(data)
    data["module_depends"] = ["sch__B"]
    entry = FormulaEntry.model_validate(data)
    assert entry.ast("breakdown.x.flops").key == "sch__B"


def test_missing_metric_is_refused(make_data):
    data = make_data("sch.NoMetric", ["a"])
    del data["activation_bytes"]
    assert "activation_bytes" in invalid(data)


def test_duplicate_parameter_names(make_data, P):
    text = invalid(make_data("sch.Dup", ["a", "b", P("a", default=1)]))
    assert "duplicate parameter names ['a']" in text


def test_bind_referencing_later_parameter(make_data, P):
    text = invalid(make_data("sch.Later", [P("a", bind="${b} * 2"), P("b", bind="module.x")]))
    assert "sch__Later.parameters.a.bind: uses ${b} which is not an earlier parameter" in text
    # an earlier parameter is fine
    entry = FormulaEntry.model_validate(
        make_data("sch.Earlier", [P("b", bind="module.x"), P("a", bind="${b} * 2")]))
    assert entry.bind_ast("a").op == "*"
    # a bind may not use itself either
    assert "uses ${a}" in invalid(make_data("sch.Self", [P("a", bind="${a} + 1")]))


def test_bad_template_reports_entry_field_and_position(make_data):
    text = invalid(make_data("sch.Bad", ["a"], bytes_written="${a} +"))
    assert "sch__Bad.bytes_written, template '${a} +', at position 6" in text
    text = invalid(make_data("sch.Bad", ["a"], breakdown=[{"name": "part", "flops": "(${a}"}]))
    assert "sch__Bad.breakdown.part.flops" in text and "expected ')'" in text


def test_extra_fields_and_bad_types_refused(make_data, P):
    assert "Extra inputs are not permitted" in invalid(make_data("sch.X", [], flop="1"))
    assert "type" in invalid(make_data("sch.X", [P("a", type="tensor")]))
    assert "name" in invalid(make_data("sch.X", [P("a b")]))


def test_database_key_must_match_full_class_name(make_data):
    data = make_data("sch.Real", ["a"], flops="${a}")
    db = FormulaDatabase.model_validate({"schema_version": 2, "entries": {"sch__Real": data}})
    assert list(db.entries) == ["sch__Real"]
    with pytest.raises(pydantic.ValidationError) as info:
        FormulaDatabase.model_validate({"schema_version": 2, "entries": {"sch__Fake": data}})
    assert ("entry key 'sch__Fake' does not match its full_class_name 'sch.Real' "
            "(expected 'sch__Real')") in str(info.value)
    with pytest.raises(pydantic.ValidationError):
        FormulaDatabase.model_validate({"schema_version": 1, "entries": {}})


def test_json_schema_file_is_fresh():
    committed = Path(formula_db.__file__).with_name("module_db_schema_v2.json")
    assert SCHEMA_PATH == committed
    assert schema_text() == committed.read_text(encoding="utf-8"), (
        "module_db_schema_v2.json is stale: run python -m formula_db.export_schema")


def test_json_schema_describes_the_models():
    schema = json.loads(schema_text())
    assert schema == json.loads(json.dumps(json_schema()))
    entry = schema["$defs"]["FormulaEntry"]
    for metric in ("flops", "vector_flops", "bytes_read", "bytes_written", "activation_bytes",
                   "full_class_name", "parameters"):
        assert metric in entry["required"]
    assert entry["additionalProperties"] is False
