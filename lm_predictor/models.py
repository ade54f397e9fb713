"""Model loading: resolve a `--model-id` to a transformers config, build the model, size it.

What it does:
- `resolve_config(model_id)` turns a model id into a `ResolvedConfig`. Accepted, in this order:
  an existing local path (a folder holding `config.json`, or a `config.json` file); a bundled
  preset (`lm_predictor/presets/*.json`: the published `config.json` of a few well-known models,
  matched case-insensitively by hub id, by the name after the `/`, or by a listed alias); a hub
  id, fetched only when a token is given, `allow_hub` is true and the hub host answers a 2 s
  TCP connect. A hub id that also names a preset goes to the hub when it can and falls back to
  the preset otherwise, saying why in `note` ("offline: using bundled preset for gpt2").
- Every config, whatever its source, is parsed by one function (`config_from_dict`): the JSON
  must hold a `model_type` transformers knows; the bookkeeping keys `_source`/`_aliases` of a
  preset and `auto_map` (remote code, never run: the native implementation is used) are dropped.
- `config_hash` is the first 16 hex digits of the sha256 of the canonical JSON (sorted keys) of
  `config.to_dict()` without `transformers_version` and `_name_or_path`, so the same config read
  from a preset, a folder or the hub hashes alike under any transformers version.
- `build_model` instantiates the class named in `config.architectures` (or the first auto class
  that knows the config) with `from_config` semantics under `torch.device(device)`; on `meta`
  this allocates nothing, so a 671B model builds in about a second. The config is copied first:
  transformers writes the dtype and attention implementation into the config it is given.
- `estimate_memory` / `check_fits` refuse to build a model on a real device that cannot hold it.

Limits: text models with a flat config (no `text_config` handling in `tiny_config`); the hub is
reached only through `huggingface_hub.hf_hub_download`; activation memory is a rough upper
estimate (see `estimate_memory`); `check_fits` knows cpu (Linux `/proc/meminfo`) and cuda only.

Example:
    >>> from lm_predictor.models import build_model, count_parameters, resolve_config
    >>> rc = resolve_config("gpt2", allow_hub=False)
    >>> rc.source, rc.note
    ('preset', 'hub not consulted: using bundled preset for gpt2')
    >>> count_parameters(build_model(rc.config))         # on meta: no memory used
    124439808
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
import transformers
from transformers import PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

PRESET_DIR = Path(__file__).parent / "presets"
PRESET_ONLY_KEYS = ("_source", "_aliases")  # bookkeeping in preset files, never config
DROPPED_KEYS = ("auto_map",)  # remote-code pointers: we always use transformers' own classes
HASH_EXCLUDED = ("transformers_version", "_name_or_path", "_commit_hash")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_CONNECT_TIMEOUT_S = 2.0
HUB_ETAG_TIMEOUT_S = 5.0
GIB = 1024**3


from lm_predictor.errors import ModelError  # noqa: E402  (re-exported)


@dataclass(frozen=True)
class ResolvedConfig:
    """A config and where it came from."""

    config: PretrainedConfig
    source: Literal["preset", "local", "hub"]
    model_id: str  # canonical: the preset's hub id, the absolute config.json path, the hub id
    note: str
    config_hash: str


@dataclass(frozen=True)
class Preset:
    """One bundled config file."""

    hub_id: str
    path: Path
    aliases: tuple[str, ...] = field(default_factory=tuple)


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
    return config_from_dict(data, where=str(path))


def config_hash(config: PretrainedConfig) -> str:
    """First 16 hex digits of sha256 over the canonical JSON of `config.to_dict()`."""
    data = {k: v for k, v in config.to_dict().items() if k not in HASH_EXCLUDED}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def load_preset(name: str) -> PretrainedConfig:
    """The config of a bundled preset (see `find_preset` for the accepted names)."""
    found = find_preset(name)
    if found is None:
        raise ModelError(f"no bundled preset {name!r}; presets: {', '.join(preset_names())}")
    return read_config_file(found[0].path)


# ---------------------------------------------------------------------------------------------
# resolution


def looks_like_path(text: str) -> bool:
    """True for strings that can only be a filesystem path (never a hub id)."""
    return (text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..")
            or text.endswith(".json") or "\\" in text or text.count("/") > 1
            or not HUB_ID.match(text))


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
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelError(f"model path {text} does not exist; pass a folder containing "
                         "config.json, a config.json file, a preset name or a hub id")
    if path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise ModelError(f"{path} has no config.json; point --model-id at a folder that "
                             "contains config.json or at the config file itself")
    else:
        file = path
    file = file.resolve()
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


# ---------------------------------------------------------------------------------------------
# tiny configs for tests

TINY: dict[str, int] = {
    # depth and width
    "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "num_decoder_layers": 2,
    "hidden_size": 64, "n_embd": 64, "d_model": 64,
    "num_attention_heads": 4, "n_head": 4, "num_heads": 4,
    "intermediate_size": 128, "ffn_dim": 128, "n_inner": 128, "d_ff": 128, "d_kv": 16,
    "vocab_size": 128,
    # mixture of experts
    "num_local_experts": 4, "n_routed_experts": 4, "num_experts": 4, "num_experts_per_tok": 2,
    "moe_intermediate_size": 32, "n_group": 2, "topk_group": 1,
    # multi-head latent attention (DeepSeek)
    "q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
    "v_head_dim": 16,
}
TINY_CAPPED: dict[str, int] = {  # shrunk to at most this, kept when smaller
    "first_k_dense_replace": 1, "max_window_layers": 2, "sliding_window": 32,
    "sliding_window_size": 32,
}
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def tiny_config(config: PretrainedConfig, **overrides: Any) -> PretrainedConfig:
    """A small config of the same architecture, for tests: 2 layers, hidden 64, 4 heads, kv heads
    2 under GQA (1 under MQA, 4 under MHA), intermediate 128, vocab 128, 4 experts with top-2,
    scaled-down MLA ranks, sliding windows of at most 32; per-layer lists (`layer_types`) keep
    their pattern for the new depth and token ids outside the new vocab become 0. `overrides`
    are applied last (a layer-count override also sizes the per-layer lists)."""
    d = copy.deepcopy(config.to_dict())
    for k in HASH_EXCLUDED:
        d.pop(k, None)
    old_layers = next((d[k] for k in LAYER_KEYS if isinstance(d.get(k), int)), None)
    old_heads = next((d[k] for k in ("num_attention_heads", "n_head", "num_heads")
                      if isinstance(d.get(k), int)), None)
    old_hidden = next((d[k] for k in ("hidden_size", "n_embd", "d_model")
                       if isinstance(d.get(k), int)), None)
    old_head_dim = d.get("head_dim")
    for k, v in TINY.items():
        if d.get(k) is not None:
            d[k] = v
    for k, v in TINY_CAPPED.items():
        if isinstance(d.get(k), int):
            d[k] = min(d[k], v)
    if isinstance(d.get("num_key_value_heads"), int):
        kv = d["num_key_value_heads"]
        d["num_key_value_heads"] = 4 if kv == old_heads else (1 if kv == 1 else 2)
    if isinstance(d.get("word_embed_proj_dim"), int):  # OPT: projection only when it differs
        d["word_embed_proj_dim"] = 64 if d["word_embed_proj_dim"] == old_hidden else 32
    if "qk_rope_head_dim" in d:  # MLA: derived sizes
        d["qk_head_dim"] = d["qk_nope_head_dim"] + d["qk_rope_head_dim"]
        if "head_dim" in d:
            d["head_dim"] = d["qk_rope_head_dim"]
    elif isinstance(old_head_dim, int):
        d["head_dim"] = 16
        if d.get("query_pre_attn_scalar") == old_head_dim:  # Gemma 2 scales by head_dim
            d["query_pre_attn_scalar"] = 16
    layers = next((overrides[k] for k in LAYER_KEYS if isinstance(overrides.get(k), int)), 2)
    for k, v in list(d.items()):
        if k.endswith("layer_types") and isinstance(v, list) and v and len(v) == old_layers:
            d[k] = [v[i % len(v)] for i in range(layers)]  # keep the per-layer pattern
        if k.endswith("_token_id"):
            d[k] = _in_vocab(v, d.get("vocab_size", 128))
    d.update(overrides)
    return config_from_dict(d, where=f"tiny {d.get('model_type')} config")


def _in_vocab(token: Any, vocab: int) -> Any:
    if isinstance(token, int) and not isinstance(token, bool):
        return token if 0 <= token < vocab else 0
    if isinstance(token, list):
        return [_in_vocab(t, vocab) for t in token]
    return token


# ---------------------------------------------------------------------------------------------
# building

AUTO_CLASSES = ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForMaskedLM",
                "AutoModel")


def model_class(config: PretrainedConfig, architecture: str | None = None
                ) -> type[PreTrainedModel]:
    """The transformers class to build: `architecture`, else the first of `config.architectures`
    that transformers ships for this config, else the first auto class that knows the config."""
    names = [architecture] if architecture else list(getattr(config, "architectures", None) or [])
    for name in names:
        cls = getattr(transformers, name, None)
        if (isinstance(cls, type) and issubclass(cls, PreTrainedModel)
                and isinstance(config, cls.config_class)):
            return cls
    if architecture:
        raise ModelError(f"{architecture!r} is not a transformers model class for model_type "
                         f"{config.model_type!r}; use one of its architectures, e.g. "
                         f"{(config.architectures or ['<Name>ForCausalLM'])[0]}")
    for auto_name in AUTO_CLASSES:
        mapping = getattr(transformers, auto_name)._model_mapping
        if type(config) in mapping:
            return mapping[type(config)]
    raise ModelError(f"no transformers model class builds model_type {config.model_type!r}; "
                     "set \"architectures\" in config.json")


def build_model(config: PretrainedConfig, *, device: str = "meta",
                dtype: torch.dtype = torch.float32, attn_implementation: str | None = None,
                architecture: str | None = None) -> torch.nn.Module:
    """Instantiate the model (random init; nothing allocated on `meta`) in eval mode.

    `attn_implementation=None` lets transformers choose (sdpa where the model supports it);
    `architecture` overrides the class (e.g. "BertModel" for the bare encoder)."""
    cls = model_class(config, architecture)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    with torch.device(device):
        model = cls._from_config(copy.deepcopy(config), **kwargs)
    return model.eval()


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters, each shared (tied) tensor counted once; buffers excluded."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one forward pass needs on a device."""

    weights_bytes: int
    activation_bytes_estimate: int
    kv_cache_bytes: int
    total: int


