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
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from formula_db.errors import DatabaseError
from formula_db.files import LOCK_TIMEOUT_S, LockTimeout, locked, write_atomic
from formula_db.schema import FormulaDatabase, FormulaEntry

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


class LazyEntries(Mapping[str, FormulaEntry]):
    """Entries of a trusted database file, each validated (templates parsed) on first access.

    The builtin files are validated as a whole by the test suite; reading them lazily lets a
    command that needs three entries skip parsing two thousand templates. A damaged entry still
    fails, with the same one-line `DatabaseError`, when it is first used."""

    def __init__(self, raw: dict[str, Any], origin: str) -> None:
        self._raw = raw
        self._origin = origin
        self._done: dict[str, FormulaEntry] = {}

    def __getitem__(self, key: str) -> FormulaEntry:
        entry = self._done.get(key)
        if entry is None:
            try:
                entry = FormulaEntry.model_validate(self._raw[key])
            except ValidationError as exc:
                raise DatabaseError(f"formula database {self._origin} does not match the schema "
                                    f"(entries.{key}: {_first_error(exc)}); fix the entry — the "
                                    f"file was not modified") from None
            self._done[key] = entry
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def full_class_name(self, key: str) -> str:
        """An entry's class name without validating it."""
        done = self._done.get(key)
        return done.full_class_name if done else str(self._raw[key].get("full_class_name", ""))


def load_trusted(path: Path) -> FormulaDatabase:
    """A builtin database file with lazily validated entries (see `LazyEntries`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        raw = data["entries"]
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise TypeError("entries is not an object of objects")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatabaseError(f"builtin formula database {path} is damaged ({exc}); reinstall "
                            f"lm-predictor") from None
    return FormulaDatabase.model_construct(schema_version=data.get("schema_version", 2),
                                           entries=LazyEntries(raw, str(path)))


def full_class_name(entries: Mapping[str, FormulaEntry], key: str) -> str:
    """The class name of an entry, without validating a lazy one."""
    if isinstance(entries, LazyEntries):
        return entries.full_class_name(key)
    return entries[key].full_class_name


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


def _lock(path: Path, timeout: float) -> AbstractContextManager[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return locked(path, timeout)


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
    except LockTimeout as exc:
        raise DatabaseError(f"formula database {exc}") from None


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
    except LockTimeout as exc:
        raise DatabaseError(f"formula database {exc}") from None
