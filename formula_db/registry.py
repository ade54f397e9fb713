"""The layered formula registry: builtin entries overridden by the user's, resolved by key.

Layers are searched last-first (user over builtin). Look-up accepts a class or instance, a
function, a dotted name (`torch.nn.Linear`, `torch.nn.modules.linear.Linear`) or a key
(`torch__nn__Linear`). `check()` validates the whole registry: every `{key}` called exists,
every call passes an argument count the callee accepts, and no chain of calls is a cycle (the
error names it).

Example:
    >>> reg = Registry.default()
    >>> reg.evaluate("torch.nn.Linear", "flops", {"batch": 8, "in_features": 4096,
    ...              "out_features": 4096, "has_bias": True})
    268435456
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Mapping

from formula_db.ast import Call, walk
from formula_db.bind import bind_parameters
from formula_db.errors import CycleError, FormulaError, UnknownKeyError
from formula_db.evaluate import Callee, Env, evaluate, metric_value
from formula_db.naming import dotted_name, is_key, key_for, public_name
from formula_db.paths import BUILTIN_PATH, ZOO_DIR, builtin_paths, user_db_path  # noqa: F401
from formula_db.schema import BACKWARD_METRICS, METRICS, FormulaDatabase, FormulaEntry, ParamValue
from formula_db.store import full_class_name, load_database, load_trusted

@dataclass(frozen=True)
class Layer:
    """One database in the stack: a name (builtin/user), its file and its entries."""

    name: str
    path: Path | None
    db: FormulaDatabase


class _EntryView(Mapping[str, FormulaEntry]):
    """The registry's merged view: each key read from the top layer that holds it."""

    def __init__(self) -> None:
        self.where: dict[str, Mapping[str, FormulaEntry]] = {}

    def __getitem__(self, key: str) -> FormulaEntry:
        return self.where[key][key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.where)

    def __len__(self) -> int:
        return len(self.where)