def _text_dims(config: PretrainedConfig) -> dict[str, int]:
    c = config.get_text_config()
    hidden = int(c.hidden_size)
    heads = int(c.num_attention_heads)
    inter = next((getattr(c, k) for k in ("intermediate_size", "ffn_dim", "n_inner", "d_ff")
                  if isinstance(getattr(c, k, None), int)), 4 * hidden)
    top_k = getattr(c, "num_experts_per_tok", None)
    moe_inter = getattr(c, "moe_intermediate_size", None) or inter
    if isinstance(top_k, int):
        inter = max(inter, top_k * moe_inter)
    return {"hidden": hidden, "heads": heads, "inter": int(inter), "vocab": int(c.vocab_size)}


def estimate_memory(config_or_model: PretrainedConfig | torch.nn.Module, *, batch_size: int,
                    seq_len: int, kv_len: int = 0, dtype: torch.dtype = torch.float32
                    ) -> MemoryEstimate:
    """Weights, activations and KV cache of one forward pass over `seq_len` new tokens on top of
    `kv_len` cached ones, in `dtype`.

    - weights: parameter count of the meta-built model x itemsize (tied weights once).
    - KV cache: the per-layer key/value shapes the model really caches (probed by a one-token
      forward on meta, so MLA latents and sliding windows are exact) x (kv_len + seq_len) tokens,
      sliding layers capped at their window.
    - activations, a rough upper estimate of the live set at the peak of one inference forward
      pass (layers free their intermediates without autograd, so there is no factor of depth):
      B*S*(7*H + 3*I) for the residual stream, norms, q/k/v, attention output and the gated MLP
      (I = max(intermediate, top_k * expert intermediate)), + 2*B*heads*S*(S + kv) for the eager
      attention scores and their softmax (SDPA/flash kernels need less), + B*S*V for the logits.
    """
    from lm_predictor.inputs import cache_layout

    if isinstance(config_or_model, torch.nn.Module):
        model, config = config_or_model, config_or_model.config
    else:
        config = config_or_model
        model = build_model(config, device="meta", dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    weights = count_parameters(model) * itemsize
    tokens = kv_len + seq_len
    kv = sum(lay.bytes_per_token * min(tokens, lay.window or tokens)
             for lay in cache_layout(model, dtype=dtype)) * batch_size
    dims = _text_dims(config)
    b, s = batch_size, seq_len
    act = (b * s * (7 * dims["hidden"] + 3 * dims["inter"])
           + 2 * b * dims["heads"] * s * tokens + b * s * dims["vocab"]) * itemsize
    return MemoryEstimate(weights, act, kv, weights + act + kv)


def available_bytes(device: str) -> int | None:
    """Free memory on `device`: MemAvailable for cpu, `mem_get_info` for cuda; None if unknown."""
    dev = torch.device(device)
    if dev.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(dev)[0])
    return None


def check_fits(estimate: MemoryEstimate, device: str) -> None:
    """Raise `ModelError` when `estimate.total` exceeds the free memory of `device`.

    `meta` always fits; devices whose free memory cannot be read (mps, xpu, ...) are not checked."""
    if torch.device(device).type == "meta":
        return
    free = available_bytes(device)
    if free is None or estimate.total <= free:
        return
    raise ModelError(
        f"model needs ~{estimate.total / GIB:.1f} GiB (weights {estimate.weights_bytes / GIB:.1f}, "
        f"activations {estimate.activation_bytes_estimate / GIB:.1f}, KV cache "
        f"{estimate.kv_cache_bytes / GIB:.1f}) but {device} has {free / GIB:.1f} GiB available; "
        "use --device meta to analyse without allocating")
