"""Does a predicted point fit the device's memory? Weights + KV cache + activations, trace-free.

`predict --hardware` prints a time beside every point; a time for a batch whose KV cache cannot
be held is meaningless, so each point gets a fit check:

    weights_bytes  = parameters x itemsize of the model built on `meta` (tied tensors once;
                     nothing allocated, nothing traced)
    kv_cache_bytes = batch x sum over cached layers of bytes_per_token x min(tokens, window),
                     tokens = kv_len + seq_len; bytes_per_token = (key heads x key dim + value
                     heads x value dim) x itemsize per layer, as the model caches it
                     (`models.cache.cache_layout`: grouped KV heads, MLA, sliding windows), e.g.
                     Llama-3.1-8B in bf16: 32 layers x 8 heads x 128 x 2 (K and V) x 2 B =
                     131072 B per token
    activation_bytes = max(0, predicted activation_bytes - kv_cache_bytes): the formulas'
                     peak of the eager pass (the metric `analyze` reconciles) less the cache it
                     holds, as `hardware.memory` splits a traced peak
    fits           = weights + KV cache + activations <= the device's capacity

The weights and the per-layer cache geometry depend only on the config and the dtype, so they
are computed once (a meta build and a one-token meta forward: torch and transformers are
imported) and cached as JSON under `settings.cache_dir()/footprint/`, keyed by the raw config,
the dtype and the installed transformers version; later `predict` calls read the cache only.
No allocator, CUDA context or workspace overheads: use `hardware memory --usable` for those.

Example:
    >>> fp = footprint("meta-llama/Llama-3.1-8B", "bfloat16")
    >>> fp.kv_cache_bytes(batch=1, tokens=1)
    131072
    >>> check = fit_check(fp, 80 * 10**9, batch=32, seq_len=1, kv_len=131071)
    >>> check.fits, check.reason()
    (False, '550 GB KV cache + 16.1 GB weights = 566 GB > 80 GB')
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FOOTPRINT_VERSION = 1


@dataclass(frozen=True)
class Footprint:
    """What memory a model needs independently of the shape: weights and cache geometry."""

    weights_bytes: int
    kv_layers: tuple[tuple[int, int | None], ...]  # (bytes per token, sliding window) per layer
    context_limit: int | None = None

    def kv_cache_bytes(self, batch: int, tokens: int) -> int:
        """One copy of the KV cache for `batch` sequences of `tokens` tokens."""
        return batch * sum(per_token * min(tokens, window or tokens)
                           for per_token, window in self.kv_layers)

    def to_json(self) -> dict[str, Any]:
        return {"version": FOOTPRINT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> "Footprint | None":
        try:
            if data["version"] != FOOTPRINT_VERSION:
                return None
            return cls(int(data["weights_bytes"]),
                       tuple((int(b), None if w is None else int(w)) for b, w in data["kv_layers"]),
                       None if data["context_limit"] is None else int(data["context_limit"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class FitCheck:
    """One point's memory against a capacity."""

    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    capacity_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    def reason(self) -> str:
        """The parts, largest first, against the capacity: '550 GB KV cache + 16.1 GB weights
        = 566 GB > 80 GB' (parts under 1% of the total are left out)."""
        parts = sorted(((self.kv_cache_bytes, "KV cache"), (self.weights_bytes, "weights"),
                        (self.activation_bytes, "activations")), reverse=True)
        shown = [f"{_gb(v)} {name}" for v, name in parts if v and v >= 0.01 * self.total_bytes]
        sign = "<=" if self.fits else ">"
        return (" + ".join(shown) + (f" = {_gb(self.total_bytes)}" if len(shown) > 1 else "")
                + f" {sign} {_gb(self.capacity_bytes)}")

    def to_json(self) -> dict[str, Any]:
        return {"weights_bytes": self.weights_bytes, "kv_cache_bytes": self.kv_cache_bytes,
                "activation_bytes_outside_cache": self.activation_bytes,
                "memory_bytes": self.total_bytes, "capacity_bytes": self.capacity_bytes,
                "fits": self.fits, "memory": self.reason()}


def _gb(value: int) -> str:
    return f"{value / 1e9:.3g} GB"


def fit_check(fp: Footprint, capacity_bytes: int, *, batch: int, seq_len: int, kv_len: int,
              activation_bytes: int | float | None = None) -> FitCheck:
    """Weights + KV cache (kv_len + seq_len tokens) + activations outside the cache against
    `capacity_bytes` (see the module docstring)."""
    kv = fp.kv_cache_bytes(batch, kv_len + seq_len)
    activations = max(0, int(activation_bytes or 0) - kv)
    return FitCheck(fp.weights_bytes, kv, activations, int(capacity_bytes))


def _cache_path(config_data: dict[str, Any], dtype: str) -> Path:
    from lm_predictor import settings
    from lm_predictor.predict.cache import installed_version

    text = json.dumps({"config": config_data, "dtype": dtype,
                       "transformers": installed_version("transformers"),
                       "version": FOOTPRINT_VERSION}, sort_keys=True, default=str)
    return settings.cache_dir() / "footprint" / f"{hashlib.sha256(text.encode()).hexdigest()}.json"


def measure_footprint(config: Any, dtype: str) -> Footprint:
    """Weights and cache geometry of `config` in `dtype`: a meta build (parameters x itemsize)
    and `cache_layout` (a one-token meta forward); no cache for models that do not cache."""
    import torch

    from lm_predictor.models.build import build_model
    from lm_predictor.models.cache import cache_layout, supports_cache

    torch_dtype = getattr(torch, dtype)
    model = build_model(config, device="meta", dtype=torch_dtype)
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    weights = sum(p.numel() for p in model.parameters()) * itemsize
    layers = (tuple((lay.bytes_per_token, lay.window)
                    for lay in cache_layout(model, dtype=torch_dtype))
              if supports_cache(model) else ())
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text, "max_position_embeddings", None)
    return Footprint(int(weights), layers, limit if isinstance(limit, int) else None)


def footprint(model_id: str, dtype: str) -> Footprint:
    """The model's `Footprint` in `dtype`, from the on-disk cache when the raw config is local
    (a preset or a config file), else measured (and cached)."""
    from lm_predictor.predict.points import raw_config

    raw = raw_config(model_id)
    path = _cache_path(raw.data, dtype) if raw is not None else None
    if path is not None and path.is_file():
        try:
            cached = Footprint.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            cached = None
        if cached is not None:
            return cached
    from lm_predictor import settings
    from lm_predictor.models.resolve import resolve_config

    resolved = resolve_config(model_id, hf_token=settings.hf_token())
    fp = measure_footprint(resolved.config, dtype)
    if path is not None:
        from formula_db.files import write_atomic

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(fp.to_json()))
        except OSError:
            pass  # a cache that cannot be written is only slower
    return fp