class Registry:
    """Formula entries from a stack of layers, later layers overriding earlier ones."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers
        self._entries = _EntryView()  # key -> entry of the top layer holding it
        self._source: dict[str, str] = {}
        self._by_name: dict[str, str] = {}
        self._callees: dict[tuple[str, str], Callee] = {}  # entries are immutable once loaded
        for layer in layers:
            for key in layer.db.entries:
                self._entries.where[key] = layer.db.entries
                self._source[key] = layer.name
                self._by_name[full_class_name(layer.db.entries, key)] = key

    @classmethod
    def default(cls, user_path: str | os.PathLike[str] | None = None,
                include_user: bool = True) -> "Registry":
        """Builtin database plus the user database (if it exists)."""
        layers = [Layer("builtin", path, load_trusted(path)) for path in builtin_paths()]
        if include_user:
            path = user_db_path(user_path)
            layers.append(Layer("user", path, load_database(path)))
        return cls(layers)

    @classmethod
    def from_entries(cls, entries: list[FormulaEntry], name: str = "memory") -> "Registry":
        db = FormulaDatabase(entries={e.key: e for e in entries})
        return cls([Layer(name, None, db)])

    # -- look-up ---------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return sorted(self._entries)

    def source_of(self, key: str) -> str:
        return self._source[key]

    def resolve_key(self, name_or_obj: Any) -> str | None:
        """The key for a class, instance, function, dotted name or key; None if unknown."""
        if isinstance(name_or_obj, str):
            if name_or_obj in self._entries:
                return name_or_obj
            if name_or_obj in self._by_name:
                return self._by_name[name_or_obj]
            if not is_key(name_or_obj) and key_for(name_or_obj) in self._entries:
                return key_for(name_or_obj)
            public = public_name(name_or_obj)
            return self.resolve_key(public) if public != name_or_obj else None
        name = dotted_name(name_or_obj)
        return self._by_name.get(name) or (key_for(name) if key_for(name) in self._entries else None)

    def find(self, name_or_obj: Any) -> FormulaEntry | None:
        key = self.resolve_key(name_or_obj)
        return self._entries.get(key) if key else None

    def get(self, name_or_obj: Any) -> FormulaEntry:
        entry = self.find(name_or_obj)
        if entry is None:
            shown = name_or_obj if isinstance(name_or_obj, str) else dotted_name(name_or_obj)
            raise UnknownKeyError(f"no formula for {shown!r} (key {key_for(shown)!r}); run "
                                  f"'lm-predictor module --list' to see known keys, or add one "
                                  f"to the user database")
        return entry

    def __contains__(self, name_or_obj: Any) -> bool:
        return self.find(name_or_obj) is not None

    # -- evaluation --------------------------------------------------------------------------
    def callee(self, key: str, field: str) -> Callee:
        """Resolver used by nested calls: the callee's parameters and AST for `field`."""
        cached = self._callees.get((key, field))
        if cached is not None:
            return cached
        entry = self._entries.get(key)
        if entry is None:
            raise UnknownKeyError(f"unknown formula key {{{key}}}; it is called but no database "
                                  f"layer defines it")
        if field.startswith("backward.") and entry.backward is None:
            raise FormulaError(f"{{{key}}} has no backward templates; add a 'backward' block",
                               where=f"{key}.{field}")
        texts = {**entry.templates(), **entry.backward_templates()}
        callee = Callee(key, entry.param_names, entry.defaults, entry.ast(field),
                        texts.get(field, ""), entry.allow_fractional)
        self._callees[(key, field)] = callee
        return callee

    def _text(self, entry: FormulaEntry, field: str) -> str:
        if field.startswith("breakdown."):
            _, name, metric = field.split(".")
            item = next(i for i in entry.breakdown if i.name == name)
            return getattr(item, metric)
        if field.startswith("backward."):
            return entry.backward_templates()[field]
        return getattr(entry, field)

    def _complete(self, entry: FormulaEntry, params: Mapping[str, ParamValue]) -> dict[str, Any]:
        values = dict(entry.defaults)
        values.update(params)
        missing = [p for p in entry.param_names if p not in values]
        if missing:
            raise FormulaError(f"missing value(s) for {', '.join(missing)}; "
                               f"parameters: {', '.join(entry.param_names)}", where=entry.key)
        unknown = sorted(set(params) - set(entry.param_names))
        if unknown:
            raise FormulaError(f"unknown parameter(s) {', '.join(unknown)}; parameters: "
                               f"{', '.join(entry.param_names)}", where=entry.key)
        return values

    def evaluate(self, name_or_obj: Any, field: str, params: Mapping[str, ParamValue]) -> Any:
        """Exact value of one metric (or `breakdown.NAME.metric`) for the given parameters."""
        entry = self.get(name_or_obj)
        values = self._complete(entry, params)
        metric = field if field.startswith("backward.") else field.rsplit(".", 1)[-1]
        if field.startswith("backward.") and entry.backward is None:
            raise FormulaError("no backward templates; add a 'backward' block to the entry",
                               where=f"{entry.key}.{field}")
        env = Env(params=values, text=self._text(entry, field), where=f"{entry.key}.{field}",
                  metric=metric, resolve=self.callee, allow_fractional=entry.allow_fractional,
                  stack=(entry.key,))
        where = f"{entry.key}.{field}"
        try:
            return metric_value(evaluate(entry.ast(field), env), where, env.text)
        except FormulaError:
            raise
        except RecursionError:
            raise FormulaError("nested templates too deep to evaluate (the call chain's combined "
                               "depth exceeds Python's recursion limit); flatten the formulas",
                               where=where) from None
        except (ArithmeticError, ValueError, TypeError, LookupError) as exc:
            # a safety net: every known failure is a FormulaError already
            raise FormulaError(f"cannot evaluate ({type(exc).__name__}: {exc})",
                               where=where) from None

    def evaluate_all(self, name_or_obj: Any, params: Mapping[str, ParamValue]) -> dict[str, Any]:
        """Every metric's value for the given parameters."""
        return {m: self.evaluate(name_or_obj, m, params) for m in METRICS}

    def evaluate_backward(self, name_or_obj: Any, params: Mapping[str, ParamValue]
                          ) -> dict[str, Any] | None:
        """Every backward metric's value, None when the entry has no backward templates."""
        if self.get(name_or_obj).backward is None:
            return None
        return {m: self.evaluate(name_or_obj, f"backward.{m}", params) for m in BACKWARD_METRICS}

    def breakdown(self, name_or_obj: Any, params: Mapping[str, ParamValue]
                  ) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, kind, metric -> value) of each breakdown item."""
        entry = self.get(name_or_obj)
        return [(item.name, item.kind,
                 {m: self.evaluate(entry.key, f"breakdown.{item.name}.{m}", params)
                  for m in item.templates()}) for item in entry.breakdown]

    def bind(self, name_or_obj: Any, roots: Mapping[str, Any],
             overrides: Mapping[str, ParamValue] | None = None) -> dict[str, ParamValue]:
        """Parameters of the entry computed from a call's bind roots."""
        return bind_parameters(self.get(name_or_obj), roots, overrides)

    def symbolic(self, name_or_obj: Any, field: str, fixed: Mapping[str, Any] | None = None,
                 free: list[str] | None = None, simplify: bool = True) -> Any:
        """The metric as a sympy expression: `fixed` parameters substituted, the rest symbols."""
        entry = self.get(name_or_obj)
        fixed = dict(fixed or {})
        free = [p for p in entry.param_names if p not in fixed] if free is None else free
        for name, value in entry.defaults.items():
            if name not in fixed and name not in free:
                fixed[name] = value
        try:
            from formula_db import symbolic  # sympy: only for closed forms

            metric = field if field.startswith("backward.") else field.rsplit(".", 1)[-1]
            expr = symbolic.to_sympy(entry.ast(field), fixed, free, self.callee,
                                     metric, self._text(entry, field),
                                     f"{entry.key}.{field}", (entry.key,))
            return symbolic.closed_form(expr) if simplify else expr
        except FormulaError:
            raise
        except RecursionError:
            raise FormulaError("nested templates too deep to convert (the call chain's combined "
                               "depth exceeds Python's recursion limit); flatten the formulas",
                               where=f"{entry.key}.{field}") from None
        except (ArithmeticError, ValueError, TypeError, LookupError, AttributeError) as exc:
            raise FormulaError(f"cannot convert to a closed form ({type(exc).__name__}: "
                               f"{str(exc)[:200]})", where=f"{entry.key}.{field}") from None

    # -- whole-registry checks ---------------------------------------------------------------
    def check(self) -> list[str]:
        """Problems across entries (unknown callees, wrong arity, cycles); empty when sound."""
        problems: list[str] = []
        for key, entry in self._entries.items():
            for field in entry._asts:
                for node in walk(entry.ast(field)):
                    if not isinstance(node, Call):
                        continue
                    callee = self._entries.get(node.key)
                    if callee is None:
                        problems.append(f"{key}.{field}: calls unknown key {{{node.key}}}")
                        continue
                    if field.startswith("backward.") and callee.backward is None:
                        problems.append(f"{key}.{field}: {{{node.key}}} has no backward templates")
                    required = [p for p in callee.param_names if p not in callee.defaults]
                    if not len(required) <= len(node.args) <= len(callee.param_names):
                        problems.append(f"{key}.{field}: {{{node.key}}} takes "
                                        f"{len(callee.param_names)} arguments, got {len(node.args)}")
        cycle = self.find_cycle()
        if cycle:
            problems.append(f"recursive formula cycle {' -> '.join(cycle)}")
            return problems
        if not problems:
            problems.extend(self.check_examples())
        return problems

    def check_examples(self) -> list[str]:
        """Evaluate every entry's examples: inexact '/' and wrong expected values are flagged."""
        problems: list[str] = []
        for key, entry in self._entries.items():
            for i, example in enumerate(entry.examples):
                for metric in METRICS:
                    try:
                        value = self.evaluate(key, metric, example.params)
                    except FormulaError as exc:
                        problems.append(f"{key}.examples[{i}]: {exc}")
                        break
                    want = example.expected.get(metric)
                    if want is not None and value != want:
                        problems.append(f"{key}.examples[{i}].{metric}: expected {want}, "
                                        f"formula gives {value}")
        return problems

    def find_cycle(self) -> list[str] | None:
        """One dependency cycle (`[A, B, A]`) if any entry reaches itself through calls."""
        color: dict[str, int] = {}
        for start in sorted(self._entries):
            if color.get(start):
                continue
            stack: list[tuple[str, list[str]]] = [(start, sorted(self._entries[start].module_depends))]
            path = [start]
            color[start] = 1
            while stack:
                node, deps = stack[-1]
                if not deps:
                    stack.pop()
                    path.pop()
                    color[node] = 2
                    continue
                nxt = deps.pop(0)
                if nxt not in self._entries:
                    continue
                if color.get(nxt) == 1:
                    return path[path.index(nxt):] + [nxt]
                if not color.get(nxt):
                    color[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, sorted(self._entries[nxt].module_depends)))
        return None

    def raise_on_problems(self) -> None:
        problems = self.check()
        if problems:
            cls = CycleError if problems[-1].startswith("recursive") else FormulaError
            raise cls("; ".join(problems))
