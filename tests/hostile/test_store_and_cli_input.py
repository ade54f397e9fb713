"""Issue 13 regressions outside the formula language: the `sql` sandbox, damaged or foreign
database files, read-only commands that never migrate, and bad command lines (one line, the
documented exit code, no file or folder created)."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import duckdb
import pytest

from lm_predictor.cli import main
from lm_predictor.errors import EXIT_ENVIRONMENT, EXIT_INPUT, EXIT_STORE, EXIT_USAGE
from lm_predictor.store import Store


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    """A real run database with one predicted run in it."""
    path = tmp_path / "runs.duckdb"
    assert main(["predict", "--model-id", "gpt2", "--seq-len", "8", "--db", str(path)]) == 0
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("query, reaches", [
    ("COPY runs TO '{tmp}/stolen.csv'", "stolen.csv"),
    ("EXPORT DATABASE '{tmp}/exported'", "exported"),
    ("SELECT * FROM read_text('/etc/hostname')", None),
    ("SELECT * FROM read_csv('/proc/self/environ')", None),
    ("INSTALL sqlite", None),
    ("ATTACH '{tmp}/other.duckdb' AS other", "other.duckdb"),
    ("SET enable_external_access = true", None),
])
@pytest.mark.parametrize("write", [False, True])
def test_sql_cannot_reach_the_file_system(db: Path, tmp_path: Path, query: str,
                                          reaches: str | None, write: bool,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    before = digest(db)
    listing = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(capsys, "sql", query.format(tmp=tmp_path), "--db", str(db),
                         *(["--write"] if write else []))
    assert code == EXIT_STORE and out == "" and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written beside it
    assert digest(db) == before


def test_sql_write_changes_the_store_only(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run(capsys, "sql", "DELETE FROM predictions", "--db", str(db))[0] == EXIT_STORE
    assert run(capsys, "sql", "DELETE FROM predictions", "--db", str(db), "--write")[0] == 0
    assert Store(db).query("SELECT count(*) FROM predictions")[1] == [(0,)]


def test_empty_sql_is_one_line(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code, _, err = run(capsys, "sql", "  ", "--db", str(db))
    assert code == EXIT_STORE and "empty SQL" in err and err.count("\n") == 1


def _damaged(db: Path, how: str) -> Path:
    data = db.read_bytes()
    out = db.with_name(f"{how}.duckdb")
    if how == "truncated":
        out.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # a checksum error in a data block
        with duckdb.connect(str(db)) as con:
            block = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0]
        body = bytearray(data)
        for offset in range(3 * block, len(body), block):  # every data block: header blocks kept
            body[offset + 100] ^= 0xFF
        out.write_bytes(bytes(body))
    elif how == "sqlite":
        con = sqlite3.connect(out)
        con.execute("CREATE TABLE runs (run_id TEXT)")
        con.commit()
        con.close()
    else:
        out.write_bytes(b"\x00" * 100 + b"garbage" * 100)
    return out


@pytest.mark.parametrize("how", ["truncated", "flipped", "sqlite", "garbage"])
@pytest.mark.parametrize("command", [["runs"], ["sql", "SELECT count(*) FROM calls"],
                                     ["predict", "--model-id", "gpt2", "--seq-len", "8"]])
def test_damaged_or_foreign_files_are_one_line_and_untouched(
        db: Path, how: str, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    bad = _damaged(db, how)
    before = digest(bad)
    capsys.readouterr()
    code, out, err = run(capsys, *command, "--db", str(bad))
    assert code == EXIT_STORE, err
    assert err.count("\n") == 1 and str(bad) in err
    assert digest(bad) == before


def test_read_only_commands_never_migrate(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with duckdb.connect(str(db)) as con:  # pretend the file is from schema 2
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        con.execute("DROP TABLE agent_runs")
    before = digest(db)
    capsys.readouterr()
    for command in (["runs"], ["sql", "SELECT 1"]):
        code, _, err = run(capsys, *command, "--db", str(db))
        assert code == EXIT_STORE and "lm-predictor migrate" in err
        assert digest(db) == before
    assert run(capsys, "migrate", "--db", str(db))[0] == 0
    assert run(capsys, "runs", "--db", str(db), "--json")[0] == 0


@pytest.mark.parametrize("args, code", [
    (["analyze", "--model-id", "gpt2", "--device", "tpu"], EXIT_USAGE),
    (["analyze", "--model-id", "gpt2", "--batch-size", str(10**30)], EXIT_USAGE),
    (["analyze", "--model-id", "gpt2", "--rtol", "nan"], EXIT_USAGE),
    (["analyze", "--model-id", "gpt2", "--rtol", "-1"], EXIT_USAGE),
    (["predict", "--model-id", "gpt2", "--batch-size", "1," + str(10**30)], EXIT_USAGE),
])
def test_bad_flag_values_are_usage_errors(args: list[str], code: int,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == code
    assert "Traceback" not in capsys.readouterr().err


def test_missing_cuda_is_an_environment_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device in ("cuda", "cuda:99"):
        code, _, err = run(capsys, "analyze", "--model-id", "gpt2", "--seq-len", "4",
                           "--device", device, "--no-store")
        assert code == EXIT_ENVIRONMENT and "no CUDA device" in err and err.count("\n") == 1


def test_ignored_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["analyze", "--model-id", "gpt2", "--phase", "decode", "--kv-len", "8",
                  "--seq-len", "64", "--no-store"],
                 ["predict", "--model-id", "gpt2", "--phase", "decode", "--kv-len", "8",
                  "--seq-len", "64", "--no-store"]):
        code, _, err = run(capsys, *args)
        assert code == EXIT_USAGE and "--seq-len is not used" in err


def test_plot_into_a_missing_folder_creates_nothing(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.png"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--model-id", "gpt2", "--hardware", "H100-SXM", "--plot", str(target)])
    assert exc.value.code == EXIT_USAGE and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nonexistent").exists()


def test_unknown_model_and_bad_config_are_input_errors(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": "wide"}))
    for args in (["analyze", "--model-id", str(tmp_path / "nope")],
                 ["analyze", "--model-id", str(bad), "--no-store"],
                 ["predict", "--model-id", str(bad), "--no-store"]):
        code, _, err = run(capsys, *args)
        assert code == EXIT_INPUT and err.count("\n") == 1
