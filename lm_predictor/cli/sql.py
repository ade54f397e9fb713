"""`lm-predictor sql` and `lm-predictor runs`: query the run database from the command line.

`sql` runs one statement and prints a table (`--json`: a list of objects, JSON columns parsed;
`--csv`: CSV with a header). It is read-only unless `--write` is given. `runs` lists the latest
runs, newest first, with a status per run, filtered by `--model`, `--kind` and `--status`; it
says on stderr which database it read. Neither creates a missing database: that is a one-line error saying how
to store a first run. Errors (bad SQL, locked or foreign file) are raised as `StoreError` and
printed as one line by `lm_predictor.cli`.

Limits: the table view shows at most `--max-rows` rows (default 1000) and says how many it left
out; `--json` and `--csv` print everything.

Example:
    $ lm-predictor sql "SELECT formula_key, calls, max_rel_error_flops FROM formula_accuracy"
    $ lm-predictor runs --limit 5 --json
"""
from __future__ import annotations

import argparse
import csv
import datetime
import decimal
import json
import math
import sys
from typing import Any, TextIO

from typing import TYPE_CHECKING

from lm_predictor.cli._args import add_db_arg, non_negative_int

if TYPE_CHECKING:
    from rich.console import Console

    from lm_predictor.store import Store

RUN_KINDS = ("traced", "predicted")
RUN_STATUSES = ("exact", "tolerance", "partial", "mismatch", "predicted")
NUMERIC_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                           "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE"})


def register(sub: argparse._SubParsersAction) -> None:
    register_sql(sub)
    register_runs(sub)
    p = sub.add_parser("migrate", help="bring a run database to this version's schema",
                       description="Migrate an older run database in place, in one transaction "
                                   "(read-only commands such as runs and sql never do).")
    add_db_arg(p)
    p.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    store = existing_store(args.db)
    before, after = store.migrate()
    print(f"{store.path}: schema {before} -> {after}" if before != after else
          f"{store.path}: already at schema {after}")
    return 0


def register_sql(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="run SQL on the run database",
                       description="Run one SQL statement on the run database (tables runs, calls, "
                                   "ops, uncovered_ops, formulas, predictions; views "
                                   "formula_accuracy, run_totals, uncovered_classes).")
    p.add_argument("query", help="the SQL statement, quoted")
    add_db_arg(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list of objects")
    fmt.add_argument("--csv", action="store_true", help="print CSV with a header row")
    p.add_argument("--write", action="store_true",
                   help="allow statements that change the database (DELETE, UPDATE, ...); "
                        "files outside the database stay out of reach either way")
    p.add_argument("--max-rows", type=non_negative_int, default=1000, metavar="N",
                   help="rows shown in the table view (default 1000)")
    p.set_defaults(handler=cmd_sql)


def register_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list stored runs, newest first",
                       description="List the latest stored runs with their measured and "
                                   "predicted FLOPs, formula coverage and status. `check` keeps "
                                   "its runs in its own database (see lm-predictor check --help).")
    add_db_arg(p)
    p.add_argument("--limit", type=non_negative_int, default=20, metavar="N", help="runs to show (default 20)")
    p.add_argument("--model", metavar="TEXT",
                   help="only runs whose model id contains TEXT (case-insensitive)")
    p.add_argument("--kind", choices=RUN_KINDS, help="only traced or only predicted runs")
    p.add_argument("--status", choices=RUN_STATUSES,
                   help="only runs with this status: exact (every call with a formula equal on "
                        "every metric, all work covered), tolerance (some only within --rtol), "
                        "partial (no mismatch, but classes without a formula), mismatch, "
                        "predicted (no measurement)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list of objects")
    fmt.add_argument("--csv", action="store_true", help="print CSV with a header row")
    p.set_defaults(handler=cmd_runs)


def existing_store(explicit: str | None) -> Store:
    """The store at --db / $LM_PREDICTOR_DB / default, refusing to create a missing file."""
    from lm_predictor.store import Store, StoreError, db_path, missing_db_message

    path = db_path(explicit)
    if not path.exists():
        raise StoreError(missing_db_message(path))
    return Store(path)


