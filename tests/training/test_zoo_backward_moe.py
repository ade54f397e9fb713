"""Mixture-of-experts zoo formulas in a training step: Mixtral, Qwen2-MoE and DeepSeek-V3.

Same check as tests/training/test_zoo_backward.py (whose helpers this reuses): each family's tiny
config is built on `meta` in float32 and traced through one training step (forward with labels,
causal-LM loss, `loss.backward()`) with the SDPA backward counted as the flash and as the math
kernel; every call's forward (activation bytes include what autograd keeps) and `backward`
templates must equal the measured counts, and nothing may be unattributed.

Experts run transformers' default `grouped_mm` implementation on every device (`meta` included):
two `aten._grouped_mm` over all E experts' weights and exactly T x k rows, so the counts never
depend on the routing. Its backward is four grouped GEMMs (grad input and grad weight of gate_up
and down): 12·T·k·h·I FLOPs for any routing, and a gradient for every expert's weights
(3·E·h·I elements written) even when an expert received no token. The formulas follow that
convention (formula_db/zoo/NOTES_moe_and_others.md, "Training steps").
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from lm_predictor.models import build_model

from .test_zoo_backward import _tiny, assert_training_reconciles, predicted_step, training_step

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "mixtral": ("mistralai/Mixtral-8x7B-v0.1", {}),
    # odd sizes, multi-query attention, top-1 routing over 5 experts, three layers, tied lm_head
    "mixtral_odd": ("mistralai/Mixtral-8x7B-v0.1",
                    {"hidden_size": 48, "intermediate_size": 80, "num_attention_heads": 6,
                     "num_key_value_heads": 1, "head_dim": 12, "num_hidden_layers": 3,
                     "num_local_experts": 5, "num_experts_per_tok": 1,
                     "tie_word_embeddings": True}),
    # q/k/v biases, shared expert with a sigmoid gate, routing weights not renormalised
    "qwen2_moe": ("transformers:Qwen2MoeConfig", {"shared_expert_intermediate_size": 96}),
    # renormalised top-3 of 5 experts (in-place division), grouped-query, three layers, tied
    "qwen2_moe_odd": ("transformers:Qwen2MoeConfig",
                      {"hidden_size": 48, "moe_intermediate_size": 40,
                       "shared_expert_intermediate_size": 56, "num_attention_heads": 6,
                       "num_key_value_heads": 2, "num_hidden_layers": 3, "num_experts": 5,
                       "num_experts_per_tok": 3, "norm_topk_prob": True,
                       "tie_word_embeddings": True}),
    # MLA attention (query and value head sizes differ: the flash backward falls back to math),
    # one dense layer then one MoE layer, group-limited routing, renormalised weights
    "deepseek_v3": ("deepseek-ai/DeepSeek-V3", {}),
    # odd sizes, three groups of two experts, top-3 without renormalisation, two shared experts
    "deepseek_v3_odd": ("deepseek-ai/DeepSeek-V3",
                        {"hidden_size": 48, "head_dim": 6, "num_attention_heads": 3,
                         "num_key_value_heads": 3, "q_lora_rank": 24, "kv_lora_rank": 12,
                         "qk_nope_head_dim": 10, "qk_rope_head_dim": 6, "v_head_dim": 14,
                         "moe_intermediate_size": 20, "intermediate_size": 72,
                         "n_routed_experts": 6, "n_group": 3, "topk_group": 2,
                         "num_experts_per_tok": 3, "n_shared_experts": 2,
                         "norm_topk_prob": False, "num_hidden_layers": 3,
                         "tie_word_embeddings": True}),
    # one head (no head transposes, no expanded rope key), top-1, two dense layers then one MoE
    "deepseek_v3_one_head": ("deepseek-ai/DeepSeek-V3",
                             {"num_attention_heads": 1, "num_key_value_heads": 1,
                              "num_experts_per_tok": 1, "num_hidden_layers": 3,
                              "first_k_dense_replace": 2}),
    # no query LoRA (DeepSeek-V2-Lite style: q_proj straight from hidden to the heads)
    "deepseek_v3_no_q_lora": ("deepseek-ai/DeepSeek-V3", {"q_lora_rank": None}),
    # one expert group (Kimi-K2 style): the masked scores reshape without a copy
    "deepseek_v3_one_group": ("deepseek-ai/DeepSeek-V3", {"n_group": 1, "topk_group": 1}),
}
SHAPES = [(1, 3), (2, 5)]
ODD_SHAPES = [(1, 1), (3, 4)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_training_step_reconciles(family: str) -> None:
    preset, overrides = FAMILIES[family]
    shapes = SHAPES if family in ("mixtral", "qwen2_moe", "deepseek_v3") else ODD_SHAPES
    assert_training_reconciles(_tiny(preset, **overrides), shapes)


def test_expert_backward_is_routing_independent() -> None:
    """Hand-derived: the grouped_mm experts' backward is 2 x their forward 6·T·k·h·I FLOPs, and
    writes a weight gradient for every expert (3·E·h·I float32 elements) whatever the routing."""
    config = _tiny("mistralai/Mixtral-8x7B-v0.1")
    batch, seq = 3, 4
    t = training_step(build_model(config, device="meta", dtype=torch.float32), batch, seq, "flash")
    experts = [c for c in t.calls if c.class_name.endswith("MixtralExperts")]
    assert len(experts) == config.num_hidden_layers
    rows = batch * seq * config.num_experts_per_tok
    h, inter, e = config.hidden_size, config.intermediate_size, config.num_local_experts
    for call in experts:
        assert call.inclusive.flops == 6 * rows * h * inter
        grouped = call.backward_ops["aten._grouped_mm"]
        assert grouped.count == 4
        assert grouped.flops == 12 * rows * h * inter
        # grad weights of all experts + grad inputs (rows x I and rows x h)
        assert grouped.bytes_written == 4 * (3 * e * h * inter + rows * inter + rows * h)


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "deepseek_v3"])
def test_trace_free_training_step(family: str) -> None:
    """Forward + backward of a whole step predicted from the config alone equal the traced
    totals, at a shape not used above."""
    preset, overrides = FAMILIES[family]
    config = _tiny(preset, **overrides)
    model = build_model(config, device="meta", dtype=torch.float32)
    batch, seq, kind = 3, 6, "math"
    t = training_step(model, batch, seq, kind)
    totals = t.step_totals()
    predicted = predicted_step(config, batch, seq, kind)
    assert predicted["backward"] == totals.backward.as_dict()
    root = t.calls[0]
    assert {m: predicted["forward"][m] for m in totals.backward.as_dict()} == root.inclusive.as_dict()
    assert predicted["forward"]["activation_bytes"] == root.activation_bytes
