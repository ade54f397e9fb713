"""The DuckDB run database: every traced or predicted run, its calls, ops and formula snapshot.

Schema: `lm_predictor/store/schema.sql` (versions and migrations: `schema.py`) (tables runs, calls, ops, uncovered_ops, formulas,
predictions, estimates, meta; views formula_accuracy, run_totals, uncovered_classes,
time_error_by_class, calls_self, run_status), version `SCHEMA_VERSION`, stored in `meta`.

Semantics:
- The file is `settings.db_path(explicit)`: `--db PATH`, else `$LM_PREDICTOR_DB`, else
  `<user data dir>/lm-predictor/runs.duckdb`. Every SQL statement of the project lives in this package: writes
  here, SELECTs in `queries.py`, DDL in `schema.sql` and `schema.py`.
- A run is written in one transaction: on any exception it is rolled back and no row of it
  remains. Rows go in with one bulk `INSERT ... SELECT UNNEST(list)` per table, not row by row
  (a 5,000-call run takes about 0.6 s on a slow 2-core machine).
- DuckDB lets one process at a time open a file for writing. The connection is held only for
  the duration of one write or query; opening retries a lock conflict with backoff for up to
  `lock_timeout_s` (30 s), then raises a `StoreError` naming the file and the holder.
- Opening an older database migrates it (`MIGRATIONS`, in one transaction); a newer one, a
  corrupt file or a foreign DuckDB database raises a one-line `StoreError` and the file is left
  untouched. Reading (`query`, `list_runs`) never creates a missing file.

Limits: predicted values are stored as integers (fractional predictions rounded; relative errors
are computed before rounding). No foreign keys: deleting a run means deleting its rows from every
table in `TABLES` by run_id.

Example:
    >>> store = Store(db_path(None))
    >>> run_id = store.write_run(meta, trace, recon, formulas)
    >>> store.query("SELECT formula_key, max_rel_error_flops FROM formula_accuracy")
    (['formula_key', 'max_rel_error_flops'], [('torch__nn__Linear', 0.0)])
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import random
import re
import secrets
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import duckdb

from formula_db.units import METRICS
from lm_predictor.errors import StoreError
from lm_predictor.settings import DB_ENV, db_path
from lm_predictor.store.schema import (SCHEMA_VERSION, ensure_schema, one_line, read_schema_version,
                                       refuse_newer)

if TYPE_CHECKING:
    from lm_predictor.results import Reconciliation, RunMeta
    from tracing.records import Trace

LOCK_TIMEOUT_S = 30.0
TABLES = ("runs", "calls", "ops", "uncovered_ops", "formulas", "predictions",
          "estimates")  # keyed by run_id

Connection = duckdb.DuckDBPyConnection
Column = tuple[str, str, list[Any]]  # name, SQL element type, values





def missing_db_message(path: Path) -> str:
    return (f"no runs are stored yet: {path} does not exist. Create it by analyzing a model "
            f"('lm-predictor analyze --model-id gpt2 --db {path}'), or point --db / "
            f"${DB_ENV} at an existing database")


def new_run_id() -> str:
    """Sortable and unique: UTC time to the second plus 8 random hex digits."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


# --- connections -------------------------------------------------------------------------------

# Every connection: never install or load an extension behind the user's back (a foreign file
# would otherwise make DuckDB download one). `SANDBOX` adds what the `sql` command runs under:
# no file system access beyond the database itself, and a configuration nobody can change.
SAFE_CONFIG: dict[str, Any] = {"autoinstall_known_extensions": False,
                               "autoload_known_extensions": False}
SANDBOX: dict[str, Any] = {**SAFE_CONFIG, "enable_external_access": False,
                           "lock_configuration": True}
DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file


