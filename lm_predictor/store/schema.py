"""The run database's schema version and migrations (the DDL lives in `schema.sql`).

`SCHEMA_VERSION` is stored in the `meta` table. `ensure_schema` creates the schema in an empty
database or migrates an older one in one transaction; `read_schema_version` tells an empty
database (None), the unversioned prototype layout (0) and a foreign DuckDB database (StoreError)
apart. Migrations are frozen once released: each states its own DDL.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import duckdb

from lm_predictor.errors import StoreError
from lm_predictor.settings import DB_ENV

SCHEMA_VERSION = 5
SCHEMA_FILE = Path(__file__).with_name("schema.sql")
Connection = duckdb.DuckDBPyConnection
Migration = Callable[[Connection], None]
_SCHEMA_LOCK = threading.Lock()  # one schema check/migration at a time within a process


# --- schema versions and migrations ------------------------------------------------------------

def _migrate_0_to_1(con: Connection) -> None:
    """Version 0 is the prototype's unversioned layout: `runs` without the run kind, the
    environment, memory, coverage and config columns; no `predictions` table (created
    afterwards by schema.sql). Existing runs were all traced."""
    added = [("kind", "VARCHAR DEFAULT 'traced'"), ("counter", "VARCHAR"), ("rtol", "DOUBLE"),
             ("tool_version", "VARCHAR"), ("torch_version", "VARCHAR"),
             ("transformers_version", "VARCHAR"), ("peak_activation_bytes", "HUGEINT"),
             ("weight_bytes", "HUGEINT"), ("buffer_bytes", "HUGEINT"),
             ("coverage_flops", "DOUBLE"), ("coverage_bytes", "DOUBLE"), ("config", "JSON")]
    for name, sql_type in added:
        con.execute(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {name} {sql_type}")
    con.execute("UPDATE runs SET kind = 'traced' WHERE kind IS NULL")


def _migrate_1_to_2(con: Connection) -> None:
    """Version 2 adds hardware time estimates: the `estimates` table (one row per run, call and
    hardware). Existing runs have none. Its view `time_error_by_class` is created afterwards by
    schema.sql, like every view (a version-0 database has no `calls` table yet at this point)."""
    con.execute("""
        CREATE TABLE IF NOT EXISTS estimates (
            run_id VARCHAR NOT NULL, call_id INTEGER NOT NULL, hardware VARCHAR NOT NULL,
            dtype VARCHAR, compute_s DOUBLE, memory_s DOUBLE, overhead_s DOUBLE,
            estimate_s DOUBLE NOT NULL, self_estimate_s DOUBLE, bound VARCHAR,
            intensity DOUBLE, wall_time_s DOUBLE,
            PRIMARY KEY (run_id, call_id, hardware))""")


def _migrate_2_to_3(con: Connection) -> None:
    """Version 3 adds `agent_runs`: cost and outcome of each formula-agent run."""
    con.execute("""
    CREATE TABLE IF NOT EXISTS agent_runs (
        started_at            TIMESTAMP NOT NULL,   -- UTC
        full_class_name       VARCHAR NOT NULL,
        formula_key           VARCHAR NOT NULL,
        outcome               VARCHAR NOT NULL,     -- cached | not_reconciled | error | timeout
        num_turns             INTEGER,
        input_tokens          BIGINT,               -- as the SDK reports them
        output_tokens         BIGINT,
        cache_read_tokens     BIGINT,
        cache_creation_tokens BIGINT,
        cost_usd              DOUBLE,               -- total_cost_usd of the SDK's result message
        duration_s            DOUBLE,               -- wall-clock seconds of the run
        submissions           INTEGER,              -- reconcile calls
        model_id              VARCHAR,              -- the model whose trace supplied the calls
        transcript_path       VARCHAR,
        error                 VARCHAR
    )""")


def _migrate_3_to_4(con: Connection) -> None:
    """Version 4 adds views only: `calls_self` (self figures beside the inclusive ones) and
    `run_status`; schema.sql creates them after this (no table changes)."""


# from-version -> function upgrading a database from that version to the next one. Migrations
# are frozen once released: each states its own DDL, never "whatever schema.sql says now".
def _migrate_4_to_5(con: Connection) -> None:
    """Version 5 adds `sweep_results`: one row per model type of each transformers-wide sweep
    (`check --suite transformers`)."""
    con.execute("""
    CREATE TABLE IF NOT EXISTS sweep_results (
        sweep_id              VARCHAR NOT NULL,     -- one `check --suite transformers` run
        created_at            TIMESTAMP NOT NULL,   -- UTC
        transformers_version  VARCHAR,
        model_type            VARCHAR NOT NULL,
        kind                  VARCHAR,              -- causal | encoder | seq2seq | vision
        architecture          VARCHAR,
        built                 BOOLEAN,
        traced                BOOLEAN,
        method                VARCHAR,              -- meta | meta+answered-scalars | cpu | cpu-truncated
        config_method         VARCHAR,              -- which config attempt traced
        stage                 VARCHAR,              -- the last stage reached
        reason                VARCHAR,              -- normalised failure reason (grouping key)
        error                 VARCHAR,
        calls                 INTEGER,
        coverage_flops        DOUBLE,
        coverage_bytes        DOUBLE,
        exact                 BOOLEAN,              -- every call with a formula exact
        fully_covered_exact   BOOLEAN,
        seconds               DOUBLE,
        details               JSON,                 -- the whole TypeResult
        PRIMARY KEY (sweep_id, model_type)
    )""")


MIGRATIONS: dict[int, Migration] = {0: _migrate_0_to_1, 1: _migrate_1_to_2, 2: _migrate_2_to_3,
                                     3: _migrate_3_to_4, 4: _migrate_4_to_5}


def schema_sql() -> str:
    return SCHEMA_FILE.read_text(encoding="utf-8")


def read_schema_version(con: Connection, path: Path) -> int | None:
    """The database's schema version: None for an empty database, 0 for the unversioned
    layout (a `runs` table and no version); StoreError for a foreign DuckDB database."""
    tables = {row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main'").fetchall()}
    if "meta" in tables:
        found = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        if found:
            row = found[0]
            try:
                return int(row[0])
            except ValueError:
                raise StoreError(f"{path}: meta.schema_version is {row[0]!r}, not an integer; the "
                                 f"file is damaged: move it away or pass another --db") from None
    if "runs" in tables:
        return 0
    if tables:
        raise StoreError(f"{path} is a DuckDB database but not an LM-Predictor run database "
                         f"(tables: {', '.join(sorted(tables)[:5])}); pass another --db or "
                         f"${DB_ENV}")
    return None


def ensure_schema(con: Connection, path: Path) -> None:
    """Create the schema in an empty database or migrate an older one, in one transaction."""
    version = read_schema_version(con, path)
    if version == SCHEMA_VERSION:
        return
    refuse_newer(version, path)
    step: int | None = None  # the migration running, to name it if it fails
    with _SCHEMA_LOCK:
        con.execute("BEGIN TRANSACTION")
        try:
            version = read_schema_version(con, path)  # another thread may have done it
            if version != SCHEMA_VERSION:
                refuse_newer(version, path)
                for start in range(SCHEMA_VERSION if version is None else version,
                                   SCHEMA_VERSION):
                    if start not in MIGRATIONS:
                        raise StoreError(f"{path}: no migration from run database schema "
                                         f"{start}; move the file away or pass another --db")
                    step = start
                    MIGRATIONS[start](con)
                step = None
                con.execute(schema_sql())
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                            [str(SCHEMA_VERSION)])
            con.execute("COMMIT")
        except BaseException as exc:
            con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                what = (f"create the schema in {path}" if version is None else
                        f"migrate {path} from schema {step} to {step + 1}" if step is not None
                        else f"migrate {path} from schema {version} to {SCHEMA_VERSION}")
                raise StoreError(f"could not {what} (the file is unchanged): "
                                 f"{one_line(str(exc))}") from None
            raise


def refuse_newer(version: int | None, path: Path) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(f"{path} uses run database schema {version}, newer than this "
                         f"lm-predictor reads ({SCHEMA_VERSION}); upgrade lm-predictor "
                         f"(pip install -U lm-predictor) or pass another --db / ${DB_ENV}")


def one_line(message: str) -> str:
    """A DuckDB error message without its 'LINE n:' excerpt, on one line."""
    head = message.split("\nLINE ", 1)[0]
    return " ".join(part.strip() for part in head.splitlines() if part.strip())


