"""Database files: atomic, locked writes; corrupt files are reported and never rewritten."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from filelock import FileLock

import formula_db
from formula_db.errors import DatabaseError
from formula_db.registry import Layer, Registry, user_db_path
from formula_db.store import (dump_database, load_database, remove_entry, save_entries,
                              save_entry)

REPO = Path(formula_db.__file__).resolve().parent.parent


def test_save_creates_file_and_reloads_equal(tmp_path, make_entry, P):
    path = tmp_path / "nested" / "formulas.json"
    one = make_entry("st.One", ["a", P("b", default=2, bind="module.b")], flops="${a} * ${b}",
                     breakdown=[{"name": "x", "kind": "useful", "flops": "${a}"}])
    save_entry(path, one)
    assert path.exists()
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2 and list(data["entries"]) == ["st__One"]
    db = load_database(path)
    assert db.entries["st__One"] == one
    assert db.entries["st__One"].model_dump() == one.model_dump()
    two = make_entry("st.Two", ["c"], bytes_read="${c} + 1")
    save_entry(path, two)
    db = load_database(path)
    assert sorted(db.entries) == ["st__One", "st__Two"]
    # replacing an entry keeps the other
    one_v2 = make_entry("st.One", ["a"], flops="${a} * 3")
    save_entry(path, one_v2)
    db = load_database(path)
    assert db.entries["st__One"].flops == "${a} * 3" and db.entries["st__Two"] == two
    assert path.read_text() == dump_database(db)     # stable text
    # no temporary files or stray copies remain beside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["formulas.json", "formulas.json.lock"]


def test_missing_file(tmp_path):
    assert load_database(tmp_path / "none.json").entries == {}
    with pytest.raises(DatabaseError, match="does not exist"):
        load_database(tmp_path / "none.json", missing_ok=False)


def test_remove_entry(tmp_path, make_entry):
    path = tmp_path / "f.json"
    save_entries(path, [make_entry("st.A", []), make_entry("st.B", [])])
    assert remove_entry(path, "st__A") is True
    assert remove_entry(path, "st__A") is False
    assert list(load_database(path).entries) == ["st__B"]


@pytest.mark.parametrize("content, problem", [
    ('{"schema_version": 2, "entries": {', "is corrupt (invalid JSON at line 1"),
    ('{"schema_version": 2, "entries": {"st__X": {"full_class_name": "st.Y"}}}',
     "does not match the schema"),
    ('{"schema_version": 2, "entries": {}, "extra": 1}', "does not match the schema"),
])
def test_corrupt_file_is_reported_and_untouched(tmp_path, make_entry, content, problem):
    path = tmp_path / "formulas.json"
    path.write_bytes(content.encode())
    before = path.read_bytes()
    with pytest.raises(DatabaseError) as info:
        load_database(path)
    msg = str(info.value)
    assert str(path) in msg and problem in msg and "it was not modified" in msg
    assert "\n" not in msg
    with pytest.raises(DatabaseError) as info:
        save_entry(path, make_entry("st.New", ["a"], flops="${a}"))
    assert str(path) in str(info.value) and "it was not modified" in str(info.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(DatabaseError):
        Registry.default(path)


def test_schema_invalid_entry_message_names_location(tmp_path):
    path = tmp_path / "f.json"
    bad = {"full_class_name": "st.Bad", "parameters": [], "flops": "${zz}",
           "vector_flops": "0", "bytes_read": "0", "bytes_written": "0", "activation_bytes": "0"}
    path.write_text(json.dumps({"schema_version": 2, "entries": {"st__Bad": bad}}))
    with pytest.raises(DatabaseError) as info:
        load_database(path)
    msg = str(info.value)
    assert "entries.st__Bad" in msg and "${zz}" in msg and "it was not modified" in msg


def test_lock_timeout_is_a_database_error(tmp_path, make_entry):
    path = tmp_path / "f.json"
    save_entry(path, make_entry("st.A", []))
    before = path.read_bytes()
    lock = FileLock(str(path) + ".lock")
    with lock:
        with pytest.raises(DatabaseError) as info:
            save_entry(path, make_entry("st.B", []), timeout=0.2)
    msg = str(info.value)
    assert "is locked by another process for more than 0.2s" in msg and str(path) in msg
    assert path.read_bytes() == before
    save_entry(path, make_entry("st.B", []), timeout=0.2)      # lock released: lands
    assert sorted(load_database(path).entries) == ["st__A", "st__B"]


# Each writer is a fresh interpreter. The store never touches torch, but formula_db.meta imports
# it (several seconds on a small machine), so the writers get a stand-in module to stay fast.
WRITER = textwrap.dedent("""
    import sys, time, types
    from pathlib import Path
    stub = types.ModuleType("torch")
    stub.Tensor, stub.dtype, stub.Size = type("Tensor", (), {}), type("dtype", (), {}), tuple
    sys.modules["torch"] = stub
    from formula_db.schema import FormulaEntry
    from formula_db.store import save_entry

    path, tag, start = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    metrics = ("flops", "vector_flops", "bytes_read", "bytes_written", "activation_bytes")
    entries = [FormulaEntry.model_validate(
        {"full_class_name": f"conc.{tag}{i}",
         "parameters": [{"name": "a", "type": "int", "description": "a"}],
         **{m: f"${{a}} * {i}" for m in metrics}}) for i in range(10)]
    while not start.exists():
        time.sleep(0.005)
    for entry in entries:
        save_entry(path, entry)
""")


def test_concurrent_writers_both_land(tmp_path):
    path = tmp_path / "shared.json"
    start = tmp_path / "go"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, str(script), str(path), tag, str(start)],
                              env=env, cwd=str(REPO), stderr=subprocess.PIPE)
             for tag in ("P", "Q")]
    start.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    db = load_database(path)
    expected = sorted(f"conc__{tag}{i}" for tag in ("P", "Q") for i in range(10))
    assert sorted(db.entries) == expected
    assert db.entries["conc__Q7"].flops == "${a} * 7"
    json.loads(path.read_text())


def test_user_db_path(monkeypatch, tmp_path):
    monkeypatch.setenv("LM_PREDICTOR_FORMULAS", str(tmp_path / "env.json"))
    assert user_db_path() == tmp_path / "env.json"
    assert user_db_path(tmp_path / "x.json") == tmp_path / "x.json"
    monkeypatch.delenv("LM_PREDICTOR_FORMULAS")
    assert user_db_path().name == "formulas.json"


def test_registry_default_reads_user_layer(tmp_path, make_entry):
    path = tmp_path / "f.json"
    save_entry(path, make_entry("st.UserOnly", ["a"], flops="${a} + 1"))
    reg = Registry.default(path)
    names = [layer.name for layer in reg.layers]
    assert names[-1] == "user" and set(names[:-1]) == {"builtin"}  # module_db.json + zoo/*.json
    assert isinstance(reg.layers[-1], Layer) and reg.layers[-1].path == path
    assert reg.source_of("st__UserOnly") == "user"
    assert reg.evaluate("st.UserOnly", "flops", {"a": 41}) == 42
