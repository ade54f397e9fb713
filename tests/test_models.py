"""Model loading: presets build on meta with their published parameter counts; model ids resolve
(preset, alias, local folder or file, simulated hub) with one-line errors; tiny configs build;
prefill/decode inputs run on meta and CPU with a KV cache of the right length; memory checks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lm_predictor.models import resolve as models
from lm_predictor.models import build_inputs, cache_layout
from lm_predictor.models import (MemoryEstimate, ModelError, build_model, check_fits,
                                 config_hash, count_parameters, estimate_memory, load_preset,
                                 preset_names, resolve_config, tiny_config)

# Published parameter counts (model cards / safetensors totals; tied embeddings counted once).
# Exact where the figure is exact. DeepSeek-V3's "671B" is the main model without the 14B MTP
# module, which transformers does not build: 1% tolerance there, as for OPT's "125.2M".
PUBLISHED: dict[str, tuple[int, float]] = {
    "gpt2": (124_439_808, 0.0),
    "facebook/opt-125m": (125_239_296, 0.01),
    "bert-base-uncased": (109_482_240, 0.0),  # BertModel, the published 110M figure
    "meta-llama/Llama-2-7b-hf": (6_738_415_616, 0.0),
    "meta-llama/Llama-3.1-8B": (8_030_261_248, 0.0),
    "meta-llama/Llama-3.1-70B": (70_553_706_496, 0.0),
    "mistralai/Mistral-7B-v0.1": (7_241_732_096, 0.0),
    "mistralai/Mixtral-8x7B-v0.1": (46_702_792_704, 0.0),
    "Qwen/Qwen2.5-7B": (7_615_616_512, 0.0),
    "google/gemma-2-9b": (9_241_705_984, 0.0),
    "microsoft/Phi-3-mini-4k-instruct": (3_821_079_552, 0.0),
    "deepseek-ai/DeepSeek-V3": (671_000_000_000, 0.01),
}
B, S, N = 2, 8, 12  # batch, prompt length, cached tokens


@pytest.fixture(autouse=True)
def _quiet(recwarn: pytest.WarningsRecorder) -> None:
    """transformers warns about random init and token ids; not what these tests are about."""


@pytest.fixture(scope="module")
def meta_models() -> dict[str, torch.nn.Module]:
    out = {}
    for name in PUBLISHED:
        arch = "BertModel" if name == "bert-base-uncased" else None
        out[name] = build_model(load_preset(name), architecture=arch)
    return out


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)


def one_line_error(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ModelError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


# ------------------------------------------------------------------------------------ presets


def test_preset_list() -> None:
    assert sorted(preset_names(), key=str.lower) == sorted(PUBLISHED, key=str.lower)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_builds_on_meta_with_published_count(
        name: str, meta_models: dict[str, torch.nn.Module]) -> None:
    model = meta_models[name]
    assert all(p.device.type == "meta" for p in model.parameters())
    assert not model.training
    expected, rtol = PUBLISHED[name]
    got = count_parameters(model)
    assert abs(got - expected) <= rtol * expected, f"{name}: {got:,} vs {expected:,}"


def test_preset_files_are_plain_configs() -> None:
    for path in models.PRESET_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        hub_id = path.stem.replace("--", "/")
        assert data["_source"].startswith(f"{hub_id}/config.json as published on the Hugging Face")
        assert data["model_type"] and data["architectures"]
        assert "_source" not in load_preset(hub_id).to_dict()


# --------------------------------------------------------------------------------- resolution


def test_resolve_preset_by_hub_id_case_insensitive_and_alias() -> None:
    rc = resolve_config("META-LLAMA/llama-3.1-8b", allow_hub=False)
    assert (rc.source, rc.model_id) == ("preset", "meta-llama/Llama-3.1-8B")
    assert rc.config.num_key_value_heads == 8 and rc.config.rope_parameters["rope_type"] == "llama3"
    assert len(rc.config_hash) == 16 and int(rc.config_hash, 16) >= 0
    short = resolve_config("llama-3.1-8b", hf_token="tok")  # an alias never goes to the hub
    assert short.source == "preset" and short.config_hash == rc.config_hash
    assert short.note == "bundled preset for meta-llama/Llama-3.1-8B"
    renamed = resolve_config("openai-community/gpt2", allow_hub=False)
    assert renamed.model_id == "gpt2"


def test_resolve_offline_and_tokenless_notes(offline: None) -> None:
    rc = resolve_config("meta-llama/Llama-3.1-8B", hf_token="hf_x")
    assert rc.note == "offline: using bundled preset for meta-llama/Llama-3.1-8B"
    assert resolve_config("gpt2").note == "no HF_TOKEN: using bundled preset for gpt2"


def test_resolve_hub_when_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: True)
    calls: list[tuple[str, str]] = []

    def fetch(model_id: str, token: str) -> Any:
        calls.append((model_id, token))
        if model_id == "gpt2":
            raise ModelError("hub lookup of gpt2 failed (GatedRepoError)")
        return tiny_config(load_preset("meta-llama/Llama-3.1-8B"))

    monkeypatch.setattr(models, "fetch_hub_config", fetch)
    rc = resolve_config("someone/llama-like", hf_token="hf_x")
    assert (rc.source, rc.model_id, rc.config.hidden_size) == ("hub", "someone/llama-like", 64)
    fallback = resolve_config("GPT2", hf_token="hf_x")
    assert fallback.source == "preset"
    assert fallback.note == ("hub lookup of gpt2 failed (GatedRepoError): "
                             "using bundled preset for gpt2")
    assert calls == [("someone/llama-like", "hf_x"), ("gpt2", "hf_x")]


def test_unknown_hub_id_lists_presets(offline: None) -> None:
    msg = one_line_error(resolve_config, "acme/unknown-7b", hf_token="hf_x")
    assert "acme/unknown-7b" in msg and "offline" in msg
    assert all(name in msg for name in PUBLISHED)


def test_local_dir_and_config_file(tmp_path: Path) -> None:
    src = models.PRESET_DIR / "mistralai--Mistral-7B-v0.1.json"
    shutil.copy(src, tmp_path / "config.json")
    from_dir = resolve_config(str(tmp_path))
    from_file = resolve_config(str(tmp_path / "config.json"))
    preset = resolve_config("mistralai/Mistral-7B-v0.1", allow_hub=False)
    assert from_dir.source == from_file.source == "local"
    assert from_dir.model_id == str((tmp_path / "config.json").resolve())
    assert from_dir.config_hash == from_file.config_hash == preset.config_hash
    assert from_dir.config.sliding_window == 4096


@pytest.mark.parametrize("content,expect", [
    ('{"model_type": "llama", "hidden_size": ', "is not valid JSON"),
    ('{"hidden_size": 64}', 'has no "model_type"'),
    ('{"model_type": "no-such-arch"}', "does not know"),
    ('[1, 2]', "not an object"),
])
def test_bad_config_json_is_one_line(tmp_path: Path, content: str, expect: str) -> None:
    (tmp_path / "config.json").write_text(content)
    assert expect in one_line_error(resolve_config, str(tmp_path))


def test_missing_paths_are_one_line(tmp_path: Path) -> None:
    assert "does not exist" in one_line_error(resolve_config, str(tmp_path / "nope"))
    assert "does not exist" in one_line_error(resolve_config, "./models/absent")
    assert "has no config.json" in one_line_error(resolve_config, str(tmp_path))


# ------------------------------------------------------------------------------ tiny & build


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B", "gpt2", "bert-base-uncased"])
def test_tiny_builds_on_cpu_and_meta(name: str) -> None:
    cfg = tiny_config(load_preset(name))
    before = config_hash(cfg)
    cpu, meta = build_model(cfg, device="cpu"), build_model(cfg, device="meta")
    assert config_hash(cfg) == before  # build_model does not write into the config
    assert count_parameters(cpu) == count_parameters(meta) < 300_000
    assert type(cpu).__name__ == cfg.architectures[0]
    for model, dev in ((cpu, "cpu"), (meta, "meta")):
        kw = build_inputs(model, cfg, batch_size=B, seq_len=S, device=dev)
        assert ("token_type_ids" in kw) == (name == "bert-base-uncased")
        with torch.inference_mode():
            out = model(**kw)
        assert tuple(out.logits.shape) == (B, S, 128)


def test_tiny_keeps_the_architecture() -> None:
    mix = tiny_config(load_preset("mistralai/Mixtral-8x7B-v0.1"))
    assert (mix.num_local_experts, mix.num_experts_per_tok, mix.num_key_value_heads) == (4, 2, 2)
    ds = build_model(tiny_config(load_preset("deepseek-ai/DeepSeek-V3")))
    assert [type(layer.mlp).__name__ for layer in ds.model.layers] == ["DeepseekV3MLP",
                                                                       "DeepseekV3MoE"]
    gemma = tiny_config(load_preset("google/gemma-2-9b"), num_hidden_layers=4)
    assert gemma.layer_types[:2] == ["sliding_attention", "full_attention"]
    assert tiny_config(load_preset("meta-llama/Llama-2-7b-hf")).num_key_value_heads == 4  # MHA


# ------------------------------------------------------------------------------------ decode


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B", "gpt2"])
def test_decode_step_sees_the_cache(name: str, device: str) -> None:
    cfg = tiny_config(load_preset(name))
    model = build_model(cfg, device=device)
    kw = build_inputs(model, cfg, batch_size=B, seq_len=S, phase="decode", kv_len=N,
                      device=device)
    assert tuple(kw["input_ids"].shape) == (B, 1) and kw["use_cache"] is True
    cache = kw["cache"]
    assert cache.get_seq_length() == N
    assert ("attention_mask" in kw) == (device == "cpu")
    if device == "cpu":
        assert tuple(kw["attention_mask"].shape) == (B, N + 1)
        assert kw["position_ids"].tolist() == [[N]] * B
    with torch.inference_mode():
        out = model(**kw)
    assert tuple(out.logits.shape) == (B, 1, 128)
    assert cache.get_seq_length() == N + 1
    layer = cache.layers[0]
    assert layer.keys.shape[-2] == N + 1 and layer.keys.device.type == device


def decode_flops(model: torch.nn.Module, cfg: Any, kv_len: int) -> int:
    kw = build_inputs(model, cfg, batch_size=B, seq_len=1, phase="decode", kv_len=kv_len)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(**kw)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B", "gpt2"])
def test_decode_attention_flops_grow_with_kv_len(name: str) -> None:
    """Eager attention: q.k^T and p.v each cost 2*B*heads*head_dim*(kv_len + 1) per layer, the
    rest of the step does not depend on kv_len."""
    cfg = tiny_config(load_preset(name))
    model = build_model(cfg, attn_implementation="eager")
    heads, layers = cfg.num_attention_heads, cfg.num_hidden_layers
    head_dim = cfg.hidden_size // heads
    delta = decode_flops(model, cfg, 2 * N) - decode_flops(model, cfg, N)
    assert delta == 4 * B * heads * head_dim * N * layers


def test_prefill_on_a_cache_and_decode_errors() -> None:
    cfg = tiny_config(load_preset("Qwen/Qwen2.5-7B"))
    model = build_model(cfg, device="cpu")
    kw = build_inputs(model, cfg, batch_size=B, seq_len=S, kv_len=N, device="cpu")
    with torch.inference_mode():
        assert tuple(model(**kw).logits.shape) == (B, S, 128)
    assert kw["cache"].get_seq_length() == N + S
    bert_cfg = tiny_config(load_preset("bert-base-uncased"))
    bert = build_model(bert_cfg)
    assert "KV cache" in one_line_error(build_inputs, bert, bert_cfg, batch_size=1, seq_len=4,
                                        phase="decode", kv_len=4)
    assert cache_layout(bert) == []


def test_deepseek_caches_the_latent() -> None:
    """transformers 5.2x caches MLA's compressed latent (kv_lora_rank) and the rope key."""
    cfg = tiny_config(load_preset("deepseek-ai/DeepSeek-V3"))
    lay = cache_layout(build_model(cfg))[0]
    assert (lay.key_heads, lay.key_dim, lay.value_heads, lay.value_dim) == (1, 16, 1, 8)


