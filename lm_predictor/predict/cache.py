"""On-disk cache of trace-free predictors: bound parameters and closed-form trees, as JSON.

Building a predictor needs transformers (the config class fills defaults the JSON leaves out,
and names the top-level class) and, for closed forms, sympy. Both results are plain data, so they
are cached under `settings.cache_dir()/predict/` keyed by everything they depend on:
- the model's raw config JSON (canonical, sorted keys) and the dtype;
- the installed transformers version (read from package metadata, not by importing it);
- the fingerprint of every formula database file (`formula_db.paths.fingerprint`).
Any change of these is a different key, so a stale entry is never read. The cache is
rebuildable: an unreadable or malformed file is ignored (and rewritten on the next miss), and a
failed write is skipped.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

CACHE_VERSION = 1


@dataclass(frozen=True)
class Binding:
    """What a predictor needs besides the registry: its top-level formula key, the parameters
    bound from the config, and the free shape parameters. Plain data, cacheable as JSON."""

    key: str
    fixed: dict[str, Any]
    shape_params: tuple[str, ...]


@dataclass
class CachedModel:
    """One cached predictor: how the model id resolved, its binding and closed-form trees."""

    model_id: str
    config_hash: str
    note: str
    binding: Binding
    trees: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": CACHE_VERSION, "model_id": self.model_id,
                "config_hash": self.config_hash, "note": self.note,
                "binding": {"key": self.binding.key, "fixed": self.binding.fixed,
                            "shape_params": list(self.binding.shape_params)},
                "trees": self.trees}

    @classmethod
    def from_json(cls, data: Any) -> "CachedModel | None":
        try:
            if data.get("version") != CACHE_VERSION:
                return None
            b = data["binding"]
            binding = Binding(str(b["key"]), dict(b["fixed"]),
                              tuple(str(p) for p in b["shape_params"]))
            return cls(str(data["model_id"]), str(data["config_hash"]), str(data["note"]),
                       binding, dict(data.get("trees") or {}))
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


def installed_version(package: str) -> str:
    """A package's installed version from its metadata ('' if not installed); imports nothing."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def cache_key(raw_config: dict[str, Any], dtype: str, formulas_fingerprint: str) -> str:
    """The cache key of a (config, dtype, formula databases, transformers version) combination."""
    text = json.dumps({"config": raw_config, "dtype": dtype, "formulas": formulas_fingerprint,
                       "transformers": installed_version("transformers"),
                       "cache": CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _path(key: str) -> Path:
    from lm_predictor.settings import cache_dir

    return cache_dir() / "predict" / f"{key}.json"


def load(key: str) -> CachedModel | None:
    """The cached predictor for `key`, or None (missing, unreadable or malformed)."""
    try:
        return CachedModel.from_json(json.loads(_path(key).read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):
        return None


def save(key: str, cached: CachedModel) -> Path | None:
    """Write (atomically) the cached predictor; None when the cache folder is not writable."""
    from formula_db.files import write_atomic

    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(cached.to_json(), sort_keys=True))
    except OSError:
        return None
    return path
