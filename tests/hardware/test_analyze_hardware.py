"""`analyze --hardware` end to end on tiny configs: the JSON `estimates` block, stored estimate
rows and the time_error_by_class view, the plot, bad input; `hardware fit` and `hardware
estimate` on stored CPU runs; the schema 1 -> 2 migration."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from lm_predictor.cli import main
from lm_predictor.models import load_preset, tiny_config
from lm_predictor.store import SCHEMA_VERSION, Store


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpt2") / "config.json"
    tiny_config(load_preset("gpt2")).to_json_file(str(path))
    return path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_analyze_with_hardware_stores_estimates_and_plots(
        tiny_gpt2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, png = tmp_path / "runs.duckdb", tmp_path / "plots" / "roofline.png"
    png.parent.mkdir()  # outputs never create folders (issue 13)
    out = run_json(capsys, "analyze", "--model-id", str(tiny_gpt2), "--hardware", "H100-SXM",
                   "--batch-size", "2", "--seq-len", "16", "--db", str(db), "--plot", str(png))
    est = out["estimates"]
    assert est["hardware"] == "H100-SXM" and est["dtype"] == "fp32"
    total = est["total"]
    assert total["estimate_s"] > 0 and total["bound"] in ("compute", "memory")
    assert total["estimate_s"] >= max(total["compute_s"], total["memory_s"])
    assert total["measured_s"] is None  # meta: nothing timed
    assert sum(c["estimate_s"] for c in est["by_class"]) + est["outside_s"] == pytest.approx(
        total["estimate_s"])
    assert {"Conv1D", "LayerNorm"} <= {c["class_name"].rsplit(".", 1)[-1]
                                       for c in est["by_class"]}
    # stored: one row per call, keyed by run, call and hardware, in the same run
    stored = rows(db, "SELECT count(*), count(DISTINCT call_id), min(hardware), "
                      "bool_and(estimate_s >= 0) FROM estimates")
    calls = rows(db, "SELECT count(*) FROM calls")[0][0]
    assert stored == [(calls, calls, "H100-SXM", True)]
    root = rows(db, "SELECT e.estimate_s, e.bound FROM estimates e JOIN calls c "
                    "USING (run_id, call_id) WHERE c.parent_call_id IS NULL")
    assert root[0][0] == pytest.approx(total["estimate_s"] - est["outside_s"])
    view = rows(db, "SELECT class_name, calls, estimated_s, measured_s, mean_abs_pct_error "
                    "FROM time_error_by_class WHERE hardware = 'H100-SXM'")
    assert view and all(r[3] is None and r[4] is None for r in view)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_bad_hardware_input(tiny_gpt2: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.duckdb"
    assert main(["analyze", "--model-id", str(tiny_gpt2), "--hardware", "B300", "--db",
                 str(db)]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown hardware 'B300'" in err and "H100-SXM" in err
    assert not db.exists()  # failed before any work
    assert main(["analyze", "--model-id", str(tiny_gpt2), "--hardware", "T4", "--dtype",
                 "bfloat16", "--no-store"]) == 5
    assert "T4 lists no bf16 matmul peak" in capsys.readouterr().err
    assert main(["analyze", "--model-id", str(tiny_gpt2), "--plot", "x.png",
                 "--no-store"]) == 2
    assert "--plot needs --hardware" in capsys.readouterr().err


def test_fit_and_estimate_on_stored_cpu_runs(tiny_gpt2: Path, tmp_path: Path,
                                             user_devices: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.duckdb"
    assert main(["hardware", "calibrate", "--quick", "--name", "this-cpu", "--dtypes", "fp32",
                 "--threads", "1"]) == 0
    capsys.readouterr()
    run_ids = []
    for batch, seq in ((1, 8), (2, 16), (3, 8)):
        out = run_json(capsys, "analyze", "--model-id", str(tiny_gpt2), "--device", "cpu",
                       "--batch-size", str(batch), "--seq-len", str(seq), "--db", str(db),
                       "--hardware", "this-cpu")
        assert out["estimates"]["total"]["measured_s"] > 0
        run_ids.append(out["run_id"])
    view = rows(db, "SELECT sum(measured_calls), min(mean_abs_pct_error) FROM "
                    "time_error_by_class WHERE hardware = 'this-cpu'")
    assert view[0][0] > 0 and view[0][1] >= 0
    fitted = run_json(capsys, "hardware", "fit", "--hardware", "this-cpu", "--db", str(db),
                      "--level", "call", "--save")
    assert fitted["runs"] == 3 and fitted["held_out_samples"] > 0
    assert fitted["mape_held_out_after"] is not None and fitted["mape_held_out_before"] > 0
    saved = json.loads(user_devices.read_text())["devices"]["this-cpu"]
    assert saved["efficiency"] == {k: fitted["after"][k] for k in ("matmul", "vector", "memory")}
    # 3 runs cannot fit 4 factors (matmul, vector, memory, op overhead) and hold one out:
    # refused in one line naming the count (6: 4 fit + 2 held out) and how to make runs
    assert main(["hardware", "fit", "--hardware", "this-cpu", "--db", str(db)]) == 5
    err = capsys.readouterr().err
    assert "needs at least 6 measured fp32 runs" in err and "found 3" in err
    assert "lm-predictor analyze" in err and "--level call" in err
    assert len(err.strip().splitlines()) == 1
    # without hold-out and overhead, 3 factors fit 3 runs
    per_run = run_json(capsys, "hardware", "fit", "--hardware", "this-cpu", "--db", str(db),
                       "--hold-out-every", "1", "--no-overhead")
    assert per_run["level"] == "run" and per_run["fit_samples"] == 3 and per_run[
        "held_out_samples"] == 0 and set(per_run["by_label"]) == {"prefill"}
    # estimates for another device, added to a stored run (replacing on a repeat)
    for _ in range(2):
        est = run_json(capsys, "hardware", "estimate", "--run", run_ids[0], "--hardware", "L4",
                       "--db", str(db))
    assert est["run_id"] == run_ids[0] and est["hardware"] == "L4"
    assert rows(db, f"SELECT count(*) FROM estimates WHERE run_id = '{run_ids[0]}' AND "
                    f"hardware = 'L4'") == rows(
        db, f"SELECT count(*) FROM calls WHERE run_id = '{run_ids[0]}'")
    assert main(["hardware", "estimate", "--run", "nope", "--hardware", "L4", "--db",
                 str(db)]) == 5
    assert "no traced run 'nope'" in capsys.readouterr().err


def test_fit_without_measured_runs_is_a_clear_error(tiny_gpt2: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.duckdb"
    assert main(["analyze", "--model-id", str(tiny_gpt2), "--db", str(db), "--json"]) == 0
    capsys.readouterr()
    assert main(["hardware", "fit", "--hardware", "H100", "--db", str(db)]) == 5
    err = capsys.readouterr().err
    assert "no stored runs with measured wall times" in err and "--device cpu" in err


def test_schema_1_database_gains_the_estimates_table(tiny_gpt2: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.duckdb"
    run_id = run_json(capsys, "analyze", "--model-id", str(tiny_gpt2), "--db",
                      str(db))["run_id"]
    with duckdb.connect(str(db)) as con:  # back to what a schema-1 database looked like
        con.execute("DROP VIEW time_error_by_class")
        con.execute("DROP TABLE estimates")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert Store(db).migrate() == (1, SCHEMA_VERSION)  # reads never migrate: migrate does
    assert [r["run_id"] for r in Store(db).list_runs()] == [run_id]
    assert rows(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)]
    assert rows(db, "SELECT count(*) FROM estimates") == [(0,)]
    assert rows(db, "SELECT count(*) FROM time_error_by_class") == [(0,)]