# ------------------------------------------------------------------------------------ memory


def test_memory_estimate_parts(meta_models: dict[str, torch.nn.Module]) -> None:
    est = estimate_memory(meta_models["meta-llama/Llama-3.1-8B"], batch_size=1, seq_len=128,
                          kv_len=896, dtype=torch.bfloat16)
    assert est.weights_bytes == 8_030_261_248 * 2
    assert est.kv_cache_bytes == 2 * 32 * 8 * 128 * 1024 * 2  # K+V, layers, kv heads, dim, tokens
    assert est.total == est.weights_bytes + est.activation_bytes_estimate + est.kv_cache_bytes
    assert 128 * 128_256 * 2 < est.activation_bytes_estimate < est.weights_bytes // 10


def test_memory_check_refuses_70b_on_cpu(meta_models: dict[str, torch.nn.Module]) -> None:
    est = estimate_memory(meta_models["meta-llama/Llama-3.1-70B"], batch_size=8, seq_len=4096,
                          kv_len=0, dtype=torch.float32)
    assert est.weights_bytes == 70_553_706_496 * 4
    msg = one_line_error(check_fits, est, "cpu")
    assert msg.startswith("model needs ~") and "(weights 262.8, activations" in msg
    assert "but cpu has" in msg and msg.endswith("use --device meta to analyse without allocating")
    check_fits(est, "meta")  # meta always fits
    check_fits(MemoryEstimate(1, 1, 0, 2), "cpu")


def test_memory_estimate_from_config() -> None:
    cfg = tiny_config(load_preset("gpt2"))
    est = estimate_memory(cfg, batch_size=1, seq_len=4, kv_len=4, dtype=torch.float32)
    assert est.weights_bytes == count_parameters(build_model(cfg)) * 4
    assert est.kv_cache_bytes == 2 * 2 * 64 * 8 * 4  # K+V, 2 layers, hidden 64, 8 tokens, fp32
