"""Transfer: adopt an existing entry for a class that has none, only when it reconciles exactly.

transformers gives every architecture its own copy of Attention, MLP, RMSNorm, RotaryEmbedding,
DecoderLayer, often the same code as a class that already has an entry (OLMo's MLP is Llama's).
For an uncovered class `<Prefix><Suffix>` (the prefix is the architecture's, e.g. `Olmo`), the
candidates are the registry's module entries of another architecture with the same suffix
(`LlamaMLP`, `MistralMLP`, ...); when none fits, every other architecture entry that already
equals measurement on one call of the class (the wide net). A candidate is rewritten for the new
class:

- `full_class_name` becomes the new class (so its key is the new class's key);
- every nested `{key}` call to a class of the candidate's own architecture module is rewritten to
  the new architecture's class with the same suffix when that class exists (Llama's decoder layer
  calls Llama's attention; adopted for OLMo it calls OLMo's attention, which must itself be
  covered — a family transfers together, deepest classes first);
- `validation.source = "transferred"`, `validation.transferred_from` = the candidate's key.

It is adopted only if it binds and equals measurement on all five metrics for every call of the
class at every sampled shape (`lm_predictor.derive.FIT_POINTS` + held-out points: at least three
prefill and three decode shapes). Binds are kept as written, so a transferred entry reads the
config like the original and generalises as far as the original does — but it was verified on
one config (recorded in `validation.config_hash` / `config_values`): a config that switches on a
code path the verified one did not run (SmolLM3's no-rope layers start at layer 4, a tiny config
has 2) can mismatch. `coverage.cover_model` re-checks transferred entries on every model it
covers and transfers or derives again one that is not exact there.
"""
from __future__ import annotations

import datetime
import importlib
import os
import re
from dataclasses import dataclass, field

from formula_db.ast import Call, walk
from formula_db.errors import FormulaError
from formula_db.naming import key_for
from formula_db.registry import Registry
from formula_db.schema import FormulaEntry
from lm_predictor.derive import (Sample, config_hash, guard_values, instances, roots_of,
                                 verify)

_CALL = re.compile(r"\{([A-Za-z0-9_]+)\}")


def split_name(dotted: str) -> tuple[str, str]:
    """(module, class name) of a dotted class name."""
    module, _, name = dotted.rpartition(".")
    return module, name


def camel_prefix(names: list[str]) -> str:
    """Longest common prefix of class names, cut back to a CamelCase word boundary."""
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(names)
    # cut back so that the remainder of each name starts with an upper-case letter
    while prefix and not all(len(n) > len(prefix) and n[len(prefix)].isupper() for n in names):
        prefix = prefix[:-1]
    return prefix


@dataclass
class Family:
    """Classes of one architecture module with their common prefix."""

    module: str
    prefix: str
    classes: list[str] = field(default_factory=list)

    def suffix(self, name: str) -> str:
        return name[len(self.prefix):] if name.startswith(self.prefix) else name


def families_of(names: list[str]) -> dict[str, Family]:
    """Group dotted class names of transformers model modules by module."""
    by_module: dict[str, list[str]] = {}
    for dotted in names:
        module, name = split_name(dotted)
        if module.startswith("transformers.models."):
            by_module.setdefault(module, []).append(name)
    return {m: Family(m, camel_prefix(sorted(set(n))), sorted(set(n))) for m, n in by_module.items()}


def _module_classes(module: str) -> set[str]:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return set()
    return {n for n, v in vars(mod).items() if isinstance(v, type)}


@dataclass
class Transfer:
    """Outcome for one class: the adopted entry, or the candidates tried and why each failed."""

    key: str
    entry: FormulaEntry | None
    source_key: str | None = None
    tried: list[tuple[str, str]] = field(default_factory=list)  # (candidate key, reason)


