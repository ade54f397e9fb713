"""Tests of the DuckDB run database (lm_predictor.store) and its CLI (lm_predictor.sql_cmd).

Traces and reconciliations are built by hand here (no model is traced): a root module without a
formula, two Linear calls and a GELU call, with known counters, ops and relative errors.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import pytest

from lm_predictor.store import schema as schema_mod
from lm_predictor.store import store as store_mod
from lm_predictor.cli import sql as sql_cmd
from lm_predictor.results import METRICS, CallResult, Reconciliation, RunMeta
from lm_predictor.store import SCHEMA_VERSION, Store, StoreError, db_path
from tracing.records import CallRecord, Counters, OpStat, Trace

REPO = Path(__file__).resolve().parents[1]
BIG = 2**70  # beyond int64: counts must survive exactly
LINEAR = "torch__nn__Linear"
GELU = "torch__nn__GELU"
TABLES = ("runs", "calls", "ops", "uncovered_ops", "formulas", "predictions")


def meta(model_id: str = "toy", **kw: Any) -> RunMeta:
    values: dict[str, Any] = dict(model_id=model_id, config_hash="abc123", phase="prefill",
                                  batch_size=2, seq_len=16, kv_len=0, dtype="float32",
                                  device="meta", rtol=0.1, tool_version="0.1.0",
                                  torch_version="2.5", transformers_version="4.46")
    values.update(kw)
    return RunMeta(**values)


def metrics(flops: Any, other: Any = 8) -> dict[str, Any]:
    return {m: flops if m == "flops" else other for m in METRICS}


def call(call_id: int, parent: int | None, path: str, cls: str, key: str, flops: int,
         ops: dict[str, OpStat], wall: float | None = None) -> CallRecord:
    return CallRecord(call_id=call_id, parent_call_id=parent, depth=0 if parent is None else 1,
                      module_path=path, class_name=cls, formula_key=key,
                      inputs=({"shape": [2, 16, 4], "dtype": "float32"},), kwargs={"scale": 0.5},
                      outputs={"shape": [2, 16, 4]}, attributes={"in_features": 4},
                      self_counters=Counters(flops=flops), inclusive=Counters(flops=flops),
                      ops=ops, activation_bytes=8, peak_activation_bytes=64, wall_time_s=wall)


def synthetic(rel_fc1: float, rel_fc2: float) -> tuple[Trace, Reconciliation]:
    """Root (no formula) with children fc1, fc2 (Linear) and act (GELU, formula error).

    fc1/fc2 measure 100 flops and predict 100 * (1 + rel); the root measures BIG flops."""
    calls = [
        call(0, None, "", "Toy", "toy__Toy", BIG, {"aten.add": OpStat(1, 0, 32, 128, 64)}, 0.25),
        call(1, 0, "fc1", "Linear", LINEAR, 100, {"aten.addmm": OpStat(1, 100, 0, 96, 64)}),
        call(2, 0, "fc2", "Linear", LINEAR, 100, {"aten.addmm": OpStat(1, 100, 0, 96, 64)}),
        call(3, 0, "act", "GELU", GELU, 0, {"aten.gelu": OpStat(1, 0, 8, 64, 64)}),
    ]
    for c in calls[1:]:
        calls[0].children.append(c.call_id)
    trace = Trace(calls=calls, config={"hidden_size": 4, "torch_dtype": float("nan")},
                  uncovered_ops={"aten.weird": 3}, weight_bytes=4096, buffer_bytes=16,
                  peak_activation_bytes=1024, outside=Counters(bytes_read=8),
                  outside_ops={"aten.embedding": OpStat(2, 0, 0, 8, 16)})

    def linear(cid: int, rel: float) -> CallResult:
        predicted = metrics(int(100 * (1 + rel)))
        status = "exact" if rel == 0 else "within_tolerance" if rel <= 0.1 else "mismatch"
        return CallResult(cid, LINEAR, status, metrics(100), predicted,
                          {m: rel if m == "flops" else 0.0 for m in METRICS})

    results = [
        CallResult(0, "toy__Toy", "no_formula", metrics(BIG), metrics(BIG + 1, Fraction(10, 3)),
                   {m: 1 / BIG if m == "flops" else None for m in METRICS},
                   uncovered={"flops": 0}),
        linear(1, rel_fc1),
        linear(2, rel_fc2),
        CallResult(3, GELU, "mismatch", metrics(0), {m: None for m in METRICS},
                   {m: None for m in METRICS}, error="bind failed: no input[1]"),
    ]
    recon = Reconciliation(results, measured_totals=metrics(BIG), predicted_totals=metrics(BIG + 1),
                           coverage={"flops": 0.75, "bytes": 0.5}, peak_activation_bytes=1024,
                           uncovered_classes={"Toy": 1}, uncovered_ops={"aten.weird": 3})
    return trace, recon


def formula_entry(name: str) -> dict[str, Any]:
    return {"full_class_name": name, "parameters": [], "flops": "0", "vector_flops": "0",
            "bytes_read": "0", "bytes_written": "0", "activation_bytes": "0",
            "validation": {"status": "validated", "source": "builtin"}}


FORMULAS = {LINEAR: {"layer": "builtin", **formula_entry("torch.nn.Linear")},
            GELU: {"layer": "user", **formula_entry("torch.nn.GELU")}}


def rows(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path)) as con:
        return con.execute(sql, params or []).fetchall()


def count_rows(path: Path, run_id: str) -> dict[str, int]:
    with duckdb.connect(str(path)) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t} WHERE run_id = ?", [run_id])
                .fetchall()[0][0] for t in TABLES}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runs.duckdb"


# --- paths and schema file ---------------------------------------------------------------------

def test_db_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LM_PREDICTOR_DB", raising=False)
    assert db_path(None) == Path(platformdirs.user_data_dir("lm-predictor")) / "runs.duckdb"
    monkeypatch.setenv("LM_PREDICTOR_DB", str(tmp_path / "env.duckdb"))
    assert db_path(None) == tmp_path / "env.duckdb"
    assert db_path("x/flag.duckdb") == tmp_path / "x" / "flag.duckdb"


def test_schema_file_is_versioned_and_idempotent() -> None:
    sql = schema_mod.schema_sql()
    assert f"schema_version: {SCHEMA_VERSION}" in sql.splitlines()[0]
    con = duckdb.connect(":memory:")
    con.execute(sql)
    con.execute(sql)  # idempotent
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
              .fetchall()}
    assert {*TABLES, "meta", "formula_accuracy", "run_totals", "uncovered_classes"} <= tables


# --- round trip and views ----------------------------------------------------------------------

def test_round_trip(db: Path) -> None:
    trace, recon = synthetic(0.0, 0.5)
    run_id = Store(db).write_run(meta(), trace, recon, FORMULAS)

    (run,) = Store(db).query("SELECT * FROM runs")[1]
    cols = Store(db).query("SELECT * FROM runs")[0]
    run_row = dict(zip(cols, run))
    assert run_row["run_id"] == run_id and run_row["kind"] == "traced"
    expected = dict(model_id="toy", config_hash="abc123", phase="prefill", batch_size=2,
                    seq_len=16, kv_len=0, dtype="float32", device="meta", counter="dispatch",
                    rtol=0.1, tool_version="0.1.0", torch_version="2.5",
                    transformers_version="4.46", measured_flops=BIG, predicted_flops=BIG + 1,
                    measured_bytes_read=8, peak_activation_bytes=1024, weight_bytes=4096,
                    buffer_bytes=16, coverage_flops=0.75, coverage_bytes=0.5)
    assert {k: run_row[k] for k in expected} == expected
    assert json.loads(run_row["config"]) == {"hidden_size": 4, "torch_dtype": "nan"}

    calls = Store(db).query("SELECT * FROM calls WHERE run_id = ? ORDER BY call_id", [run_id])
    by_id = {r[1]: dict(zip(calls[0], r)) for r in calls[1]}
    root, fc2, act = by_id[0], by_id[2], by_id[3]
    assert (root["parent_call_id"], root["depth"], root["status"]) == (None, 0, "no_formula")
    assert root["measured_flops"] == BIG and root["predicted_flops"] == BIG + 1
    assert root["predicted_vector_flops"] == 3  # Fraction(10, 3) stored rounded
    assert root["rel_error_flops"] == pytest.approx(1 / BIG)
    assert root["rel_error_vector_flops"] == math.inf  # measured 8, reconcile said "infinite"
    assert root["wall_time_s"] == 0.25 and fc2["wall_time_s"] is None
    assert root["measured_peak_activation_bytes"] == 64
    assert json.loads(root["inputs"]) == {"args": [{"shape": [2, 16, 4], "dtype": "float32"}],
                                          "kwargs": {"scale": 0.5}}
    assert json.loads(root["attributes"]) == {"in_features": 4}
    assert (fc2["module_path"], fc2["class_name"], fc2["formula_key"]) == ("fc2", "Linear", LINEAR)
    assert (fc2["measured_flops"], fc2["predicted_flops"]) == (100, 150)
    assert fc2["rel_error_flops"] == 0.5
    assert fc2["status"] == "mismatch" and fc2["error"] is None
    assert act["predicted_flops"] is None and act["rel_error_flops"] is None
    assert act["error"] == "bind failed: no input[1]"

    assert rows(db, "SELECT call_id, op, count, flops, vector_flops, bytes_read, bytes_written "
                    "FROM ops ORDER BY call_id NULLS FIRST, op") == [
        (None, "aten.embedding", 2, 0, 0, 8, 16), (0, "aten.add", 1, 0, 32, 128, 64),
        (1, "aten.addmm", 1, 100, 0, 96, 64), (2, "aten.addmm", 1, 100, 0, 96, 64),
        (3, "aten.gelu", 1, 0, 8, 64, 64)]
    assert rows(db, "SELECT op, count FROM uncovered_ops") == [("aten.weird", 3)]
    formulas = rows(db, "SELECT formula_key, layer, status, entry FROM formulas ORDER BY 1")
    assert [(k, layer, status) for k, layer, status, _ in formulas] == [
        (GELU, "user", "validated"), (LINEAR, "builtin", "validated")]
    assert json.loads(formulas[1][3]) == formula_entry("torch.nn.Linear")

    listed = Store(db).list_runs(10)
    assert [r["run_id"] for r in listed] == [run_id]
    assert listed[0]["measured_flops"] == BIG and listed[0]["coverage_flops"] == 0.75


def test_views_computed_by_hand(db: Path) -> None:
    store = Store(db)
    run_a = store.write_run(meta("a"), *synthetic(0.0, 0.5), FORMULAS)
    run_b = store.write_run(meta("b"), *synthetic(0.25, 0.0), FORMULAS)
    # Linear rel errors (flops): a: 0.0, 0.5; b: 0.25, 0.0 -> mean 0.1875, max 0.5.
    cols, (lin,) = store.query(f"SELECT * FROM formula_accuracy WHERE formula_key = '{LINEAR}'")
    lin_row = dict(zip(cols, lin))
    assert (lin_row["calls"], lin_row["runs"]) == (4, 2)
    assert lin_row["mean_rel_error_flops"] == pytest.approx(0.1875)
    assert lin_row["max_rel_error_flops"] == pytest.approx(0.5)
    assert lin_row["max_rel_error_bytes_read"] == 0.0
    assert (lin_row["exact"], lin_row["within_tolerance"], lin_row["mismatches"]) == (2, 0, 2)
    # GELU never evaluated: counted as calls with errors, no mean, not hidden.
    _, (gelu,) = store.query("SELECT calls, runs, mean_rel_error_flops, mismatches, errors "
                             f"FROM formula_accuracy WHERE formula_key = '{GELU}'")
    assert gelu == (2, 2, None, 2, 2)
    # The root has no formula: it is not in formula_accuracy but in uncovered_classes.
    assert store.query("SELECT count(*) FROM formula_accuracy WHERE formula_key = 'toy__Toy'"
                       )[1] == [(0,)]
    assert store.query("SELECT calls, self_flops, self_vector_flops, self_bytes FROM "
                       "uncovered_classes WHERE run_id = ?", [run_a])[1] == [(1, 0, 32, 192)]

    cols, totals = store.query("SELECT * FROM run_totals ORDER BY model_id")
    a, b = (dict(zip(cols, r)) for r in totals)
    assert (a["run_id"], b["run_id"]) == (run_a, run_b)
    assert (a["calls"], a["mismatches"], a["no_formula"]) == (4, 2, 1)
    assert (b["calls"], b["mismatches"], b["no_formula"]) == (4, 2, 1)
    assert a["rel_error_flops"] == pytest.approx(1 / BIG)
    assert a["rel_error_bytes_read"] == 0.0
    assert (a["measured_flops"], a["predicted_flops"], a["coverage_flops"]) == (BIG, BIG + 1, 0.75)


def test_predicted_run(db: Path) -> None:
    store = Store(db)
    points = [{"batch_size": 1, "flops": 10, "vector_flops": 1, "bytes_read": 2,
               "bytes_written": 3, "activation_bytes": 4, "peak_activation_bytes": 50,
               "weight_bytes": 7, "time_s": 0.5, "device_name": "H100"},
              {"batch_size": 4, "predicted_flops": 40, "vector_flops": 4, "bytes_read": 8,
               "bytes_written": 12, "activation_bytes": Fraction(33, 2),
               "peak_activation_bytes": 200, "weight_bytes": 7}]
    run_id = store.write_predicted_run(meta("p", batch_size=1, seq_len=128), points)
    cols, (run,) = store.query("SELECT * FROM run_totals WHERE run_id = ?", [run_id])
    total = dict(zip(cols, run))
    assert total["kind"] == "predicted" and total["calls"] == 0
    assert (total["measured_flops"], total["predicted_flops"], total["rel_error_flops"]) == (
        None, 50, None)
    assert (total["predicted_activation_bytes"], total["peak_activation_bytes"],
            total["weight_bytes"], total["coverage_flops"]) == (20, 200, 7, None)
    got = store.query("SELECT point, phase, batch_size, seq_len, kv_len, predicted_flops, "
                      "predicted_peak_activation_bytes, time_s, extra FROM predictions "
                      "ORDER BY point")[1]
    assert got == [(0, "prefill", 1, 128, 0, 10, 50, 0.5, '{"device_name":"H100"}'),
                   (1, "prefill", 4, 128, 0, 40, 200, None, None)]
    assert store.list_runs(5)[0]["kind"] == "predicted"
    with pytest.raises(ValueError):
        store.write_predicted_run(meta(), [])


def test_write_speed_5000_calls(db: Path) -> None:
    n = 5000
    calls = [call(i, None if i == 0 else 0, f"m.{i}", "Linear", LINEAR, 10,
                  {"aten.mm": OpStat(1, 10, 0, 8, 8), "aten.add": OpStat(1, 0, 4, 8, 8)})
             for i in range(n)]
    results = [CallResult(i, LINEAR, "exact", metrics(10), metrics(10), metrics(0.0))
               for i in range(n)]
    recon = Reconciliation(results, metrics(10), metrics(10), {"flops": 1.0, "bytes": 1.0})
    start = time.perf_counter()
    run_id = Store(db).write_run(meta(), Trace(calls=calls), recon, {})
    elapsed = time.perf_counter() - start
    counts = count_rows(db, run_id)
    assert (counts["calls"], counts["ops"]) == (n, 2 * n)
    assert elapsed < 10, f"writing {n} calls took {elapsed:.1f} s"  # ~0.6 s on a slow box


# --- atomicity ---------------------------------------------------------------------------------

def test_failed_write_leaves_no_partial_run(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(db)
    kept = store.write_run(meta("kept"), *synthetic(0.0, 0.5), FORMULAS)
    before = count_rows(db, kept)

    def boom(*args: Any) -> None:
        raise RuntimeError("disk on fire")

    # Python failure after runs, calls, ops and uncovered_ops were inserted.
    monkeypatch.setattr(store_mod, "new_run_id", lambda: "failed-run")
    monkeypatch.setattr(store_mod, "_insert_formulas", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.write_run(meta("lost"), *synthetic(0.0, 0.5), FORMULAS)
    assert count_rows(db, "failed-run") == dict.fromkeys(TABLES, 0)
    monkeypatch.undo()

    # DuckDB failure midway (duplicate call_id violates the calls key after runs was inserted).
    monkeypatch.setattr(store_mod, "new_run_id", lambda: "failed-run-2")
    trace, recon = synthetic(0.0, 0.5)
    trace.calls[2].call_id = recon.calls[2].call_id = 1
    with pytest.raises(StoreError, match="nothing was written"):
        store.write_run(meta("lost"), trace, recon, FORMULAS)
    assert count_rows(db, "failed-run-2") == dict.fromkeys(TABLES, 0)
    assert count_rows(db, kept) == before
    assert [r["run_id"] for r in store.list_runs()] == [kept]


def test_reconciliation_must_match_trace(db: Path) -> None:
    trace, recon = synthetic(0.0, 0.0)
    recon.calls.pop()
    with pytest.raises(StoreError, match="calls without a result: \\[3\\]"):
        Store(db).write_run(meta(), trace, recon, {})
    assert not db.exists()


# --- versions, migration, damaged files --------------------------------------------------------

V0_RUNS = """CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL,
    model_id VARCHAR NOT NULL, config_hash VARCHAR, phase VARCHAR, batch_size INTEGER,
    seq_len INTEGER, kv_len INTEGER, dtype VARCHAR, device VARCHAR,
    measured_flops HUGEINT, measured_vector_flops HUGEINT, measured_bytes_read HUGEINT,
    measured_bytes_written HUGEINT, measured_activation_bytes HUGEINT,
    predicted_flops HUGEINT, predicted_vector_flops HUGEINT, predicted_bytes_read HUGEINT,
    predicted_bytes_written HUGEINT, predicted_activation_bytes HUGEINT)"""


@pytest.mark.parametrize("with_meta", [True, False])
def test_version_0_database_is_migrated(db: Path, with_meta: bool) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(V0_RUNS)
        con.execute("INSERT INTO runs (run_id, created_at, model_id, phase, measured_flops) "
                    "VALUES ('old-run', TIMESTAMP '2024-01-01 00:00:00', 'gpt2', 'prefill', 42)")
        if with_meta:
            con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            con.execute("INSERT INTO meta VALUES ('schema_version', '0')")
    store = Store(db)
    before = digest(db)
    with pytest.raises(StoreError, match="lm-predictor migrate"):
        store.list_runs()  # a read never migrates
    assert digest(db) == before
    assert store.migrate() == (0, SCHEMA_VERSION)
    (old,) = store.list_runs()
    assert (old["run_id"], old["kind"], old["measured_flops"]) == ("old-run", "traced", 42)
    assert rows(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)]
    new = store.write_run(meta(), *synthetic(0.0, 0.5), FORMULAS)
    store.write_predicted_run(meta(), [{"flops": 1}])
    got = store.query("SELECT run_id, kind, calls, coverage_flops FROM run_totals "
                      "ORDER BY created_at")[1]
    assert got[:2] == [("old-run", "traced", 0, None), (new, "traced", 4, 0.75)]


def test_failed_migration_changes_nothing(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(V0_RUNS)
    before = rows(db, "SELECT column_name FROM information_schema.columns "
                      "WHERE table_name = 'runs'")

    def half_migration(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("ALTER TABLE runs ADD COLUMN kind VARCHAR")
        con.execute("SELECT * FROM no_such_table")

    monkeypatch.setitem(schema_mod.MIGRATIONS, 0, half_migration)
    with pytest.raises(StoreError, match="could not migrate .* from schema 0 to 1 "
                                         "\\(the file is unchanged\\)"):
        Store(db).write_predicted_run(meta(), [{"flops": 1}])
    assert rows(db, "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'runs'") == before
    assert rows(db, "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_name IN ('meta', 'calls')") == [(0,)]


def test_newer_database_is_refused_untouched(db: Path, tmp_path: Path) -> None:
    Store(db).write_run(meta(), *synthetic(0.0, 0.0), FORMULAS)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = digest(db)
    files = sorted(tmp_path.iterdir())
    store = Store(db)
    for attempt in (lambda: store.write_run(meta(), *synthetic(0.0, 0.0), FORMULAS),
                    lambda: store.list_runs(), lambda: store_mod.connect(db).close(),
                    lambda: sql_cmd.cmd_sql(sql_args("SELECT 1", db))):
        with pytest.raises(StoreError) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message and str(db) in message
        assert "schema 99" in message and "upgrade lm-predictor" in message
    assert digest(db) == before and sorted(tmp_path.iterdir()) == files


@pytest.mark.parametrize("content", [b"", b"not a database\n" * 300])
def test_corrupt_file_is_refused_untouched(db: Path, tmp_path: Path, content: bytes) -> None:
    db.write_bytes(content)
    store = Store(db)
    for attempt in (lambda: store.write_run(meta(), *synthetic(0.0, 0.0), FORMULAS),
                    lambda: store.list_runs(), lambda: store_mod.connect(db).close(),
                    lambda: sql_cmd.cmd_runs(runs_args(db))):
        with pytest.raises(StoreError) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message and str(db) in message
        assert "not a DuckDB database" in message and "--db" in message
    assert db.read_bytes() == content and sorted(tmp_path.iterdir()) == [db]


def test_foreign_duckdb_database_is_refused(db: Path) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE sales (id INTEGER)")
    before = digest(db)
    with pytest.raises(StoreError, match="not an LM-Predictor run database \\(tables: sales\\)"):
        Store(db).write_predicted_run(meta(), [{"flops": 1}])
    assert digest(db) == before


# --- concurrency -------------------------------------------------------------------------------

# Loads store, results and records without their packages' __init__ (which imports torch), so
# each writer starts in well under a second.
WRITER = textwrap.dedent("""
    import sys, time, types
    from pathlib import Path
    repo, db, name, go = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
    for pkg in ("lm_predictor", "tracing"):
        module = types.ModuleType(pkg)
        module.__path__ = [str(repo / pkg)]
        sys.modules[pkg] = module
    from lm_predictor.results import METRICS, CallResult, Reconciliation, RunMeta
    from lm_predictor.store import Store
    from tracing.records import CallRecord, Counters, OpStat, Trace
    calls = [CallRecord(i, None, 0, f"m{i}", "Linear", "torch__nn__Linear", (), {}, None, {},
                        inclusive=Counters(flops=i), ops={"aten.mm": OpStat(1, i, 0, 1, 1)})
             for i in range(300)]
    results = [CallResult(i, "torch__nn__Linear", "exact", {m: i for m in METRICS},
                          {m: i for m in METRICS}, {m: 0.0 for m in METRICS}) for i in range(300)]
    recon = Reconciliation(results, {m: 1 for m in METRICS}, {m: 1 for m in METRICS},
                           {"flops": 1.0, "bytes": 1.0})
    meta = RunMeta(name, "h", "prefill", 1, 8, 0, "float32", "meta")
    while not go.exists():
        time.sleep(0.01)
    for _ in range(3):
        Store(db).write_run(meta, Trace(calls=calls), recon, {})
    print("done", name)
