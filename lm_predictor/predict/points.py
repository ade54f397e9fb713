"""Trace-free prediction over a sweep of shapes: the library behind `lm-predictor predict`.

`predict_points(model_id, points, ...)` returns one row of metrics per (batch, seq_len, kv_len)
point. It takes the fastest correct route:
1. the model id is a bundled preset or a local `config.json` (its raw JSON is read without
   transformers) and `predict.cache` holds its predictor: the metrics come from the cached
   closed-form trees (no torch, transformers, sympy or formula registry imported) or, for a
   metric without a tree, from the registry's AST evaluation;
2. otherwise the config is resolved through transformers (`models.resolve`), the predictor is
   bound (`Predictor.for_config`), its closed forms are built once with sympy, and the result is
   cached for the next call when the model id has a raw JSON config.
A hub id with `HF_TOKEN` set always takes route 2 (the hub may hold a newer config).

Example:
    >>> p = predict_points("meta-llama/Llama-3.1-8B", [(1, 2048, 0)])
    >>> p.rows[0]["flops"], p.route
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from formula_db.paths import builtin_paths, fingerprint, user_db_path
from formula_db.units import METRICS, config_dtype_name
from lm_predictor import settings
from lm_predictor.models.presets import find_preset, local_config_file, looks_like_path, read_json_object
from lm_predictor.predict import cache

Point = tuple[int, int, int]  # batch, seq_len (new tokens), kv_len


@dataclass
class RawConfig:
    """A model id's config JSON read without transformers, and how it resolved."""

    data: dict[str, Any]
    model_id: str  # canonical: the preset's hub id or the config file's absolute path
    note: str


@dataclass
class Prediction:
    """Predicted metrics per point, with where the config and the formulas came from."""

    model_id: str
    config_hash: str
    note: str
    dtype: str
    phase: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    route: Literal["cache", "config"] = "config"


def raw_config(model_id: str) -> RawConfig | None:
    """The raw config of a preset or a local config file; None for ids that need transformers
    or the hub to resolve (a hub id with a token set, an unknown id)."""
    text = model_id.strip()
    if text and (Path(text).expanduser().exists() or looks_like_path(text)):
        file = local_config_file(text)
        return RawConfig(read_json_object(file), str(file), f"local config: {file}")
    found = find_preset(text)
    if found is None:
        return None
    preset, by_hub_id = found
    if by_hub_id and settings.hf_token():
        return None  # resolve_config would consult the hub
    note = (f"no HF_TOKEN: using bundled preset for {preset.hub_id}" if by_hub_id
            else f"bundled preset for {preset.hub_id}")
    return RawConfig(read_json_object(preset.path), preset.hub_id, note)


def formulas_fingerprint(formulas: str | None) -> str:
    """Fingerprint of the formula databases a registry for `formulas` would load."""
    return fingerprint(builtin_paths() + [user_db_path(formulas)])


def _evaluate_trees(cached: cache.CachedModel, points: list[Point]) -> list[dict[str, Any]] | None:
    from formula_db.evaluate import metric_value
    from lm_predictor.predict.closed_form import Unsupported, compile_tree

    if any(cached.trees.get(m) is None for m in METRICS):
        return None
    try:
        fns = {m: compile_tree(cached.trees[m]) for m in METRICS}
        return [{m: metric_value(fn({"batch": b, "seq_len": s, "kv_len": k}), m)
                 for m, fn in fns.items()} for b, s, k in points]
    except (Unsupported, KeyError, TypeError, ValueError, ArithmeticError):
        return None  # a damaged cache entry: recompute


