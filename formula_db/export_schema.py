"""Regenerate `module_db_schema_v2.json` from the pydantic models: `python -m formula_db.export_schema`."""
from __future__ import annotations

import json
from pathlib import Path

from formula_db.schema import json_schema

SCHEMA_PATH = Path(__file__).with_name("module_db_schema_v2.json")


def schema_text() -> str:
    """The committed file's expected contents."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")


if __name__ == "__main__":
    main()
