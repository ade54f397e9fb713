"""`lm-predictor check --suite transformers` end to end on two model types: one fully covered by
builtin formulas (gpt2), one covered by transfer/derivation in the worker (olmo); the rows land
in the check database, and a second sweep is compared with the first."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm_predictor.cli import main
from lm_predictor.store import Store


def test_sweep_command_stores_and_compares(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "check.duckdb"
    args = ["check", "--suite", "transformers", "--only", "gpt2,olmo", "--workers", "2",
            "--db", str(db), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    summary = out["summary"]
    assert (summary["types"], summary["traced"], summary["fully_covered_exact"]) == (2, 2, 2)
    assert {"transferred", "derived"} & set(summary["coverage_by_source"])  # olmo was covered
    rows = Store(db).query("SELECT model_type, traced, fully_covered_exact, method "
                           "FROM sweep_results ORDER BY model_type")[1]
    assert rows == [("gpt2", True, True, "meta"), ("olmo", True, True, "meta")]
    assert main(args[:-1] + ["--no-cover", "--json"]) == 4  # olmo is no longer fully covered
    again = json.loads(capsys.readouterr().out)
    assert again["no_longer_exact"] == ["olmo"] and again["no_longer_traced"] == []


def test_unknown_type_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--suite", "transformers", "--only", "no_such_type", "--db",
                 str(tmp_path / "c.duckdb")]) == 5
    assert "unknown model type" in capsys.readouterr().err
