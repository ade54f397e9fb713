"""Reading and writing formula database files: validated loads, atomic locked writes.

A database file is JSON matching `schema.FormulaDatabase`. Loads fail with a one-line
`DatabaseError` naming the file, the problem and the fix (a corrupt or schema-invalid file is
never rewritten). Writes take a `filelock` lock beside the file, re-read the current contents
under the lock (so two concurrent writers both land), write a temporary file in the same
directory, fsync it and `os.replace` it over the original: a reader sees the old or the new
file, never a truncated one.

Example:
    >>> save_entry(Path("formulas.json"), entry)      # creates or updates the file
    >>> load_database(Path("formulas.json")).entries.keys()
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout
from pydantic import ValidationError

from formula_db.errors import DatabaseError
from formula_db.schema import FormulaDatabase, FormulaEntry

LOCK_TIMEOUT_S = 30.0


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def parse_database(text: str, origin: str) -> FormulaDatabase:
    """Validate database JSON text; `origin` names it in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatabaseError(f"formula database {origin} is corrupt (invalid JSON at line "
                            f"{exc.lineno} column {exc.colno}: {exc.msg}); fix it or move it "
                            f"away — it was not modified") from None
    except RecursionError:
        raise DatabaseError(f"formula database {origin} is corrupt (JSON nested too deeply to "
                            f"read); fix it or move it away — it was not modified") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise DatabaseError(f"formula database {origin} is corrupt ({str(exc)[:120]}); fix it "
                            f"or move it away — it was not modified") from None
    if not isinstance(data, dict):
        raise DatabaseError(f"formula database {origin} is not a JSON object (found "
                            f"{type(data).__name__}); fix it or move it away — it was not "
                            f"modified")
    try:
        return FormulaDatabase.model_validate(data)
    except ValidationError as exc:
        raise DatabaseError(f"formula database {origin} does not match the schema "
                            f"({_first_error(exc)}); fix the entry or move the file away — it "
                            f"was not modified") from None
    except RecursionError:
        raise DatabaseError(f"formula database {origin} is nested too deeply to validate; fix "
                            f"it or move it away — it was not modified") from None


def load_database(path: Path, missing_ok: bool = True) -> FormulaDatabase:
    """Load and validate a database file; a missing file is an empty database if `missing_ok`."""
    if not path.exists():
        if missing_ok:
            return FormulaDatabase()
        raise DatabaseError(f"formula database {path} does not exist; check the path or "
                            f"LM_PREDICTOR_FORMULAS")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(f"cannot read formula database {path} ({exc}); check the file") from None
    return parse_database(text, str(path))


def dump_database(db: FormulaDatabase) -> str:
    """Stable JSON text of a database (sorted keys, defaults kept so files are self-describing)."""
    data = db.model_dump(mode="json")
    data["entries"] = dict(sorted(data["entries"].items()))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same directory and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _lock(path: Path, timeout: float) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=timeout)


def save_entries(path: Path, entries: list[FormulaEntry], timeout: float = LOCK_TIMEOUT_S) -> None:
    """Add or replace entries in the database at `path`, atomically and under its lock."""
    try:
        with _lock(path, timeout):
            db = load_database(path)
            merged = dict(db.entries)
            for entry in entries:
                merged[entry.key] = entry
            new = FormulaDatabase.model_validate(
                {"schema_version": db.schema_version,
                 "entries": {k: v.model_dump(mode="json") for k, v in merged.items()}})
            write_atomic(path, dump_database(new))
    except Timeout:
        raise DatabaseError(f"formula database {path} is locked by another process for more than "
                            f"{timeout:g}s; retry, or remove {path}.lock if no writer is "
                            f"running") from None


def save_entry(path: Path, entry: FormulaEntry, timeout: float = LOCK_TIMEOUT_S) -> None:
    """Add or replace one entry (see save_entries)."""
    save_entries(path, [entry], timeout)


def remove_entry(path: Path, key: str, timeout: float = LOCK_TIMEOUT_S) -> bool:
    """Remove an entry by key; returns whether it was there."""
    try:
        with _lock(path, timeout):
            db = load_database(path)
            if key not in db.entries:
                return False
            entries = {k: v for k, v in db.entries.items() if k != key}
            write_atomic(path, dump_database(FormulaDatabase(entries=entries)))
            return True
    except Timeout:
        raise DatabaseError(f"formula database {path} is locked by another process for more than "
                            f"{timeout:g}s; retry, or remove {path}.lock if no writer is "
                            f"running") from None
