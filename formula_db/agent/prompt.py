"""The formula agent's prompts: a fixed system prompt and a user prompt built from real data.

`SYSTEM_PROMPT` states the job (write one formula entry for one class, reconcile it until it
matches measurement), the metric conventions, the formula language in brief and the rules (only
the given tools; templates are data, never code). `user_prompt(...)` carries:
- the class's real source (`source.ClassSource`: header, `__init__`, `forward`, file and lines);
- the keys and parameter signatures of the formulas it may call (the classes its calls call,
  then every other entry, capped at `MAX_LISTED`; `list_formulas` shows all);
- the entry's JSON Schema (generated from `schema.FormulaEntry`, the same source as
  `formula_db/module_db_schema_v2.json`);
- the recorded calls: input/output shapes and dtypes, kwargs, module attributes, model config
  keys, measured value per metric and per aten op (inclusive of children), direct children.

Limits: at most `MAX_PROMPT_CALLS` calls are shown in full (all are reconciled); the config is
reduced to its keys and values once, not per call.

Example:
    >>> text = user_prompt(src, calls, registry, rtol=0.0)
    >>> "def forward" in text and '"measured"' in text
    True
"""
from __future__ import annotations

import json
from typing import Any

from formula_db.naming import key_for
from formula_db.registry import Registry
from formula_db.schema import FormulaEntry

from .calls import RecordedCall
from .source import ClassSource
from .tools import TOOLS, signature

MAX_LISTED = 60
MAX_PROMPT_CALLS = 6

SYSTEM_PROMPT = """\
You write cost formulas for PyTorch module classes for LM-Predictor. You get one class, its \
source and concrete recorded calls with measured costs; you write ONE formula entry (JSON) whose \
templates reproduce the measured values exactly (or within the stated tolerance) on every \
recorded call, and you check it with the `reconcile` tool until it passes.

Metrics (all integers, for one forward call, inclusive of everything the call runs):
- flops: matmul-class FLOPs, 2 per multiply-accumulate (torch.utils.flop_counter's convention).
- vector_flops: element-wise ops, reductions, normalisation, softmax (1 per output element for \
most element-wise ops; see the per-op measurements).
- bytes_read / bytes_written: unfused, per aten op: every input / output tensor's bytes; views \
move none.
- activation_bytes: bytes of tensors created by the call and still alive when it returns \
(usually the output).

Formula language (safe, parsed, never executed as code):
- templates use ${param}, integers, + - * / // % **, comparisons, and/or/not, `c ? a : b`, \
functions min max abs ceil floor ceil_div int, and nested calls {key}(arg, ...) which evaluate \
the SAME metric of another entry with its parameters passed positionally in declared order. \
Templates may not use names, attribute access or subscripts. `/` must divide exactly.
- each parameter has a `bind` expression computed from the recorded call: roots `module` \
(plain attributes of THIS module only, plus has_<param> flags; child modules are not \
reachable), `input` (positional args: input[0].shape[-1]), `output` (output.shape[-1] or \
output[0]...), `kwargs` (kwargs.name), `config` (model config values); functions numel itemsize \
nbytes ndim size len prod is_none is_tensor get. A bind may use earlier parameters as ${name}.
- `module_depends` must list exactly the keys your templates call. Prefer calling the entries \
of child modules (e.g. {torch__nn__Linear}(...)) and adding the class's own ops.
- `full_class_name` must be the class you are given; `validation` and `code_location` are \
filled in for you.

Rules: use only the tools you are given (read_source, list_formulas, get_formula, reconcile). \
Submit the complete entry as JSON text to `reconcile`; read its per-metric and per-op report, \
fix the entry and resubmit until every call passes. Your last passing submission is the one \
that is cached; if you cannot make it pass, stop and say which metric remains off and why.\
"""


def _jsonable_config(calls: list[RecordedCall]) -> dict[str, Any]:
    return dict(calls[0].config) if calls else {}


def callable_formulas(calls: list[RecordedCall], registry: Registry,
                      limit: int = MAX_LISTED) -> list[str]:
    """Signatures of the formulas the entry may call: children's first, then the rest."""
    first: list[str] = []
    for call in calls:
        for child in call.children:
            key = registry.resolve_key(child.formula_key) or registry.resolve_key(
                child.class_name)
            if key and key not in first:
                first.append(key)
    rest = [k for k in registry.keys() if k not in first]
    keys = (first + rest)[:limit]
    return [signature(registry.get(k)) + ("   <- called by the recorded calls"
                                          if k in first else "") for k in keys]


def user_prompt(source: ClassSource, calls: list[RecordedCall], registry: Registry,
                rtol: float = 0.0, note: str = "") -> str:
    """The task message: source, callable formulas, schema, recorded calls."""
    shown = calls[:MAX_PROMPT_CALLS]
    config = _jsonable_config(calls)
    recorded = [c.to_json() for c in shown]
    formulas = callable_formulas(calls, registry)
    total = len(registry.keys())
    parts = [
        f"Write the formula entry of `{source.full_class_name}` "
        f"(key `{key_for(source.full_class_name)}`).",
        f"## Source ({source.location.file}, lines {source.location.start_line}-"
        f"{source.location.end_line})\n\n```python\n{source.text}```",
        f"## Formulas you may call ({len(formulas)} of {total}; list_formulas shows all)\n\n"
        + "\n".join(formulas),
        "## Entry JSON Schema (formula_db/module_db_schema_v2.json, FormulaEntry)\n\n"
        + json.dumps(FormulaEntry.model_json_schema(), separators=(",", ":")),
        f"## Recorded calls ({len(calls)} distinct, {len(shown)} shown; `reconcile` checks all)"
        + (f"\n\nThey come from: {note}" if note else "")
        + "\n\nMeasured values are inclusive of child calls; `ops` lists every aten op the call "
          "ran (children included) with count and counters. One call per line:\n\n"
        + "\n".join(json.dumps(c, separators=(", ", ": ")) for c in recorded),
        "## Model config (bind as config.NAME)\n\n" + (json.dumps(config, sort_keys=True)
                                                      if config else "(none)"),
        f"## Tolerance\n\nEvery metric of every call must match within relative error {rtol:g}"
        f" ({'exactly' if rtol == 0 else 'or better'}).",
        f"Tools: {', '.join(TOOLS)}. Submit with reconcile until it passes.",
    ]
    return "\n\n".join(parts) + "\n"
