"""Binding a formula's parameters from a call: the bind roots and their evaluation.

A bind expression sees five roots, all plain data:
- `module`: the module's plain attributes (int/float/bool/str and tuples of ints) from `vars()`,
  `training` included, plus `has_<name>` for every registered parameter or buffer (`has_bias`), e.g. `module.in_features`, `module.kernel_size[0]`; private names are never reachable.
- `input`: the positional arguments, described (`formula_db.meta`): `input[0].shape[-1]`.
- `output`: the described output (a tensor, or a tuple indexable as `output[0]`).
- `kwargs`: keyword arguments by name: `kwargs.attention_mask`, `kwargs['is_causal']`.
- `config`: plain values of the model config: `config.num_attention_heads`.
Functions `numel()`, `itemsize()`, `nbytes()`, `ndim()`, `size(t, d)`, `len()`, `prod()` and
`is_none()` work on these. Parameters are bound in declared order, so a bind may use an
earlier parameter as `${name}`.

Example:
    >>> roots = call_roots(nn.Linear(4, 8), (torch.zeros(2, 4),), {}, torch.zeros(2, 8))
    >>> bind_parameters(entry, roots)    # {'batch': 2, 'in_features': 4, ...}
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

from formula_db.errors import FormulaError
from formula_db.evaluate import Env, evaluate
from formula_db.meta import Described, ValueSummary, describe
from formula_db.schema import FormulaEntry, ParamValue

AttrValue = int | float | bool | str | tuple[int, ...] | None


def plain_attributes(module: torch.nn.Module) -> dict[str, AttrValue]:
    """Public scalar attributes of a module (and tuples of ints), as formulas may bind them."""
    out: dict[str, AttrValue] = {}
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):
            out[name] = tuple(value)
    for registry in ("_parameters", "_buffers"):
        for name, tensor in getattr(module, registry, {}).items():
            out.setdefault(f"has_{name}", tensor is not None)
    out.setdefault("has_weight", False)
    out.setdefault("has_bias", False)
    return out


# Sub-configs of a composite (multimodal) config whose values the text model's modules read.
TEXT_CONFIG_KEYS = ("text_config", "language_config", "llm_config")


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items()
            if v is None or isinstance(v, (bool, int, float, str))
            or (isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v))}


def plain_config(config: Any) -> dict[str, Any]:
    """Plain values of a transformers config (or a mapping). A composite config (a vision- or
    audio-language model: `text_config` etc.) also gives its text sub-config's values under
    the keys the top level lacks, so that the language model's modules, which read
    `config.num_attention_heads`, bind inside the wrapper as they do alone."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    out = _plain(data)
    labels = data.get("id2label")  # `num_labels` is a property to_dict() leaves out
    if "num_labels" not in out and isinstance(labels, Mapping) and labels:
        out["num_labels"] = len(labels)
    for key in TEXT_CONFIG_KEYS:
        sub = data.get(key)
        if isinstance(sub, Mapping):
            for k, v in _plain(sub).items():
                out.setdefault(k, v)
            break
    return out


def make_roots(attributes: Mapping[str, Any], inputs: tuple[Described, ...],
               kwargs: Mapping[str, Described], output: Described,
               config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Bind roots from already-described call data (e.g. a stored trace record)."""
    return {"module": dict(attributes), "input": tuple(inputs), "kwargs": dict(kwargs),
            "output": output, "config": dict(config or {})}


def call_roots(module: torch.nn.Module | None, args: tuple[Any, ...], kwargs: Mapping[str, Any],
               output: Any, config: Any = None) -> dict[str, Any]:
    """Bind roots from a live call (module may be None for a torch function)."""
    attrs = plain_attributes(module) if module is not None else {}
    return make_roots(attrs, tuple(describe(a) for a in args),
                      {k: describe(v) for k, v in kwargs.items()}, describe(output),
                      plain_config(config) if config is not None else {})


def _coerce(value: Any, kind: str, where: str) -> ParamValue:
    if isinstance(value, ValueSummary):
        value = value.value
    if kind == "bool":
        if isinstance(value, (bool, int)) or value is None:
            return bool(value)
    elif kind == "int":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif kind == "str" and isinstance(value, str):
        return value
    raise FormulaError(f"bind gave {value!r}, not a {kind}", where=where)


def bind_parameters(entry: FormulaEntry, roots: Mapping[str, Any],
                    overrides: Mapping[str, ParamValue] | None = None) -> dict[str, ParamValue]:
    """Compute every parameter of `entry` for one call (overrides win over binds)."""
    values: dict[str, ParamValue] = {}
    overrides = overrides or {}
    for p in entry.parameters:
        where = f"{entry.key}.parameters.{p.name}.bind"
        if p.name in overrides:
            values[p.name] = _coerce(overrides[p.name], p.type, where)
            continue
        node = entry.bind_ast(p.name)
        if node is None:
            if p.default is None:
                raise FormulaError(f"parameter {p.name!r} has no bind and no default; pass a value",
                                   where=where)
            values[p.name] = p.default
            continue
        env = Env(params=values, text=p.bind or "", where=where, roots=roots)
        values[p.name] = _coerce(evaluate(node, env), p.type, where)
    return values
