"""`lm-predictor module`: show, evaluate, list, and the error paths (exit codes 1 and 3)."""
from __future__ import annotations

import json

import pytest

from formula_db.schema import FormulaEntry
from formula_db.store import save_entry
from lm_predictor.cli import main

METRICS = ("flops", "vector_flops", "bytes_read", "bytes_written", "activation_bytes")


@pytest.fixture
def user_db(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")        # keep rich tables from wrapping cells
    monkeypatch.delenv("LM_PREDICTOR_FORMULAS", raising=False)
    path = tmp_path / "f.json"
    entry = FormulaEntry.model_validate({
        "full_class_name": "clitest.Pair_Layer",
        "description": "a test layer",
        "parameters": [{"name": "a", "type": "int", "description": "first", "bind": "module.a"},
                       {"name": "b", "type": "int", "description": "second", "default": 1}],
        "flops": "2 * ${a} * ${b}",
        "vector_flops": "${a} + ${b}",
        "bytes_read": "${a} * ${b} * 4",
        "bytes_written": "${a} * 4",
        "activation_bytes": "0",
        "breakdown": [{"name": "inner", "flops": "${a} * ${b}"}],
    })
    save_entry(path, entry)
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_entry(capsys, user_db):
    code, out, err = run(capsys, "module", "clitest.Pair_Layer", "--formulas", str(user_db))
    assert code == 0 and err == ""
    assert "clitest__Pair__Layer" in out and "layer: user" in out
    assert "2 * ${a} * ${b}" in out and "module.a" in out and "a test layer" in out
    # the key finds it too
    code, out2, _ = run(capsys, "module", "clitest__Pair__Layer", "--formulas", str(user_db))
    assert code == 0 and "clitest.Pair_Layer" in out2


def test_json(capsys, user_db):
    code, out, _ = run(capsys, "module", "clitest.Pair_Layer", "--json", "--formulas", str(user_db))
    assert code == 0
    data = json.loads(out)
    assert data["full_class_name"] == "clitest.Pair_Layer"
    assert data["flops"] == "2 * ${a} * ${b}"
    assert FormulaEntry.model_validate(data).key == "clitest__Pair__Layer"


def test_eval(capsys, user_db):
    code, out, err = run(capsys, "module", "clitest.Pair_Layer", "--eval", "a=2", "b=3",
                         "--formulas", str(user_db))
    assert code == 0 and err == ""
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.splitlines() if line.count("│") == 3}
    # flops 2*2*3, vector 2+3, read 2*3*4, written 2*4, breakdown a*b
    assert rows["flops"] == "12" and rows["vector_flops"] == "5" and rows["bytes_read"] == "24"
    assert rows["bytes_written"] == "8" and rows["activation_bytes"] == "0"
    assert rows["inner (part) flops"] == "6"
    code, out, _ = run(capsys, "module", "clitest__Pair__Layer", "--eval", "a=1_000_000",
                       "b=3000", "--formulas", str(user_db))
    assert code == 0 and "6,000,000,000" in out


def test_eval_json_and_default(capsys, user_db):
    code, out, _ = run(capsys, "module", "clitest.Pair_Layer", "--json", "--eval", "a=1000",
                       "--formulas", str(user_db))
    assert code == 0
    data = json.loads(out)
    assert data["key"] == "clitest__Pair__Layer" and data["params"] == {"a": 1000}
    # b takes its default 1
    assert data["metrics"] == {"flops": 2000, "vector_flops": 1001, "bytes_read": 4000,
                               "bytes_written": 4000, "activation_bytes": 0}
    assert data["breakdown"] == [{"name": "inner", "kind": "component",
                                  "metrics": {"flops": 1000}}]


def test_list_includes_user_key(capsys, user_db):
    code, out, _ = run(capsys, "module", "--list", "--json", "--formulas", str(user_db))
    assert code == 0
    rows = {row["key"]: row for row in json.loads(out)}
    assert rows["clitest__Pair__Layer"] == {"key": "clitest__Pair__Layer", "layer": "user",
                                            "status": "pending",
                                            "full_class_name": "clitest.Pair_Layer"}
    code, out, _ = run(capsys, "module", "--list", "--formulas", str(user_db))
    assert code == 0
    # the table shows the name to type (the bare class name, unique here) and its module
    line = next(line for line in out.splitlines() if "Pair_Layer" in line)
    assert line.split() == ["Pair_Layer", "user", "pending", "clitest"]


def test_miss_exits_3(capsys, user_db):
    code, out, err = run(capsys, "module", "clitest.Nowhere", "--formulas", str(user_db))
    assert code == 3 and out == ""
    assert "no formula for 'clitest.Nowhere' (key 'clitest__Nowhere')" in err
    assert str(user_db) in err


def test_bad_eval_token_exits_5(capsys, user_db):
    code, out, err = run(capsys, "module", "clitest.Pair_Layer", "--eval", "a2",
                         "--formulas", str(user_db))
    assert code == 5 and out == ""
    assert err == "lm-predictor: error: --eval expects NAME=VALUE, got 'a2'\n"
    code, _, err = run(capsys, "module", "clitest.Pair_Layer", "--eval", "a=1", "zz=2",
                       "--formulas", str(user_db))
    assert code == 5 and err.count("\n") == 1 and "unknown parameter(s) zz" in err


def test_corrupt_user_db_exits_7(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("LM_PREDICTOR_FORMULAS", raising=False)
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    code, out, err = run(capsys, "module", "clitest.Pair_Layer", "--formulas", str(path))
    assert code == 7 and out == ""
    assert err.startswith("lm-predictor: error: formula database ") and err.count("\n") == 1
    assert str(path) in err and "corrupt" in err and "was not modified" in err
    assert path.read_text() == "{not json"


def test_no_name_is_usage_error(capsys, user_db):
    code, _, err = run(capsys, "module", "--formulas", str(user_db))
    assert code == 2 and "give a module name" in err
