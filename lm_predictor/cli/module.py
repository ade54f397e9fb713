"""`lm-predictor module`: cache-first look-up of a module's formula entry.

Prints an entry (parameters with binds, templates, breakdown, validation), evaluates it with
`--eval name=value ...`, dumps it with `--json`, or lists every key with `--list`. A miss tells
how a formula is made and exits with code 3 after trying the formula agent
(`lm_predictor.agent.fill_module_gap`; `--no-agent` skips it).

Example:
    $ lm-predictor module torch__nn__Linear --eval rows=8 in_features=16 out_features=32
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from formula_db.units import METRICS
from lm_predictor.cli._args import add_formulas_arg
from lm_predictor.errors import EXIT_NO_FORMULA

if TYPE_CHECKING:
    from rich.console import Console

    from formula_db.registry import Registry
    from formula_db.schema import FormulaEntry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("module", help="show, evaluate or list formula entries (cache first)",
                       description="Look up the formula entry of a module class or torch function "
                                   "by dotted name (torch.nn.Linear) or key (torch__nn__Linear).")
    p.add_argument("name", nargs="?", help="dotted class name (torch.nn.Linear), formula key "
                                           "(torch__nn__Linear) or bare class name (LlamaRMSNorm)")
    p.add_argument("--eval", nargs="+", metavar="NAME=VALUE", dest="eval_args",
                   help="evaluate every metric with these parameter values")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the entry (or the list) as JSON")
    out.add_argument("--csv", action="store_true", help="with --list: print the list as CSV")
    p.add_argument("--list", action="store_true", help="list all keys with source and status")
    add_formulas_arg(p)
    p.add_argument("--no-agent", action="store_true",
                   help="on a miss, do not try the formula agent")
    p.set_defaults(handler=cmd_module)


def parse_value(text: str) -> int | float | bool | str:
    """A command-line parameter value: int, float, true/false, or a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text.replace("_", ""))
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_assignments(items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            from formula_db.errors import FormulaError

            raise FormulaError(f"--eval expects NAME=VALUE, got {item!r}")
        values[name.strip()] = parse_value(value.strip())
    return values


def bare_matches(keys: list[str], name: str) -> list[str]:
    """Keys whose last component is the bare class (or function) name `name`: 'LlamaRMSNorm'
    finds 'transformers__models__llama__modeling_llama__LlamaRMSNorm'. Dotted names and keys
    (anything with '.' or '__') are not bare: they match nothing here."""
    from formula_db.naming import key_for

    if "." in name or "__" in name or not name:
        return []
    suffix = "__" + key_for(name)
    return [k for k in keys if k.endswith(suffix) or k == key_for(name)]


def resolve_name(registry: Registry, name: str) -> str | None:
    """The formula key `name` designates: as the registry resolves it (dotted name or key),
    else by a unique bare-name match (UsageError listing them when several match)."""
    key = registry.resolve_key(name)
    if key is not None:
        return key
    found = bare_matches(registry.keys(), name)
    if len(found) > 1:
        from lm_predictor.errors import UsageError

        raise UsageError(f"{name!r} matches {len(found)} formula keys ({', '.join(found)}); "
                         f"give one of them")
    return found[0] if found else None


def cmd_module(args: argparse.Namespace) -> int:
    from rich.console import Console

    from formula_db.naming import key_for
    from formula_db.registry import Registry, user_db_path

    registry = Registry.default(args.formulas)
    console = Console()
    if args.list:
        print_list(registry, console, args.json, args.csv)
        return 0
    if args.csv:
        from lm_predictor.errors import UsageError

        raise UsageError("--csv goes with --list (an entry is printed as a table or --json)")
    if not args.name:
        print("lm-predictor: error: give a module name, or --list to see all keys", file=sys.stderr)
        return 2
    key = resolve_name(registry, args.name)
    entry = registry.find(key) if key else None
    if entry is None and not args.no_agent:
        from lm_predictor.agent import fill_module_gap

        entry = fill_module_gap(args.name, registry)
        registry = Registry.default(args.formulas)
    if entry is None:
        path = user_db_path(args.formulas)
        print(f"lm-predictor: no formula for {args.name!r} (key {key_for(args.name)!r}) in the "
              f"builtin or user database ({path}). Make one: add an entry to the user database "
              f"following formula_db/module_db_schema_v2.json, or let the formula agent write one "
              f"('lm-predictor agent {args.name}' with ANTHROPIC_API_KEY set).", file=sys.stderr)
        return EXIT_NO_FORMULA
    if args.eval_args:
        values = parse_assignments(args.eval_args)
        results = registry.evaluate_all(entry.key, values)
        parts = registry.breakdown(entry.key, values)
        if args.json:
            print(json.dumps({"key": entry.key, "params": values,
                              "metrics": {k: _jsonable(v) for k, v in results.items()},
                              "breakdown": [{"name": n, "kind": k,
                                             "metrics": {m: _jsonable(v) for m, v in vals.items()}}
                                            for n, k, vals in parts]}, indent=2))
        else:
            print_eval(entry, values, results, parts, console)
        return 0
    if args.json:
        print(json.dumps(entry.model_dump(mode="json"), indent=2))
        return 0
    print_entry(entry, registry.source_of(entry.key), console)
    return 0


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (int, float, bool, str)) else str(value)


