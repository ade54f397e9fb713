"""Zoo formulas of mixture-of-experts and other decoder architectures reconcile exactly and predict
without a trace.

Architectures (formula_db/zoo/<arch>.json): Mixtral, Qwen2-MoE, Gemma 2, GPT-NeoX, Falcon,
DeepSeek-V3, each a tiny config traced on `meta`; every call must match its formula on all five
metrics at three odd prefill shapes and three odd decode points, and trace-free prediction must
equal a fresh trace at shapes not used for reconciliation (notes in
formula_db/zoo/NOTES_moe_and_others.md). Decoder layers bind their own cache length and per-layer
flags from `module.list_index` (the cache reports layer 0's length, which already includes this
step's tokens for later layers). MoE experts run `aten._grouped_mm`, which has no FLOP formula in torch's registry;
  `tracing.attention.EXTRA_FLOP_FORMULAS` registers one (2 x rows x K x N, as for mm).
`test_mixtral_routing_vs_uniform` runs the data-dependent 'eager' experts loop on CPU with random
weights and reports how far real routing lands from uniform.
"""
from __future__ import annotations


import pytest
import torch

from formula_db.registry import Registry
from lm_predictor.models import build_model, load_preset, tiny_config
from lm_predictor.testing import assert_predicts, assert_reconciles, trace_config

PREFILL = [(1, 3), (3, 5), (5, 7)]
DECODE = [(1, 1, "decode", 7), (3, 1, "decode", 9), (5, 1, "decode", 11)]
PREDICT = [(7, 9), (2, 17), (4, 1, "decode", 13)]
ALL = ("flops", "vector_flops", "bytes_read", "bytes_written", "activation_bytes")


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry.default(include_user=False)
    assert reg.check() == []
    return reg


def run_arch(config, registry: Registry, layer_key: str, per_layer=None) -> None:
    """Exact reconciliation of every call at PREFILL and DECODE (decoder layers bind their own
    cache length and per-layer flags with `module.list_index`), then trace-free prediction.
    `layer_key`/`per_layer` are kept for callers; nothing is exempted."""
    assert_reconciles(config, PREFILL + DECODE, registry=registry)
    assert_predicts(config, PREDICT, registry=registry)


# -- Mixtral -------------------------------------------------------------------------------------

MIXTRAL = "transformers__models__mixtral__modeling__mixtral__Mixtral"


@pytest.fixture(scope="module")
def mixtral():
    return tiny_config(load_preset("mistralai/Mixtral-8x7B-v0.1"))


def test_mixtral(mixtral, registry) -> None:
    run_arch(mixtral, registry, MIXTRAL + "DecoderLayer")


def test_mixtral_routing_vs_uniform(mixtral, registry) -> None:
    """Eager experts (a loop over the experts hit, data-dependent nonzero/where) on CPU with random
    weights: matmul FLOPs equal the uniform formula exactly (the rows always sum to tokens x top_k);
    weight bytes and the per-expert load depend on the routing, reported here."""
    torch.manual_seed(0)
    model = build_model(mixtral, device="cpu")
    model.set_experts_implementation("eager")
    routes: list[torch.Tensor] = []
    for module in model.modules():
        if type(module).__name__ == "MixtralTopKRouter":
            module.register_forward_hook(lambda m, a, out: routes.append(out[2].clone()))
    batch, seq = 4, 31
    t = trace_config(mixtral, batch, seq, device="cpu", model=model)
    tokens, k, E = batch * seq, mixtral.num_experts_per_tok, mixtral.num_local_experts
    h, inter = mixtral.hidden_size, mixtral.intermediate_size
    uniform = tokens * k / E
    expert_calls = [c for c in t.calls if c.formula_key == MIXTRAL + "Experts"]
    assert len(expert_calls) == len(routes) == mixtral.num_hidden_layers
    for call, idx in zip(expert_calls, routes):
        load = torch.bincount(idx.flatten(), minlength=E).tolist()
        hit = sum(1 for n in load if n)
        assert sum(load) == tokens * k
        assert call.inclusive.flops == 6 * tokens * k * h * inter  # uniform formula, exact
        weight_bytes = 4 * hit * 3 * inter * h  # eager reads only the experts hit
        assert weight_bytes <= 4 * E * 3 * inter * h
        imbalance = max(load) / uniform
        print(f"{call.module_path}: tokens per expert {load}, uniform {uniform:.1f}, "
              f"max/uniform {imbalance:.2f}, experts hit {hit}/{E}")
        assert 1.0 <= imbalance < 2.5  # loose: random router weights, 124 tokens