def cmd_sql(args: argparse.Namespace) -> int:
    from rich.console import Console

    store = existing_store(args.db)
    columns, types, rows = store.query_typed(args.query, read_only=not args.write, sandbox=True)
    if not columns:
        print("OK")
    elif args.json:
        print(json.dumps(records(columns, types, rows), indent=2))
    elif args.csv:
        write_csv(columns, rows, sys.stdout)
    else:
        print_table(columns, types, rows, Console(), max(args.max_rows, 0))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lm_predictor.fmt import si as si3

    store = existing_store(args.db)
    runs = store.list_runs(max(args.limit, 0), model=args.model, kind=args.kind,
                           status=args.status)
    print(f"read {store.path}", file=sys.stderr)
    if args.json:
        print(json.dumps([{k: jsonable(v) for k, v in run.items()} for run in runs], indent=2))
        return 0
    if args.csv:
        columns = list(runs[0]) if runs else []
        write_csv(columns, [tuple(run.values()) for run in runs], sys.stdout)
        return 0
    console = Console()
    wide = console.width >= 120
    filters = ", ".join(f"{name} {value}" for name, value in
                        (("model", args.model), ("kind", args.kind), ("status", args.status))
                        if value)
    table = Table(title=f"{len(runs)} latest run{'s' if len(runs) != 1 else ''}"
                        + (f" ({filters})" if filters else ""),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="FLOP of the forward pass, measured ('-': predicted only) and "
                          "predicted; cov. %: share of measured FLOP with a formula; the run id "
                          "starts with its UTC time")
    table.add_column("run_id", no_wrap=True)
    if wide:
        table.add_column("created (UTC)", no_wrap=True)
    table.add_column("model", overflow="fold", min_width=10)
    table.add_column("phase batch×seq", min_width=10)
    if wide:
        table.add_column("dtype, device", min_width=8)
    table.add_column("FLOP\nmeas.", justify="right", no_wrap=True)
    table.add_column("FLOP\npred.", justify="right", no_wrap=True)
    if wide:
        table.add_column("cov.\n%", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for run in runs:
        coverage = run["coverage_flops"]
        shape = f"{run['phase'] or '?'} {run['batch_size']}×{run['seq_len']}"
        if run["kv_len"]:
            shape += f" kv {run['kv_len']}"
        measured = "-" if run["kind"] == "predicted" else si3(run["measured_flops"])
        cells = [escape(run["run_id"])]
        if wide:
            cells.append(f"{run['created_at']:%Y-%m-%d %H:%M}")
        cells += [escape(run["model_id"]), escape(shape)]
        if wide:
            cells.append(escape(f"{run['dtype'] or '?'} {run['device'] or '?'}"))
        cells += [measured, si3(run["predicted_flops"])]
        if wide:
            cells.append("" if coverage is None else f"{100 * coverage:.3g}")
        cells.append(run["status"] or "")
        table.add_row(*cells)
    console.print(table)
    return 0


def si(value: int | None) -> str:
    """A count with an SI prefix, 4 significant digits: 1.181e21 -> '1.181 Z'."""
    if value is None:
        return ""
    scaled, prefix = float(value), ""
    for p in ("k", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q"):
        if abs(scaled) < 1000:
            break
        scaled, prefix = scaled / 1000, p
    return f"{scaled:.4g} {prefix}".rstrip() if prefix else f"{value:,}"


def jsonable(value: Any) -> Any:
    """A query value as JSON data: timestamps ISO 8601, non-finite floats as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def records(columns: list[str], types: list[str], rows: list[tuple[Any, ...]]
            ) -> list[dict[str, Any]]:
    """Rows as objects; JSON-typed columns parsed back into data."""
    is_json = [t == "JSON" for t in types]
    return [{c: json.loads(v) if j and isinstance(v, str) else jsonable(v)
             for c, j, v in zip(columns, is_json, row)} for row in rows]


def write_csv(columns: list[str], rows: list[tuple[Any, ...]], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else v.isoformat() if isinstance(v, datetime.datetime)
                         else v for v in row])


def print_table(columns: list[str], types: list[str], rows: list[tuple[Any, ...]],
                console: Console, max_rows: int) -> None:
    """A table, or one block per row ('column  value') when the table would not fit."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    shown = rows[:max_rows]
    title = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
    if len(shown) < len(rows):
        title += f" (showing {len(shown)}: add LIMIT, or use --csv / --json for all)"
    cells = [["NULL" if v is None else str(v) for v in row] for row in shown]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    if sum(w + 3 for w in widths) + 1 > console.width and len(columns) > 2:
        table = Table("column", "value", title=title + ", one block per row",
                      box=box.SIMPLE_HEAD)
        table.columns[1].overflow = "fold"
        for i, row in enumerate(cells):
            if i:
                table.add_section()
            for col, text in zip(columns, row):
                table.add_row(escape(col), _cell(text))
        console.print(table)
        return
    table = Table(title=title)
    for col, sql_type in zip(columns, types):
        numeric = sql_type in NUMERIC_TYPES or sql_type.startswith("DECIMAL")
        table.add_column(escape(col), justify="right" if numeric else "left", overflow="fold")
    for row in cells:
        table.add_row(*(_cell(text) for text in row))
    console.print(table)


def _cell(text: str) -> str:
    from rich.markup import escape

    return "[dim]NULL[/dim]" if text == "NULL" else escape(text)
