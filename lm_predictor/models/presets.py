"""Bundled presets and model-id classification, without importing torch or transformers.

A preset is the published `config.json` of a well-known model, shipped in `presets/` (file name =
hub id with `/` as `--`; bookkeeping keys `_source` and `_aliases`). `find_preset` matches a hub
id, a file stem, a listed alias or the unique part after the `/`, case-insensitively.
`read_json_object` reads a config file as a plain dict (one-line `ModelError`s), and
`check_model_id` validates a `--model-id` before any heavy import: an existing path, a preset or
something shaped like a hub id. The CLI uses it so that `analyze --model-id ./missing` answers
at once; `resolve.resolve_config` turns the id into a transformers config.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_predictor.errors import ModelError

PRESET_DIR = Path(__file__).parent / "presets"
PRESET_ONLY_KEYS = ("_source", "_aliases")  # bookkeeping in preset files, never config
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Preset:
    """One bundled config file."""

    hub_id: str
    path: Path
    aliases: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------
# presets


def list_presets() -> list[Preset]:
    """The bundled presets, sorted by hub id (read from disk on every call: no global state)."""
    out = []
    for path in sorted(PRESET_DIR.glob("*.json")):
        hub_id = path.stem.replace("--", "/")
        try:
            aliases = tuple(json.loads(path.read_text(encoding="utf-8")).get("_aliases", ()))
        except json.JSONDecodeError as exc:  # a packaging bug, not a user error
            raise ModelError(f"bundled preset {path.name} is not valid JSON ({exc.msg})") from exc
        out.append(Preset(hub_id, path, aliases))
    return sorted(out, key=lambda p: p.hub_id.lower())


def preset_names() -> list[str]:
    """Hub ids of the bundled presets."""
    return [p.hub_id for p in list_presets()]


def find_preset(name: str) -> tuple[Preset, bool] | None:
    """The preset `name` denotes and whether it was named by hub id (vs alias); None if none.

    Case-insensitive; accepts the hub id, the file stem, a listed alias, or the part after the
    `/` when that is unique among the presets (`llama-3.1-8b`)."""
    key = name.strip().lower()
    presets = list_presets()
    for p in presets:
        if key in (p.hub_id.lower(), p.path.stem.lower()):
            return p, True
    for p in presets:
        if key in (a.lower() for a in p.aliases):
            return p, True  # listed aliases are hub ids too (renamed repos)
    short = [p for p in presets if p.hub_id.split("/")[-1].lower() == key]
    return (short[0], False) if len(short) == 1 else None


def looks_like_path(text: str) -> bool:
    """True for strings that can only be a filesystem path (never a hub id)."""
    return (text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..")
            or text.endswith(".json") or "\\" in text or text.count("/") > 1
            or not HUB_ID.match(text))



def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in a config file (one-line `ModelError` if unreadable or not an object)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path} ({type(exc).__name__}: {exc.args[-1]}); "
                         "check the file's permissions and encoding (UTF-8)") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}); fix the file or download config.json again") from exc
    except RecursionError:
        raise ModelError(f"{path} nests JSON too deeply to be a config file; fix the file") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} holds a JSON {type(data).__name__}, not an object; "
                         "config.json must be a JSON object of config keys")
    return data


def local_config_file(text: str) -> Path:
    """The `config.json` a local model path designates (a folder holding one, or the file)."""
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelError(f"model path {text} does not exist; pass a folder containing "
                         "config.json, a config.json file, a preset name or a hub id")
    if path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise ModelError(f"{path} has no config.json; point --model-id at a folder that "
                             "contains config.json or at the config file itself")
        return file.resolve()
    return path.resolve()


def check_model_id(model_id: str) -> None:
    """Fail fast (no heavy import) on a model id that cannot resolve: an empty id or a path that
    does not exist. Presets and hub-shaped ids pass; the hub is consulted later."""
    text = model_id.strip()
    if not text:
        raise ModelError("empty model id; pass a preset name, a hub id or a config.json path")
    if Path(text).expanduser().exists() or looks_like_path(text):
        local_config_file(text)
