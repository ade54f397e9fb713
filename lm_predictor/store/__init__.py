"""The DuckDB run database: every SQL statement of the project lives in this package.

- `store`: `Store` (open, write runs / predicted runs / estimates / agent runs, run queries),
  `connect` for notebooks.
- `schema`: the schema version and migrations; the DDL is `schema.sql`.
- `queries`: every SELECT the commands need (accuracy, regressions, stored runs, call trees).
- `regression`: comparison of a run's formula accuracy with a baseline run.
"""
from __future__ import annotations

from lm_predictor.errors import StoreError
from lm_predictor.settings import db_path
from lm_predictor.store.schema import SCHEMA_VERSION
from lm_predictor.store.store import Store, connect, missing_db_message

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "connect", "db_path", "missing_db_message"]