def check_header(path: Path) -> None:
    """StoreError for an existing non-empty file that is not a DuckDB database (read by its
    header, before DuckDB touches it)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    if head and head[8:12] != DUCKDB_MAGIC:
        kind = "an SQLite database" if head.startswith(b"SQLite format") else "not a DuckDB database"
        raise StoreError(f"{path} is {kind}, not an LM-Predictor run database; move it away or "
                         f"pass another --db / ${DB_ENV} (the file was not changed)")


def _open(path: Path, read_only: bool, timeout_s: float,
          config: dict[str, Any] | None = None) -> Connection:
    """duckdb.connect with retry on another process's lock, errors as StoreError."""
    if read_only and not path.exists():
        raise StoreError(missing_db_message(path))
    check_header(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config or SAFE_CONFIG)
        except duckdb.ConnectionException as exc:
            # This process already has the file open in the other mode: share that instance.
            if read_only and "different configuration" in str(exc):
                read_only = False
                continue
            raise StoreError(f"could not open {path}: {one_line(str(exc))}") from None
        except duckdb.Error as exc:
            message = str(exc)
            if "Could not set lock" not in message:
                raise StoreError(_open_error(path, message)) from None
            left = deadline - time.monotonic()
            if left <= 0:
                holder = re.search(r"held in (.*?)(?:\. See|$)", message)
                raise StoreError(f"{path} is locked by another process"
                                 f"{' (' + holder.group(1) + ')' if holder else ''} for more than "
                                 f"{timeout_s:g} s; close its connection (a notebook's "
                                 f"lm_predictor.connect()?) and retry") from None
            time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
            delay = min(delay * 2, 0.5)


def _open_error(path: Path, message: str) -> str:
    if ("not a valid DuckDB database" in message or "Could not read enough bytes" in message
            or "Corrupt database file" in message or "checksum" in message):
        return (f"{path} is not a DuckDB database (corrupt, or another kind of file); move it "
                f"away or pass another --db / ${DB_ENV}")
    return f"could not open {path}: {one_line(message)}"


def connect(path: str | os.PathLike[str] | None = None, read_only: bool = False) -> Connection:
    """An open connection to the run database, schema checked (and migrated), for notebooks.

    Close it when done: while it is open, other processes cannot write runs to the file.
    `read_only=False` creates a missing file; `read_only=True` raises StoreError for one."""
    return Store(path).open(read_only)


