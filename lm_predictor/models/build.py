"""Building models: config -> `nn.Module` on a device (meta by default: nothing allocated), the
class to build, parameter counts, and small same-architecture configs for tests.

`build_model` instantiates the class named in `config.architectures` (or the first auto class
that knows the config) with `from_config` semantics under `torch.device(device)`; on `meta`
this allocates nothing, so a 671B model builds in about a second. The config is copied first:
transformers writes the dtype and attention implementation into the config it is given.

Example:
    >>> from lm_predictor.models import load_preset
    >>> count_parameters(build_model(load_preset("gpt2")))    # on meta: no memory used
    124439808
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import transformers
from transformers import PretrainedConfig, PreTrainedModel

from lm_predictor.errors import ModelError
from lm_predictor.models.resolve import HASH_EXCLUDED, config_from_dict


# ---------------------------------------------------------------------------------------------
# tiny configs for tests

TINY: dict[str, int] = {
    # depth and width
    "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "num_decoder_layers": 2,
    "hidden_size": 64, "n_embd": 64, "d_model": 64,
    "num_attention_heads": 4, "n_head": 4, "num_heads": 4,
    "intermediate_size": 128, "ffn_dim": 128, "n_inner": 128, "d_ff": 128, "d_kv": 16,
    "vocab_size": 128, "decoder_vocab_size": 128,
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
    scaled-down MLA ranks, sliding windows of at most 32, sizes the class leaves None filled
    (`_fill_unset`); per-layer lists (`layer_types`) keep
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
    _fill_unset(d)
    layers = next((overrides[k] for k in LAYER_KEYS if isinstance(overrides.get(k), int)), 2)
    for k, v in list(d.items()):
        if k.endswith("layer_types") and isinstance(v, list) and v and len(v) == old_layers:
            d[k] = [v[i % len(v)] for i in range(layers)]  # keep the per-layer pattern
        if k.endswith("_token_id"):
            d[k] = _in_vocab(v, d.get("vocab_size", 128))
    d.update(overrides)
    return config_from_dict(d, where=f"tiny {d.get('model_type')} config")


def _fill_unset(d: dict[str, Any]) -> None:
    """Sizes some config classes leave None by default and their models then divide by or call
    with (transformers' HunYuan / Ministral `head_dim`, Nemotron `num_key_value_heads`,
    DeepSeek-V2 `num_experts_per_tok`), set to the usual derived value: head size = hidden /
    heads, multi-head attention, top-2 routing."""
    heads = d.get("num_attention_heads")
    if "head_dim" in d and d["head_dim"] is None and isinstance(heads, int) \
            and isinstance(d.get("hidden_size"), int) and "qk_rope_head_dim" not in d:
        d["head_dim"] = d["hidden_size"] // heads
    if "num_key_value_heads" in d and d["num_key_value_heads"] is None and isinstance(heads, int):
        d["num_key_value_heads"] = heads
    experts = ("num_local_experts", "n_routed_experts", "num_experts")
    if "num_experts_per_tok" in d and d["num_experts_per_tok"] is None \
            and any(isinstance(d.get(k), int) for k in experts):
        d["num_experts_per_tok"] = 2


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