def print_list(registry: Registry, console: Console, as_json: bool, as_csv: bool = False
               ) -> None:
    """Every entry: the name to type (the bare class name when it is unique, else the key),
    layer, status and the module it lives in; full keys in --json and --csv."""
    from collections import Counter

    from rich import box
    from rich.markup import escape
    from rich.table import Table

    rows = [(k, registry.source_of(k), registry.get(k).validation.status,
             registry.get(k).full_class_name) for k in registry.keys()]
    if as_json:
        print(json.dumps([{"key": k, "layer": s, "status": st, "full_class_name": n}
                          for k, s, st, n in rows], indent=2))
        return
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["key", "layer", "status", "full_class_name"])
        writer.writerows(rows)
        return
    short = Counter(n.rsplit(".", 1)[-1] for _, _, _, n in rows)
    table = Table(title=f"{len(rows)} formula entries (type the name: lm-predictor module NAME)",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("name", no_wrap=True)
    table.add_column("layer", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("module", overflow="fold")
    for key, layer, status, full in sorted(rows, key=lambda r: r[3].rsplit(".", 1)[-1].lower()):
        module, _, name = full.rpartition(".")
        table.add_row(escape(name if short[name] == 1 else key), layer, status,
                      escape(short_module(module)))
    console.print(table)


def short_module(module: str) -> str:
    """'transformers.models.llama.modeling_llama' -> 'transformers llama'; others unchanged."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["transformers", "models"]:
        return f"transformers {parts[2]}"
    return module


def print_entry(entry: FormulaEntry, layer: str, console: Console) -> None:
    from rich.table import Table

    console.print(f"[bold]{entry.key}[/bold]  ({entry.full_class_name}, {entry.kind}, layer: {layer})")
    if entry.description:
        console.print(entry.description)
    if entry.code_location:
        loc = entry.code_location
        console.print(f"source: {loc.file}:{loc.start_line or ''}-{loc.end_line or ''}")
    params = Table(title="parameters")
    for col in ("name", "type", "bind", "default", "description"):
        params.add_column(col)
    for p in entry.parameters:
        params.add_row(p.name, p.type, p.bind or "", "" if p.default is None else str(p.default),
                       p.description)
    console.print(params)
    templates = Table(title="templates")
    templates.add_column("metric")
    templates.add_column("template", overflow="fold")
    for metric in METRICS:
        templates.add_row(metric, getattr(entry, metric))
    console.print(templates)
    if entry.breakdown:
        bd = Table(title="breakdown")
        for col in ("item", "kind", "templates"):
            bd.add_column(col, overflow="fold")
        for item in entry.breakdown:
            bd.add_row(item.name, item.kind, "; ".join(f"{m}: {t}" for m, t in item.templates().items()))
        console.print(bd)
    if entry.module_depends:
        console.print(f"calls: {', '.join(entry.module_depends)}")
    v = entry.validation
    console.print(f"validation: {v.status} (source {v.source}, {v.date or 'no date'}, torch "
                  f"{v.torch_version or '?'}, transformers {v.transformers_version or '?'})"
                  + (f" — {v.notes}" if v.notes else ""))


def print_eval(entry: FormulaEntry, values: dict[str, Any], results: dict[str, Any],
               parts: list[tuple[str, str, dict[str, Any]]], console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"{entry.key} at " + ", ".join(f"{k}={v}" for k, v in values.items()))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric, value in results.items():
        table.add_row(metric, f"{value:,}" if isinstance(value, int) else str(value))
    for name, kind, vals in parts:
        for metric, value in vals.items():
            label = f"  {name} ({'useful' if kind == 'useful' else 'part'}) {metric}"
            table.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