class Store:
    """The run database at `path` (default: `db_path(None)`)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.path = db_path(path)
        self.lock_timeout_s = lock_timeout_s

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Connection]:
        """A connection for one unit of work, closed (and the file lock released) on exit."""
        con = self.open(read_only)
        try:
            yield con
        finally:
            con.close()

    def open(self, read_only: bool = False, sandbox: bool = False) -> Connection:
        """An open connection, schema checked; the caller closes it.

        A writable connection creates the schema in a new file or migrates an older one. A
        read-only one never changes the file: an older schema is a StoreError naming the command
        that migrates (`lm-predictor migrate`). `sandbox` opens it as the `sql` command does:
        no file access beyond the database, configuration locked. A damaged file is detected
        here (its small tables are read in full) and left untouched."""
        con = _open(self.path, read_only, self.lock_timeout_s, SANDBOX if sandbox else None)
        try:
            version = read_schema_version(con, self.path)
            if version == SCHEMA_VERSION:
                con.execute("SELECT * FROM meta").fetchall()
                con.execute("SELECT * FROM runs").fetchall()
                return con
            refuse_newer(version, self.path)
            if read_only:
                raise StoreError(
                    f"{self.path} uses run database schema {version}; this version reads "
                    f"{SCHEMA_VERSION}. Migrate it first: 'lm-predictor migrate --db "
                    f"{self.path}' (read-only commands never change the file)")
            ensure_schema(con, self.path)
            return con
        except duckdb.Error as exc:
            con.close()
            raise StoreError(_open_error(self.path, str(exc))) from None
        except BaseException:
            con.close()
            raise

    def migrate(self) -> tuple[int | None, int]:
        """Bring the file to the current schema; returns (version before, version after)."""
        con = _open(self.path, True, self.lock_timeout_s)
        try:
            before = read_schema_version(con, self.path)
        except duckdb.Error as exc:
            raise StoreError(_open_error(self.path, str(exc))) from None
        finally:
            con.close()
        with self.connect(read_only=False):
            pass
        return before, SCHEMA_VERSION

    # --- writing ---------------------------------------------------------------------------

    def write_run(self, meta: RunMeta, trace: Trace, recon: Reconciliation,
                  formulas: dict[str, dict[str, Any]] | None = None,
                  estimates: list[dict[str, Any]] | None = None) -> str:
        """Store a traced, reconciled run with the formula entries it used; returns its run_id.

        `formulas` maps formula key -> entry JSON (`entry.model_dump(mode="json")`), optionally
        with a "layer" item naming the registry layer it came from. `estimates` are rows of the
        `estimates` table without run_id (`hardware.roofline.TraceEstimate.rows()`), written
        in the same transaction."""
        results = {r.call_id: r for r in recon.calls}
        missing = [c.call_id for c in trace.calls if c.call_id not in results]
        extra = sorted(set(results) - {c.call_id for c in trace.calls})
        if missing or extra:
            raise StoreError(f"the reconciliation does not match the trace (calls without a "
                             f"result: {missing[:5]}, results without a call: {extra[:5]}); "
                             f"reconcile the trace you store")
        run_id = new_run_id()
        run = _run_row(run_id, "traced", meta)
        run.update({f"measured_{m}": recon.measured_totals.get(m) for m in METRICS})
        run.update({f"predicted_{m}": _count(recon.predicted_totals.get(m)) for m in METRICS})
        run.update(peak_activation_bytes=recon.peak_activation_bytes or trace.peak_activation_bytes,
                   weight_bytes=trace.weight_bytes, buffer_bytes=trace.buffer_bytes,
                   coverage_flops=recon.coverage.get("flops"),
                   coverage_bytes=recon.coverage.get("bytes"), config=_json(trace.config))
        uncovered = recon.uncovered_ops or trace.uncovered_ops

        def write(con: Connection) -> None:
            _insert_runs(con, [run])
            _insert_calls(con, run_id, trace, results)
            _insert_ops(con, run_id, trace)
            _insert_uncovered_ops(con, run_id, uncovered)
            _insert_formulas(con, run_id, formulas or {})
            _insert_estimates(con, run_id, estimates or [])

        self._transaction(write, f"run {run_id} of {meta.model_id}")
        return run_id

    def write_estimates(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Add time estimates (rows as for `write_run`) to a stored run, in one transaction;
        rows for a (call, hardware) already estimated replace the old ones."""
        hardware = sorted({str(r["hardware"]) for r in rows})

        def write(con: Connection) -> None:
            if not con.execute("SELECT count(*) FROM runs WHERE run_id = ?",
                               [run_id]).fetchone()[0]:  # type: ignore[index]
                raise StoreError(f"no run {run_id!r} in {self.path}; list runs with "
                                 f"'lm-predictor runs'")
            con.execute("DELETE FROM estimates WHERE run_id = ? AND list_contains(?, hardware)",
                        [run_id, hardware])
            _insert_estimates(con, run_id, rows)

        self._transaction(write, f"estimates of run {run_id}")

    def write_predicted_run(self, meta: RunMeta, rows: list[dict[str, Any]]) -> str:
        """Store a predicted-only run (no measurement); returns its run_id.

        Each row is one point: optional `phase`, `batch_size`, `seq_len`, `kv_len` (default:
        `meta`'s), metrics by name (`flops` or `predicted_flops`, ... for every metric),
        optional `peak_activation_bytes`, `weight_bytes`, `time_s`; other items go to the
        point's `extra` JSON. The `runs` row holds the metric sums over the points and the
        maximum peak activation and weight bytes."""
        if not rows:
            raise ValueError("write_predicted_run needs at least one row")
        run_id = new_run_id()
        points = [_point_row(run_id, i, meta, row) for i, row in enumerate(rows)]
        run = _run_row(run_id, "predicted", meta)
        for m in METRICS:
            values = [p[f"predicted_{m}"] for p in points]
            run[f"predicted_{m}"] = None if None in values else sum(values)
        for total, column in (("peak_activation_bytes", "predicted_peak_activation_bytes"),
                              ("weight_bytes", "weight_bytes")):
            values = [p[column] for p in points if p[column] is not None]
            run[total] = max(values) if values else None

        def write(con: Connection) -> None:
            _insert_runs(con, [run])
            _insert_rows(con, "predictions", PREDICTION_COLUMNS, points)

        self._transaction(write, f"predicted run {run_id} of {meta.model_id}")
        return run_id

    def write_sweep(self, rows: list[dict[str, Any]], transformers_version: str) -> str:
        """Store one transformers-wide sweep (`dataclasses.asdict(TypeResult)` rows) in one
        transaction; returns its sweep_id."""
        sweep_id = new_run_id()
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

        def write(con: Connection) -> None:
            for r in rows:
                con.execute(
                    "INSERT INTO sweep_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?, ?, ?, ?, ?, ?)",
                    [sweep_id, now, transformers_version, r["model_type"], r["kind"],
                     r.get("architecture"), r["built"], r["traced"], r.get("method"),
                     r.get("config_method"), r["stage"], r.get("reason"), r.get("error"),
                     r["calls"], r["coverage"].get("flops"), r["coverage"].get("bytes"),
                     r["exact"], r["fully_covered_exact"], r["seconds"], _json(r)])

        self._transaction(write, f"sweep {sweep_id}")
        return sweep_id

    def write_agent_run(self, row: list[Any]) -> None:
        """Append one formula-agent run to `agent_runs` (columns in schema.sql order)."""
        placeholders = ", ".join("?" for _ in row)
        self._transaction(lambda con: con.execute(f"INSERT INTO agent_runs VALUES ({placeholders})",
                                                  row), "an agent run")

    def _transaction(self, work: Callable[[Connection], None], what: str) -> None:
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                work(con)
                con.execute("COMMIT")
            except BaseException as exc:
                con.execute("ROLLBACK")
                if isinstance(exc, duckdb.Error):
                    raise StoreError(f"could not write {what} to {self.path} (nothing was "
                                     f"written): {one_line(str(exc))}") from None
                raise

    # --- reading ---------------------------------------------------------------------------

    def query(self, sql: str, params: list[Any] | None = None,
              read_only: bool = True) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one SQL statement; returns (column names, rows). SQL errors are StoreErrors."""
        columns, _, rows = self.query_typed(sql, params, read_only)
        return columns, rows

    def query_typed(self, sql: str, params: list[Any] | None = None, read_only: bool = True,
                    sandbox: bool = False) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
        """Like `query`, with the DuckDB type name of every column (e.g. 'JSON', 'HUGEINT').
        `sandbox` runs it as the `sql` command does (see `open`)."""
        if not sql.strip():
            raise StoreError("empty SQL statement; pass a query, e.g. 'SELECT * FROM runs LIMIT 5'")
        con = self.open(read_only, sandbox)
        with contextlib.closing(con):
            try:
                cursor = con.execute(sql, params or [])
                if cursor.description is None:
                    return [], [], []
                columns = [d[0] for d in cursor.description]
                types = [str(d[1]) for d in cursor.description]
                return columns, types, cursor.fetchall()
            except duckdb.Error as exc:
                message = one_line(str(exc))
                if "read-only" in message:
                    message += " (this query changes the database: allow it with --write)"
                raise StoreError(f"SQL error: {message}") from None

    def list_runs(self, limit: int = 20, *, model: str | None = None, kind: str | None = None,
                  status: str | None = None) -> list[dict[str, Any]]:
        """The latest runs, newest first, as dicts (columns of `RUN_LIST_COLUMNS` and the
        run's `status` from the `run_status` view). `model` keeps runs whose model id contains
        it (case-insensitive); `kind` and `status` keep runs with exactly that value."""
        where, params = [], []
        for condition, value in (("r.model_id ILIKE ?", f"%{model}%" if model else None),
                                 ("r.kind = ?", kind), ("s.status = ?", status)):
            if value is not None:
                where.append(condition)
                params.append(value)
        columns, rows = self.query(
            f"SELECT {', '.join('r.' + c for c in RUN_LIST_COLUMNS)}, s.status FROM runs r "
            f"LEFT JOIN run_status s USING (run_id) "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY r.created_at DESC, r.run_id DESC LIMIT ?", [*params, int(limit)])
        return [dict(zip(columns, row)) for row in rows]


RUN_LIST_COLUMNS = ("run_id", "kind", "created_at", "model_id", "phase", "batch_size", "seq_len",
                    "kv_len", "dtype", "device", "measured_flops", "predicted_flops",
                    "coverage_flops", "coverage_bytes")


# --- row building and bulk inserts -------------------------------------------------------------

def _count(value: Any) -> int | None:
    """A count for a HUGEINT column: ints as they are, fractions and floats rounded."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return round(Fraction(value))


def _rel_error(rel: float | None, predicted: Any) -> float | None:
    """reconcile's None means 'infinite' when there is a prediction, 'unknown' otherwise."""
    if rel is None:
        return None if predicted is None else math.inf
    return float(rel)


def _plain(value: Any) -> Any:
    """JSON-safe plain data: described tensors via their to_json, containers recursively."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _plain(to_json())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


def _json(value: Any) -> str:
    try:  # fast path: the encoder walks the value once, calling _default for unknown objects
        return json.dumps(value, default=_default, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):  # non-finite floats, odd dict keys
        return json.dumps(_plain(value), separators=(",", ":"))


def _default(value: Any) -> Any:
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


def _run_row(run_id: str, kind: str, meta: RunMeta) -> dict[str, Any]:
    return {"run_id": run_id, "kind": kind,
            "created_at": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
            "model_id": meta.model_id, "config_hash": meta.config_hash, "phase": meta.phase,
            "batch_size": meta.batch_size, "seq_len": meta.seq_len, "kv_len": meta.kv_len,
            "dtype": meta.dtype, "device": meta.device, "counter": meta.counter,
            "rtol": meta.rtol, "tool_version": meta.tool_version,
            "torch_version": meta.torch_version,
            "transformers_version": meta.transformers_version}


RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"), ("kind", "VARCHAR"), ("created_at", "TIMESTAMP"),
    ("model_id", "VARCHAR"), ("config_hash", "VARCHAR"), ("phase", "VARCHAR"),
    ("batch_size", "INTEGER"), ("seq_len", "INTEGER"), ("kv_len", "INTEGER"),
    ("dtype", "VARCHAR"), ("device", "VARCHAR"), ("counter", "VARCHAR"), ("rtol", "DOUBLE"),
    ("tool_version", "VARCHAR"), ("torch_version", "VARCHAR"),
    ("transformers_version", "VARCHAR"),
    *((f"measured_{m}", "HUGEINT") for m in METRICS),
    *((f"predicted_{m}", "HUGEINT") for m in METRICS),
    ("peak_activation_bytes", "HUGEINT"), ("weight_bytes", "HUGEINT"),
    ("buffer_bytes", "HUGEINT"), ("coverage_flops", "DOUBLE"), ("coverage_bytes", "DOUBLE"),
    ("config", "JSON"))

PREDICTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"), ("point", "INTEGER"), ("phase", "VARCHAR"), ("batch_size", "INTEGER"),
    ("seq_len", "INTEGER"), ("kv_len", "INTEGER"),
    *((f"predicted_{m}", "HUGEINT") for m in METRICS),
    ("predicted_peak_activation_bytes", "HUGEINT"), ("weight_bytes", "HUGEINT"),
    ("time_s", "DOUBLE"), ("extra", "JSON"))


def _point_row(run_id: str, index: int, meta: RunMeta, row: dict[str, Any]) -> dict[str, Any]:
    rest = dict(row)

    def take(*names: str) -> Any:
        found = [rest.pop(n) for n in names if n in rest]
        return found[0] if found else None

    point: dict[str, Any] = {"run_id": run_id, "point": index}
    for name in ("phase", "batch_size", "seq_len", "kv_len"):
        value = take(name)
        point[name] = getattr(meta, name) if value is None else value
    for m in METRICS:
        point[f"predicted_{m}"] = _count(take(m, f"predicted_{m}"))
    point["predicted_peak_activation_bytes"] = _count(
        take("peak_activation_bytes", "predicted_peak_activation_bytes"))
    point["weight_bytes"] = _count(take("weight_bytes"))
    time_s = take("time_s")
    point["time_s"] = None if time_s is None else float(time_s)
    point["extra"] = _json(rest) if rest else None
    return point


def _insert(con: Connection, table: str, columns: list[Column]) -> None:
    """One INSERT for all rows: each column is passed as one list and UNNESTed."""
    if not columns or not columns[0][2]:
        return
    names = ", ".join(name for name, _, _ in columns)
    values = ", ".join(f"UNNEST(${i}::{sql_type}[])"
                       for i, (_, sql_type, _) in enumerate(columns, start=1))
    con.execute(f"INSERT INTO {table} ({names}) SELECT {values}", [v for _, _, v in columns])


def _insert_rows(con: Connection, table: str, layout: tuple[tuple[str, str], ...],
                 rows: list[dict[str, Any]]) -> None:
    _insert(con, table, [(name, sql_type, [row.get(name) for row in rows])
                         for name, sql_type in layout])


def _insert_runs(con: Connection, rows: list[dict[str, Any]]) -> None:
    _insert_rows(con, "runs", RUN_COLUMNS, rows)


def _insert_calls(con: Connection, run_id: str, trace: Trace, results: dict[int, Any]) -> None:
    calls = trace.calls
    n = len(calls)
    res = [results[c.call_id] for c in calls]
    columns: list[Column] = [
        ("run_id", "VARCHAR", [run_id] * n),
        ("call_id", "INTEGER", [c.call_id for c in calls]),
        ("parent_call_id", "INTEGER", [c.parent_call_id for c in calls]),
        ("depth", "INTEGER", [c.depth for c in calls]),
        ("module_path", "VARCHAR", [c.module_path for c in calls]),
        ("class_name", "VARCHAR", [c.class_name for c in calls]),
        ("formula_key", "VARCHAR", [c.formula_key for c in calls]),
        ("status", "VARCHAR", [r.status for r in res])]
    for m in METRICS:
        columns.append((f"measured_{m}", "HUGEINT", [r.measured.get(m) for r in res]))
    columns.append(("measured_peak_activation_bytes", "HUGEINT",
                    [c.peak_activation_bytes for c in calls]))
    for m in METRICS:
        columns.append((f"predicted_{m}", "HUGEINT", [_count(r.predicted.get(m)) for r in res]))
    for m in METRICS:
        columns.append((f"rel_error_{m}", "DOUBLE",
                        [_rel_error(r.rel_error.get(m), r.predicted.get(m)) for r in res]))
    columns += [
        ("wall_time_s", "DOUBLE", [c.wall_time_s for c in calls]),
        ("inputs", "JSON", [_json({"args": c.inputs, "kwargs": c.kwargs}) for c in calls]),
        ("outputs", "JSON", [_json(c.outputs) for c in calls]),
        ("attributes", "JSON", [_json(c.attributes) for c in calls]),
        ("error", "VARCHAR", [r.error for r in res])]
    _insert(con, "calls", columns)


def _insert_ops(con: Connection, run_id: str, trace: Trace) -> None:
    owners: list[tuple[int | None, dict[str, Any]]] = [(c.call_id, c.ops) for c in trace.calls]
    owners.append((None, trace.outside_ops))
    flat = [(call_id, op, stat) for call_id, ops in owners for op, stat in ops.items()]
    columns: list[Column] = [
        ("run_id", "VARCHAR", [run_id] * len(flat)),
        ("call_id", "INTEGER", [call_id for call_id, _, _ in flat]),
        ("op", "VARCHAR", [op for _, op, _ in flat]),
        ("count", "BIGINT", [s.count for _, _, s in flat])]
    for name in ("flops", "vector_flops", "bytes_read", "bytes_written"):
        columns.append((name, "HUGEINT", [getattr(s, name) for _, _, s in flat]))
    _insert(con, "ops", columns)


def _insert_uncovered_ops(con: Connection, run_id: str, uncovered: dict[str, int]) -> None:
    _insert(con, "uncovered_ops", [("run_id", "VARCHAR", [run_id] * len(uncovered)),
                                   ("op", "VARCHAR", list(uncovered)),
                                   ("count", "BIGINT", list(uncovered.values()))])


ESTIMATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"), ("call_id", "INTEGER"), ("hardware", "VARCHAR"), ("dtype", "VARCHAR"),
    ("compute_s", "DOUBLE"), ("memory_s", "DOUBLE"), ("overhead_s", "DOUBLE"),
    ("estimate_s", "DOUBLE"), ("self_estimate_s", "DOUBLE"), ("bound", "VARCHAR"),
    ("intensity", "DOUBLE"), ("wall_time_s", "DOUBLE"))


def _insert_estimates(con: Connection, run_id: str, rows: list[dict[str, Any]]) -> None:
    _insert_rows(con, "estimates", ESTIMATE_COLUMNS, [{**row, "run_id": run_id} for row in rows])


def _insert_formulas(con: Connection, run_id: str, formulas: dict[str, dict[str, Any]]) -> None:
    keys = sorted(formulas)
    entries = [{k: v for k, v in formulas[key].items() if k != "layer"} for key in keys]
    _insert(con, "formulas", [
        ("run_id", "VARCHAR", [run_id] * len(keys)),
        ("formula_key", "VARCHAR", keys),
        ("layer", "VARCHAR", [formulas[key].get("layer") for key in keys]),
        ("status", "VARCHAR", [(e.get("validation") or {}).get("status") for e in entries]),
        ("entry", "JSON", [_json(e) for e in entries])])