class Transferrer:
    """Finds and verifies transfer candidates for the uncovered classes of one model."""

    def __init__(self, samples: list[Sample], registry: Registry,
                 traced_classes: list[str], preferred: dict[str, int] | None = None,
                 wide: bool = True) -> None:
        self.samples = samples
        self.registry = registry
        self.preferred = dict(preferred or {})  # source module -> entries already adopted
        self.wide = wide
        config = samples[0].trace.config if samples else {}
        self.config_values = guard_values(config)  # provenance: the config verified on
        self.config_hash = config_hash(self.config_values)
        known = [e.full_class_name for k in registry.keys()
                 if (e := registry.find(k)) is not None and e.kind == "module"]
        self.source_families = families_of(known)
        self.target_families = families_of(traced_classes)
        self._classes: dict[str, set[str]] = {}

    def candidates(self, full_class_name: str) -> list[FormulaEntry]:
        """Module entries of other architectures with the same suffix as the class."""
        module, name = split_name(full_class_name)
        target = self.target_families.get(module)
        if target is None:
            return []
        suffix = target.suffix(name)
        wanted = {target.suffix(n) for n in target.classes}

        def rank(fam: Family) -> tuple[int, int, int, str]:
            # a family transfers together: prefer the module already adopted from, then the one
            # sharing most class suffixes with the target, then the smallest, then by name
            overlap = len(wanted & {fam.suffix(n) for n in fam.classes})
            return (-self.preferred.get(fam.module, 0), -overlap, len(fam.classes), fam.module)

        out: list[FormulaEntry] = []
        for fam in sorted(self.source_families.values(), key=rank):
            if fam.module == module:
                continue
            for cname in fam.classes:
                if fam.suffix(cname) == suffix:
                    entry = self.registry.find(f"{fam.module}.{cname}")
                    if entry is not None and entry.validation.source != "derived":
                        out.append(entry)
        return out

    def others(self, full_class_name: str, seen: set[str]) -> list[FormulaEntry]:
        """Every other module entry of a transformers architecture (the wide net, tried after the
        same-suffix candidates), derived entries excluded."""
        module = split_name(full_class_name)[0]
        out: list[FormulaEntry] = []
        for fam in sorted(self.source_families.values(), key=lambda f: f.module):
            if fam.module == module:
                continue
            for cname in fam.classes:
                entry = self.registry.find(f"{fam.module}.{cname}")
                if entry is not None and entry.key not in seen and \
                        entry.validation.source != "derived":
                    out.append(entry)
        return out

    def rewrite(self, source: FormulaEntry, full_class_name: str) -> FormulaEntry:
        """`source` adopted for `full_class_name`: nested calls to the source's architecture
        mapped onto the target architecture's classes of the same suffix."""
        src_module = split_name(source.full_class_name)[0]
        dst_module = split_name(full_class_name)[0]
        src_fam = self.source_families.get(src_module)
        dst_fam = self.target_families.get(dst_module)
        if dst_module not in self._classes:
            self._classes[dst_module] = _module_classes(dst_module)
        available = self._classes[dst_module]
        mapping: dict[str, str] = {}
        if src_fam is not None and dst_fam is not None:
            for field_name in list(source.templates()):
                for node in walk(source.ast(field_name)):
                    if not isinstance(node, Call) or node.key in mapping:
                        continue
                    callee = self.registry.find(node.key)
                    if callee is None:
                        continue
                    c_module, c_name = split_name(callee.full_class_name)
                    if c_module != src_module:
                        continue
                    new_name = dst_fam.prefix + src_fam.suffix(c_name)
                    if new_name in available:
                        mapping[node.key] = key_for(f"{dst_module}.{new_name}")
        data = source.model_dump(mode="json")

        def sub(text: str | None) -> str | None:
            if text is None:
                return None
            return _CALL.sub(lambda m: "{" + mapping.get(m.group(1), m.group(1)) + "}", text)

        for metric in ("flops", "vector_flops", "bytes_read", "bytes_written",
                       "activation_bytes"):
            data[metric] = sub(data[metric])
        for item in data.get("breakdown", []):
            for metric in ("flops", "vector_flops", "bytes_read", "bytes_written",
                           "activation_bytes"):
                item[metric] = sub(item.get(metric))
        if data.get("backward"):  # backward templates call the same nested entries
            data["backward"] = {m: sub(v) for m, v in data["backward"].items()}
        data["module_depends"] = sorted({mapping.get(k, k) for k in data["module_depends"]})
        data["full_class_name"] = full_class_name
        data["code_location"] = None
        data["examples"] = []
        data["description"] = f"transferred from {source.full_class_name}. " + data["description"]
        data["validation"] = {
            "status": "validated", "source": "transferred",
            "date": datetime.date.today().isoformat(),
            "torch_version": source.validation.torch_version,
            "transformers_version": source.validation.transformers_version,
            "transferred_from": source.key,
            "config_hash": self.config_hash, "config_values": self.config_values,
            "notes": "adopted after reconciling exactly on every metric at every sampled "
                     "prefill and decode shape"}
        return FormulaEntry.model_validate(data)

    def transfer(self, key: str, full_class_name: str) -> Transfer:
        calls = [(s, c) for s in self.samples for c in instances(s.trace, key).values()]
        result = Transfer(key, None)
        if not calls:
            result.tried.append(("", "the class is never called"))
            return result
        same = self.candidates(full_class_name)
        for source in same:
            try:
                entry = self.rewrite(source, full_class_name)
            except ValueError as exc:
                result.tried.append((source.key, f"cannot rewrite: {str(exc)[:160]}"))
                continue
            problem = verify(entry, self.registry, calls)
            if problem is None:
                result.entry, result.source_key = entry, source.key
                return result
            result.tried.append((source.key, problem))
        if not self.wide:
            return result
        # the wide net: any other entry that already equals measurement on one call (cheap
        # screen, not reported), then on every call
        first = roots_of(calls[0][1], calls[0][0].trace.config)
        for source in self.others(full_class_name, {e.key for e in same}):
            try:  # rewriting keeps binds: a source that does not bind is skipped unrewritten
                self.registry.bind(source.key, first)
            except FormulaError:
                continue
            try:
                entry = self.rewrite(source, full_class_name)
            except ValueError:
                continue
            if verify(entry, self.registry, calls[:1]) is not None:
                continue
            problem = verify(entry, self.registry, calls)
            if problem is None:
                result.entry, result.source_key = entry, source.key
                return result
            result.tried.append((source.key, problem))
        return result