# -- Qwen2-MoE -----------------------------------------------------------------------------------

QWEN2_MOE = "transformers__models__qwen2__moe__modeling__qwen2__moe__Qwen2Moe"


@pytest.fixture(scope="module")
def qwen2_moe():
    import transformers

    # tiny_config leaves shared_expert_intermediate_size at 5632; shrink it like the others
    return tiny_config(transformers.Qwen2MoeConfig(), shared_expert_intermediate_size=96)


def test_qwen2_moe(qwen2_moe, registry) -> None:
    run_arch(qwen2_moe, registry, QWEN2_MOE + "DecoderLayer")


# -- GPT-NeoX ------------------------------------------------------------------------------------

GPT_NEOX = "transformers__models__gpt__neox__modeling__gpt__neox__GPTNeoX"


@pytest.fixture(scope="module")
def gpt_neox():
    import transformers

    return tiny_config(transformers.GPTNeoXConfig())


def test_gpt_neox(gpt_neox, registry) -> None:
    run_arch(gpt_neox, registry, GPT_NEOX + "Layer")


# -- Falcon --------------------------------------------------------------------------------------

FALCON = "transformers__models__falcon__modeling__falcon__Falcon"


@pytest.fixture(scope="module")
def falcon():
    import transformers

    # tiny_config leaves ffn_hidden_size at 18176; shrink it like intermediate_size
    return tiny_config(transformers.FalconConfig(), ffn_hidden_size=128)


def test_falcon(falcon, registry) -> None:
    run_arch(falcon, registry, FALCON + "DecoderLayer")


# -- Gemma 2 -------------------------------------------------------------------------------------

GEMMA2 = "transformers__models__gemma2__modeling__gemma2__Gemma2"


@pytest.fixture(scope="module")
def gemma2():
    return tiny_config(load_preset("google/gemma-2-9b"))


def test_gemma2(gemma2, registry) -> None:
    assert gemma2.sliding_window > 17  # every tested kv_len + seq_len fits in the window
    assert gemma2.layer_types == ["sliding_attention", "full_attention"]
    run_arch(gemma2, registry, GEMMA2 + "DecoderLayer",
             per_layer=lambda i: {"sliding": gemma2.layer_types[i] == "sliding_attention"})


# -- DeepSeek-V3 ---------------------------------------------------------------------------------

DEEPSEEK_V3 = "transformers__models__deepseek__v3__modeling__deepseek__v3__DeepseekV3"


@pytest.fixture(scope="module")
def deepseek_v3():
    return tiny_config(load_preset("deepseek-ai/DeepSeek-V3"))


def test_deepseek_v3(deepseek_v3, registry) -> None:
    dense = deepseek_v3.first_k_dense_replace
    assert 0 < dense < deepseek_v3.num_hidden_layers  # one dense and one MoE layer
    run_arch(deepseek_v3, registry, DEEPSEEK_V3 + "DecoderLayer",
             per_layer=lambda i: {"is_moe": i >= dense})


def test_deepseek_v3_without_query_lora(registry) -> None:
    """q_lora_rank None (DeepSeek-V2-Lite style): q_proj maps hidden straight to the heads, with
    no q_a_proj / q_a_layernorm / q_b_proj; the same entries bind it (q_rank 0)."""
    config = tiny_config(load_preset("deepseek-ai/DeepSeek-V3"), q_lora_rank=None)
    dense = config.first_k_dense_replace
    run_arch(config, registry, DEEPSEEK_V3 + "DecoderLayer",
             per_layer=lambda i: {"is_moe": i >= dense})


def test_deepseek_v3_one_group(registry) -> None:
    """n_group 1 (Kimi-K2 style routing): the masked scores reshape as a view, no clone."""
    config = tiny_config(load_preset("deepseek-ai/DeepSeek-V3"), n_group=1, topk_group=1)
    dense = config.first_k_dense_replace
    run_arch(config, registry, DEEPSEEK_V3 + "DecoderLayer",
             per_layer=lambda i: {"is_moe": i >= dense})
