"""Model → config, module, inputs and memory: the "model" stage of the pipeline.

| module     | job                                                                  | heavy? |
|------------|----------------------------------------------------------------------|--------|
| presets    | bundled configs, model-id checks, raw JSON reading                   | no     |
| resolve    | model id → transformers config (preset, local file, hub)             | transformers |
| build      | config → nn.Module on a device; class; parameter count; tiny configs | torch  |
| cache      | KV-cache layout probing and filled caches                            | torch  |
| inputs     | prefill / decode forward inputs                                      | torch  |
| memory     | weights + KV + activation sizing; does it fit the device             | torch  |

The names below are re-exported lazily, so `import lm_predictor.models.presets` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Preset": "presets", "list_presets": "presets", "preset_names": "presets",
    "find_preset": "presets", "check_model_id": "presets", "looks_like_path": "presets",
    "ResolvedConfig": "resolve", "resolve_config": "resolve", "read_config_file": "resolve",
    "config_from_dict": "resolve", "config_hash": "resolve", "load_preset": "resolve",
    "tiny_config": "build", "model_class": "build", "build_model": "build",
    "count_parameters": "build",
    "CacheLayer": "cache", "cache_layout": "cache", "filled_cache": "cache",
    "supports_cache": "cache",
    "build_inputs": "inputs",
    "MemoryEstimate": "memory", "estimate_memory": "memory", "check_fits": "memory",
    "available_bytes": "memory",
    "ModelError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'lm_predictor.models' has no attribute {name!r}")
    if where == "errors":
        from lm_predictor.errors import ModelError

        return ModelError
    return getattr(importlib.import_module(f"lm_predictor.models.{where}"), name)