def predict_points(model_id: str, points: list[Point], *, phase: str = "prefill",
                   dtype: str | None = None, formulas: str | None = None,
                   progress: Callable[[str], None] | None = None,
                   attention_backward: str = "flash") -> Prediction:
    """Metrics at every point (see the module docstring for the route taken). `progress` is
    told what runs whenever the work may take more than a moment (a cache miss). Phase `train`:
    one training step per point (`Predictor.training_step`, `attention_backward` 'flash' or
    'math'), always through the config route."""
    say = progress or (lambda _msg: None)
    if phase == "train":
        return _predict_training(model_id, points, dtype, formulas, say, attention_backward)
    raw = raw_config(model_id)
    key = None
    if raw is not None:
        dtype = dtype or config_dtype_name(raw.data)
        key = cache.cache_key(raw.data, dtype, formulas_fingerprint(formulas))
        cached = cache.load(key)
        if cached is not None:
            values = _evaluate_trees(cached, points)
            if values is None:
                from formula_db.registry import Registry
                from lm_predictor.predict.predictor import Predictor

                say("evaluating formulas (no closed form cached for every metric)")
                predictor = Predictor.from_binding(cached.binding, Registry.default(formulas),
                                                   model_id, cached.trees)
                if len(points) == 1:
                    values = [predictor.point(*points[0])]
                else:
                    values = predictor.sweep(points)  # builds the trees: keep them
                    cache.save(key, cache.CachedModel(cached.model_id, cached.config_hash,
                                                      cached.note, cached.binding,
                                                      predictor.trees()))
            return Prediction(cached.model_id, cached.config_hash, cached.note, dtype, phase,
                              _rows(points, values, phase), "cache")
    from formula_db.registry import Registry
    from lm_predictor.models.resolve import resolve_config
    from lm_predictor.predict.predictor import Predictor

    say(f"resolving {model_id} (first prediction for this config: closed forms are built "
        f"once and cached)")
    resolved = resolve_config(model_id, hf_token=settings.hf_token())
    say("building closed forms")
    dtype = dtype or config_dtype_name(resolved.config)
    predictor = Predictor.for_config(resolved.config, model_id, Registry.default(formulas), dtype)
    say(f"evaluating {len(points)} point{'s' if len(points) != 1 else ''}")
    values = [predictor.point(*p) for p in points] if len(points) == 1 else predictor.sweep(points)
    if key is not None and raw is not None:
        cache.save(key, cache.CachedModel(resolved.model_id, resolved.config_hash, resolved.note,
                                          predictor.binding(), predictor.trees()))
    return Prediction(resolved.model_id, resolved.config_hash, resolved.note, dtype, phase,
                      _rows(points, values, phase), "config")


def _predict_training(model_id: str, points: list[Point], dtype: str | None,
                      formulas: str | None, say: Callable[[str], None],
                      attention_backward: str) -> Prediction:
    """Training-step rows: the step totals (forward + backward + the loss's seed gradient) as
    the metrics, activation bytes of the forward (what autograd saves included), and the
    forward and backward parts as `forward_*` / `backward_*`."""
    from formula_db.registry import Registry
    from formula_db.units import config_dtype_name as dtype_of
    from lm_predictor.errors import UsageError
    from lm_predictor.models.resolve import resolve_config
    from lm_predictor.predict.predictor import Predictor

    if any(k for _, _, k in points):
        raise UsageError("a training step has no KV cache: drop --kv-len with --phase train")
    say(f"resolving {model_id}")
    resolved = resolve_config(model_id, hf_token=settings.hf_token())
    dtype = dtype or dtype_of(resolved.config)
    predictor = Predictor.for_config(resolved.config, model_id, Registry.default(formulas), dtype)
    rows: list[dict[str, Any]] = []
    for b, s, _ in points:
        step = predictor.training_step(b, s, attention_backward)
        row: dict[str, Any] = {"phase": "train", "batch_size": b, "seq_len": s, "kv_len": 0}
        row.update(step["step"])
        row["activation_bytes"] = step["forward"]["activation_bytes"]
        row.update({f"forward_{m}": v for m, v in step["forward"].items()})
        row.update({f"backward_{m}": v for m, v in step["backward"].items()})
        row["attention_backward"] = attention_backward
        rows.append(row)
    return Prediction(resolved.model_id, resolved.config_hash, resolved.note, dtype, "train",
                      rows, "config")


def _rows(points: list[Point], values: list[dict[str, Any]], phase: str) -> list[dict[str, Any]]:
    return [{"phase": phase, "batch_size": b, "seq_len": s, "kv_len": k,
             **{m: v[m] for m in METRICS}} for (b, s, k), v in zip(points, values)]
