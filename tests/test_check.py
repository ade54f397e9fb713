"""`lm-predictor check`: suite files, per-formula grading, exit codes, baseline regressions, and
the `lm_predictor.testing.assert_no_regression` helper."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from formula_db.registry import Registry
from formula_db.schema import FormulaEntry
from formula_db.store import save_entry
from lm_predictor.errors import EXIT_CHECK_FAILED
from lm_predictor.cli import main
from lm_predictor.testing import assert_no_regression


@pytest.fixture()
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "tiny", "models": [
        {"model_id": "gpt2", "tiny": True, "shapes": [[1, 3], [3, 5]]}]}))
    return path


def wrong_linear() -> FormulaEntry:
    """torch.nn.Linear with flops off by a factor 2 (a deliberately broken user override)."""
    entry = Registry.default(include_user=False).get("torch.nn.Linear")
    data = entry.model_dump(mode="json")
    data["flops"] = "4 * ${rows} * ${in_features} * ${out_features}"
    data["module_depends"] = ["torch__nn__functional__linear"]
    data["validation"] = {"status": "pending", "source": "user"}
    return FormulaEntry.model_validate(data)


def test_check_passes_then_detects_a_regression(suite: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db, formulas = str(tmp_path / "c.duckdb"), tmp_path / "user.json"
    args = ["check", "--suite", str(suite), "--db", db, "--formulas", str(formulas), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["runs"]) == 2 and first["failing"] == [] and first["regressions"] == []
    linear = next(f for f in first["formulas"] if f["formula_key"] == "torch__nn__Linear")
    assert linear["max_rel_error_flops"] == 0.0
    save_entry(formulas, wrong_linear())
    assert main(args) == EXIT_CHECK_FAILED
    second = json.loads(capsys.readouterr().out)
    # Linear fails, and so does every formula that calls it (e.g. the GPT-2 LM head model)
    assert "torch__nn__Linear" in second["failing"]
    linear = next(f for f in second["formulas"] if f["formula_key"] == "torch__nn__Linear")
    assert linear["max_rel_error_flops"] == 1.0  # predicted 2x measured
    assert any("torch__nn__Linear flops" in line for line in second["regressions"])
    with pytest.raises(AssertionError, match="torch__nn__Linear flops"):
        assert_no_regression(db, second["runs"][0], first["runs"][0])
    assert_no_regression(db, first["runs"][1], first["runs"][0])


def test_bad_suite_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "models": [{"model_id": "gpt2", "shapes": "nope"}]}')
    assert main(["check", "--suite", str(bad), "--db", str(tmp_path / "d.duckdb")]) == 5
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad.json" in err
    assert main(["check", "--suite", str(tmp_path / "missing.json")]) == 5
    assert "neither 'zoo' nor a file" in capsys.readouterr().err
