"""`lm-predictor check --suite transformers`: a type not covered by builtin formulas is covered
by transfer/derivation in the worker (olmo), results land in the check database's
`sweep_results`, and a sweep is compared with the previous one (exit 4 on a regression)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lm_predictor.cli import main
from lm_predictor.store import Store
from lm_predictor.sweep import SweepType, run_type


def test_run_type_covers_what_builtin_formulas_do_not() -> None:
    plain = run_type(SweepType("olmo"))
    covered = run_type(SweepType("olmo"), cover=True)
    assert plain.traced and not plain.fully_covered_exact
    assert set(plain.coverage_by_source) == {"builtin"}  # the rest is explained by nothing
    assert covered.fully_covered_exact
    assert {"transferred", "derived"} & set(covered.coverage_by_source)


def test_sweep_command_stores_and_compares(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "check.duckdb"
    earlier = dataclasses.asdict(run_type(SweepType("gpt2")))  # a previous sweep where olmo
    earlier.update(model_type="olmo", traced=True, fully_covered_exact=True)  # was all exact
    Store(db).write_sweep([earlier], "earlier")
    code = main(["check", "--suite", "transformers", "--only", "olmo", "--workers", "1",
                 "--no-cover", "--db", str(db), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 4 and out["no_longer_exact"] == ["olmo"] and out["no_longer_traced"] == []
    assert (out["summary"]["types"], out["summary"]["traced"]) == (1, 1)
    rows = Store(db).query("SELECT transformers_version, model_type, traced, fully_covered_exact "
                           "FROM sweep_results ORDER BY sweep_id")[1]
    assert rows[0] == ("earlier", "olmo", True, True)
    assert rows[1][1:] == ("olmo", True, False)


def test_unknown_type_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--suite", "transformers", "--only", "no_such_type", "--db",
                 str(tmp_path / "c.duckdb")]) == 5
    assert "unknown model type" in capsys.readouterr().err
