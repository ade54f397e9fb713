"""The eager and fused kernel models on hand-computed cases: a tiny Llama decode step (fused bytes
= weights + KV read once + new KV written + the small terms listed below), causal useful
attention FLOPs in prefill, fused RMSNorm bytes, last-position logits."""
from __future__ import annotations

import pytest
import torch

from hardware.catalog import HardwareError, load_catalog
from hardware.kernels import (category_of, check_kernels, estimate_kernels, kernel_calls,
                              kernel_default)
from lm_predictor.models import load_preset, tiny_config
from lm_predictor.testing import trace_config

# tiny Llama: H=64, I=128, L=2, nh=4, nkv=2, hd=16, V=128; bf16 (s=2); batch 2
B, H, I, L, NH, NKV, HD, V, S2 = 2, 64, 128, 2, 4, 2, 16, 128, 2


@pytest.fixture(scope="module")
def config():  # type: ignore[no-untyped-def]
    cfg = tiny_config(load_preset("meta-llama/Llama-3.1-8B"))
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
            cfg.vocab_size) == (H, I, L, NH, NKV, HD, V)
    return cfg


@pytest.fixture(scope="module")
def decode(config):  # type: ignore[no-untyped-def]
    return trace_config(config, B, 1, phase="decode", kv_len=16, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def prefill(config):  # type: ignore[no-untyped-def]
    return trace_config(config, B, 8, phase="prefill", dtype=torch.bfloat16)


def own(trace, kernels, logits=None):  # type: ignore[no-untyped-def]
    calls = kernel_calls(trace.calls, kernels, logits, config=trace.config)
    return {c.module_path: c.self_work for c in calls}


def test_decode_bytes_are_weights_plus_kv_once_plus_new_kv(decode) -> None:  # type: ignore[no-untyped-def]
    s, t = S2, 16 + 1                                # 16 cached tokens + the new one
    x = B * H * s                                   # one hidden state (B x 1 x H)
    weights_read = decode.weight_bytes - V * H * s  # the embedding table is gathered, not read
    kv_all = 2 * B * NKV * t * HD * s               # K and V of 17 tokens, read once per layer
    kv_new = 2 * B * NKV * 1 * HD * s               # the new token's K and V, written in place
    q = B * NH * HD * s
    # small terms per layer: activations in and out of every kernel
    norms = 2 * (x + x)
    linears = ((x + q) + 2 * (x + kv_new // 2) + (q + x)       # q, k, v, o
               + 2 * (x + B * I * s) + (B * I * s + x))        # gate, up, down
    attention = q + q + kv_new + (q + kv_new // 2 + 2 * B * HD * s) + (q + kv_new // 2)
    #            Q read, O written, append reads new KV, rotary reads q, k, cos, sin; writes q, k
    act, gate_mul, residual = 2 * B * I * s, 3 * B * I * s, 2 * 3 * x
    per_layer = norms + linears + attention + act + gate_mul + residual
    top = (B * 8 + x + x) + 2 * x + (x + B * V * s)  # embedding ids+rows, final norm, lm_head io
    expected = weights_read + L * (kv_all + kv_new) + L * per_layer + top
    est = estimate_kernels(decode, load_catalog().get("A100-80GB-SXM"), "bf16", "fused")
    assert est.kernels == "fused" and est.logits == "last"
    assert est.total.bytes == expected == 197264
    # eager: the cache is re-concatenated (read old + new, write all) on top of the SDPA read
    eager = estimate_kernels(decode, load_catalog().get("A100-80GB-SXM"), "bf16", "eager")
    assert eager.total.bytes == decode.totals.bytes_read + decode.totals.bytes_written
    assert eager.total.bytes > est.total.bytes
    assert est.to_json()["total"]["bytes"] == expected
    assert eager.total.flops == decode.totals.flops == est.total.flops  # decode: dense == useful


def test_fused_attention_flops_are_causal_useful(prefill) -> None:  # type: ignore[no-untyped-def]
    seq = 8
    fused, eager = own(prefill, "fused"), own(prefill, "eager")
    path = "model.layers.0.self_attn"
    dense = 2 * B * NH * seq * seq * (HD + HD)            # flop_counter's SDPA convention
    useful = 4 * B * NH * HD * seq * (seq + 1) // 2       # query i sees i + 1 keys
    assert eager[path].flops == dense
    assert fused[path].flops == useful == 18432
    # K and V read once, Q read and O written, new KV appended, rotary on q and k
    s, q = S2, B * NH * seq * HD * S2
    kv = 2 * B * NKV * seq * HD * s
    cos_sin = 2 * seq * HD * s  # cos and sin, (1, seq, hd): no position_ids in prefill
    assert fused[path].bytes_read == q + kv + kv + (q + kv // 2 + cos_sin)
    assert fused[path].bytes_written == q + kv + (q + kv // 2)
    assert fused[path].ops == 3


def test_fused_rmsnorm_bytes_are_input_output_weight(prefill) -> None:  # type: ignore[no-untyped-def]
    path = "model.layers.0.input_layernorm"
    record = next(c for c in prefill.calls if c.module_path == path)
    assert category_of(record) == "norm"
    x = B * 8 * H * S2
    fused = own(prefill, "fused")[path]
    assert (fused.bytes_read, fused.bytes_written, fused.ops) == (x + H * S2, x, 1)
    assert own(prefill, "eager")[path].bytes > 3 * fused.bytes  # bf16 upcasts, pow, mean, casts


def test_last_position_logits(prefill) -> None:  # type: ignore[no-untyped-def]
    seq = 8
    head_all, head_last = own(prefill, "fused", "all")["lm_head"], own(prefill, "fused")["lm_head"]
    assert head_all.flops == 2 * B * seq * H * V
    assert head_last.flops == 2 * B * H * V
    assert head_last.bytes_read == H * V * S2 + B * H * S2
    assert head_last.bytes_written == B * V * S2
    eager_last = own(prefill, "eager", "last")["lm_head"]
    assert eager_last == head_last
    assert own(prefill, "fused")["model.rotary_emb"].bytes == 0


def test_defaults_and_bad_names() -> None:
    assert kernel_default("gpu") == "fused" and kernel_default("cpu") == "eager"
    with pytest.raises(HardwareError, match="unknown kernel model 'flash'"):
        check_kernels("flash")
    with pytest.raises(HardwareError, match="unknown logits mode 'first'"):
        check_kernels("fused", "first")


def test_json_block_names_the_kernel_model(decode) -> None:  # type: ignore[no-untyped-def]
    from hardware.report import kernel_summary

    device = load_catalog().get("A100-80GB-SXM")
    block = kernel_summary(estimate_kernels(decode, device, "bf16"))  # gpu: fused by default
    assert block["kernels"] == "fused" and block["logits"] == "last"
    assert block["total"]["bytes"] == 197264
    assert block["total"]["flops"] == decode.totals.flops
    assert block["total"]["estimate_s"] == pytest.approx(
        sum(c["estimate_s"] for c in block["by_class"]) + block["outside_s"])
