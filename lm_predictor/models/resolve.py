"""Model resolution: a `--model-id` to a transformers config (`ResolvedConfig`).

Accepted, in this order: an existing local path (a folder holding `config.json`, or a
`config.json` file); a bundled preset (`presets.find_preset`); a hub id, fetched only when a
token is given (`settings.hf_token()`), `allow_hub` is true and the hub host answers a 2 s TCP
connect. A hub id that also names a preset goes to the hub when it can and falls back to the
preset otherwise, saying why in `note` ("offline: using bundled preset for gpt2").

Every config, whatever its source, is parsed by one function (`config_from_dict`): the JSON must
hold a `model_type` transformers knows; the bookkeeping keys of a preset and `auto_map` (remote
code, never run) are dropped. `config_hash` is the first 16 hex digits of the sha256 of the
canonical JSON of `config.to_dict()` without version and path keys, so the same config read from
a preset, a folder or the hub hashes alike under any transformers version.

Example:
    >>> rc = resolve_config("gpt2", allow_hub=False)
    >>> rc.source, rc.note
    ('preset', 'hub not consulted: using bundled preset for gpt2')
"""
from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import transformers
from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from lm_predictor.errors import ModelError
from lm_predictor.models.presets import (PRESET_DIR, PRESET_ONLY_KEYS, find_preset,  # noqa: F401
                                         local_config_file,
                                         looks_like_path, preset_names, read_json_object)

DROPPED_KEYS = ("auto_map",)  # remote-code pointers: we always use transformers' own classes
HASH_EXCLUDED = ("transformers_version", "_name_or_path", "_commit_hash")
HUB_CONNECT_TIMEOUT_S = 2.0
HUB_ETAG_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ResolvedConfig:
    """A config and where it came from."""

    config: PretrainedConfig
    source: Literal["preset", "local", "hub"]
    model_id: str  # canonical: the preset's hub id, the absolute config.json path, the hub id
    note: str
    config_hash: str


# ---------------------------------------------------------------------------------------------
# parsing


def config_from_dict(data: dict[str, Any], *, where: str) -> PretrainedConfig:
    """The transformers config for a parsed `config.json`; `where` names it in errors."""
    if not isinstance(data, dict):
        raise ModelError(f"{where} holds a JSON {type(data).__name__}, not an object; "
                         "config.json must be a JSON object of config keys")
    data = {k: v for k, v in data.items() if k not in PRESET_ONLY_KEYS + DROPPED_KEYS}
    model_type = data.get("model_type")
    if not model_type:
        raise ModelError(f'{where} has no "model_type"; add the architecture\'s model_type '
                         '(e.g. "model_type": "llama") to config.json')
    if model_type not in CONFIG_MAPPING:
        raise ModelError(f"{where} has model_type {model_type!r}, which transformers "
                         f"{transformers.__version__} does not know; upgrade transformers or "
                         "use a config of a supported architecture")
    try:
        return CONFIG_MAPPING[model_type](**data)
    except Exception as exc:  # transformers validates values; keep its reason, one line
        reason = " ".join(str(exc).split())[:300]
        raise ModelError(f"{where} is not a valid {model_type} config ({reason}); "
                         "fix the offending key in config.json") from exc


def read_config_file(path: Path) -> PretrainedConfig:
    """Parse one `config.json` file into a config (errors are one-line `ModelError`s)."""
    return config_from_dict(read_json_object(path), where=str(path))


def config_hash(config: PretrainedConfig) -> str:
    """First 16 hex digits of sha256 over the canonical JSON of `config.to_dict()`."""
    data = {k: v for k, v in config.to_dict().items() if k not in HASH_EXCLUDED}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_preset(name: str) -> PretrainedConfig:
    """The config of a bundled preset (see `find_preset` for the accepted names)."""
    found = find_preset(name)
    if found is None:
        raise ModelError(f"no bundled preset {name!r}; presets: {', '.join(preset_names())}")
    return read_config_file(found[0].path)


# ---------------------------------------------------------------------------------------------
# resolution


def hub_reachable(timeout_s: float = HUB_CONNECT_TIMEOUT_S) -> bool:
    """Whether the hub host (from `huggingface_hub.constants.ENDPOINT`) accepts a TCP connect."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def fetch_hub_config(model_id: str, token: str) -> PretrainedConfig:
    """Download `<model_id>/config.json` and parse it like any other config file."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(model_id, "config.json", token=token,
                               etag_timeout=HUB_ETAG_TIMEOUT_S)
    except Exception as exc:  # gated, missing, network: all reported the same way
        raise ModelError(f"hub lookup of {model_id} failed ({type(exc).__name__})") from exc
    return read_config_file(Path(str(path)))


def _resolved(config: PretrainedConfig, source: Literal["preset", "local", "hub"],
              model_id: str, note: str) -> ResolvedConfig:
    return ResolvedConfig(config, source, model_id, note, config_hash(config))


def _resolve_local(text: str) -> ResolvedConfig:
    file = local_config_file(text)
    return _resolved(read_config_file(file), "local", str(file), f"local config: {file}")


def resolve_config(model_id: str, *, hf_token: str | None = None,
                   allow_hub: bool = True) -> ResolvedConfig:
    """Resolve a local path, preset name or hub id to a config (see the module docstring)."""
    text = model_id.strip()
    if not text:
        raise ModelError("empty model id; pass a preset name, a hub id or a config.json path")
    if Path(text).expanduser().exists() or looks_like_path(text):
        return _resolve_local(text)
    found = find_preset(text)
    if found is not None and not found[1]:  # a short alias only means the preset
        preset = found[0]
        return _resolved(read_config_file(preset.path), "preset", preset.hub_id,
                         f"bundled preset for {preset.hub_id}")
    hub_id = found[0].hub_id if found else text
    if not allow_hub:
        why = "hub not consulted"
    elif not hf_token:
        why = "no HF_TOKEN"
    elif not hub_reachable():
        why = "offline"
    else:
        try:
            return _resolved(fetch_hub_config(hub_id, hf_token), "hub", hub_id,
                             f"hub: {hub_id}/config.json")
        except ModelError as exc:
            why = str(exc)
    if found is not None:
        return _resolved(read_config_file(found[0].path), "preset", hub_id,
                         f"{why}: using bundled preset for {hub_id}")
    raise ModelError(f"unknown model {text!r} ({why}); set HF_TOKEN to fetch it from the hub, "
                     f"pass a local config.json or folder, or pick a preset: "
                     f"{', '.join(preset_names())}")