""")


def test_two_processes_write_concurrently(db: Path, tmp_path: Path) -> None:
    Store(db).write_predicted_run(meta("seed"), [{"flops": 1}])  # schema exists
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(REPO), str(db), name, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("writer-a", "writer-b")]
    # Hold the file open in this process while the writers start: they must wait and retry.
    con = duckdb.connect(str(db))
    go.touch()
    time.sleep(1.0)
    con.close()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    got = rows(db, "SELECT model_id, count(*) FROM runs GROUP BY model_id ORDER BY 1")
    assert got == [("seed", 1), ("writer-a", 3), ("writer-b", 3)]
    assert rows(db, "SELECT count(*), count(DISTINCT run_id) FROM calls") == [(1800, 6)]


def test_lock_held_too_long_is_a_clear_error(db: Path) -> None:
    Store(db).write_predicted_run(meta("seed"), [{"flops": 1}])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('ready', flush=True); sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        start = time.monotonic()
        with pytest.raises(StoreError, match="is locked by another process .* for more than "
                                             "0.5 s; close its connection") as info:
            Store(db, lock_timeout_s=0.5).write_predicted_run(meta("late"), [{"flops": 1}])
        assert "\n" not in str(info.value) and time.monotonic() - start < 5
    finally:
        holder.communicate("")  # closes stdin: the holder exits and releases the lock
    Store(db).write_predicted_run(meta("late"), [{"flops": 1}])
    assert len(Store(db).list_runs()) == 2


# --- CLI ---------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lm-predictor")
    sub = p.add_subparsers(dest="command", required=True)
    sql_cmd.register_sql(sub)
    sql_cmd.register_runs(sub)
    return p


def sql_args(query: str, db: Path, *flags: str) -> argparse.Namespace:
    return parser().parse_args(["sql", query, "--db", str(db), *flags])


def runs_args(db: Path, *flags: str) -> argparse.Namespace:
    return parser().parse_args(["runs", "--db", str(db), *flags])


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def test_cli_sql_formats(db: Path, capsys: pytest.CaptureFixture[str], wide: None) -> None:
    run_id = Store(db).write_run(meta(), *synthetic(0.0, 0.5), FORMULAS)
    query = "SELECT call_id, module_path, rel_error_flops, inputs FROM calls ORDER BY call_id"
    args = sql_args(query, db)
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "4 rows" in out and "fc2" in out and "0.5" in out and "NULL" in out

    assert sql_cmd.cmd_sql(sql_args(query, db, "--json")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[2] == {"call_id": 2, "module_path": "fc2", "rel_error_flops": 0.5,
                       "inputs": {"args": [{"shape": [2, 16, 4], "dtype": "float32"}],
                                  "kwargs": {"scale": 0.5}}}
    assert data[3]["rel_error_flops"] is None

    assert sql_cmd.cmd_sql(sql_args("SELECT run_id, measured_flops, created_at FROM runs",
                                    db, "--csv")) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["run_id", "measured_flops", "created_at"]
    assert table[1][:2] == [run_id, str(BIG)]

    assert sql_cmd.cmd_sql(sql_args("SELECT * FROM run_totals", db)) == 0  # 32 columns
    out = capsys.readouterr().out
    assert "1 row, one block per row" in out and "rel_error_flops" in out and run_id in out

    assert sql_cmd.cmd_sql(sql_args("SELECT rel_error_vector_flops AS r FROM calls "
                                    "WHERE call_id = 0", db, "--json")) == 0
    assert json.loads(capsys.readouterr().out) == [{"r": "inf"}]


def test_cli_sql_errors_and_write(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Store(db).write_run(meta(), *synthetic(0.0, 0.5), FORMULAS)
    with pytest.raises(StoreError) as info:
        sql_cmd.cmd_sql(sql_args("SELECT nope FROM runs", db))
    assert str(info.value).startswith("SQL error: Binder Error")
    assert "\n" not in str(info.value)
    with pytest.raises(StoreError, match="--write"):
        sql_cmd.cmd_sql(sql_args("DELETE FROM ops", db))
    assert rows(db, "SELECT count(*) FROM ops") == [(5,)]
    assert sql_cmd.cmd_sql(sql_args("DELETE FROM ops WHERE call_id IS NULL", db, "--write")) == 0
    capsys.readouterr()
    assert rows(db, "SELECT count(*) FROM ops") == [(4,)]
    with pytest.raises(SystemExit):  # --json and --csv are exclusive (argparse usage error)
        sql_args("SELECT 1", db, "--json", "--csv")
    capsys.readouterr()


def test_cli_runs(db: Path, capsys: pytest.CaptureFixture[str], wide: None) -> None:
    store = Store(db)
    first = store.write_run(meta("first"), *synthetic(0.0, 0.5), FORMULAS)
    second = store.write_predicted_run(meta("second"), [{"flops": 7}])
    args = runs_args(db)
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "2 latest runs" in out and first in out and second in out
    assert " 75 " in out  # coverage in % (the header says so)
    assert "1.18 Z" in out  # BIG measured FLOPs with an SI prefix, 3 significant digits
    assert "predicted" in out
    assert (sql_cmd.si(999), sql_cmd.si(1500), sql_cmd.si(None)) == ("999", "1.5 k", "")

    assert sql_cmd.cmd_runs(runs_args(db, "--json", "--limit", "1")) == 0
    (latest,) = json.loads(capsys.readouterr().out)
    assert latest["run_id"] == second and latest["kind"] == "predicted"
    assert latest["predicted_flops"] == 7 and latest["measured_flops"] is None
    assert latest["status"] == "predicted"
    assert isinstance(latest["created_at"], str)


def test_cli_missing_database_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "runs.duckdb"
    for attempt in (lambda: sql_cmd.cmd_sql(sql_args("SELECT 1", missing)),
                    lambda: sql_cmd.cmd_sql(sql_args("SELECT 1", missing, "--write")),
                    lambda: sql_cmd.cmd_runs(runs_args(missing)),
                    lambda: Store(missing).list_runs()):
        with pytest.raises(StoreError) as info:
            attempt()
        message = str(info.value)
        assert message.startswith("no runs are stored yet") and "lm-predictor analyze" in message
        assert str(missing) in message and "\n" not in message
    assert not missing.exists() and not missing.parent.exists()
