"""trace() on tiny transformer stacks: per-module FLOPs vs FlopCounterMode, meta == CPU,
no_grad == inference_mode."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tracing import Trace, trace

transformers = pytest.importorskip("transformers")

BATCH, SEQ = 2, 8


def gpt2(attn: str) -> Any:
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return transformers.GPT2LMHeadModel(cfg)


def llama(attn: str) -> Any:
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                   bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return transformers.LlamaForCausalLM(cfg)


def bert(attn: str) -> Any:
    cfg = transformers.BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, vocab_size=128, max_position_embeddings=64,
                                  attn_implementation=attn)
    return transformers.BertModel(cfg)


MODELS: dict[str, Callable[[str], Any]] = {"gpt2": gpt2, "llama": llama, "bert": bert}


def build(name: str, attn: str, device: str) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        return MODELS[name](attn).eval()


def run(model: nn.Module, device: str, grad_ctx: Callable[[], Any] = torch.no_grad) -> Trace:
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device=device)
    with grad_ctx(), trace(model) as t:
        out = model(input_ids=ids)
    del out
    return t


def signature(t: Trace) -> list[tuple]:
    """Everything measured per call, op table restricted to ops that cost something."""
    return [(c.call_id, c.module_path, c.self_counters, c.inclusive, c.activation_bytes,
             c.peak_activation_bytes,
             {k: v for k, v in c.ops.items() if any(v.counters().as_dict().values())})
            for c in t.calls]


CASES = [(m, a) for m in MODELS for a in ("eager", "sdpa")]


@pytest.fixture(scope="module")
def traces() -> dict[tuple[str, str, str, str], Trace]:
    out: dict[tuple[str, str, str, str], Trace] = {}
    for name, attn in CASES:
        for device in ("cpu", "meta"):
            for ctx_name, ctx in (("no_grad", torch.no_grad),
                                  ("inference_mode", torch.inference_mode)):
                out[(name, attn, device, ctx_name)] = run(build(name, attn, device), device, ctx)
    return out


@pytest.mark.parametrize("name,attn", CASES)
def test_meta_equals_cpu(traces: dict, name: str, attn: str) -> None:
    cpu, meta = traces[(name, attn, "cpu", "no_grad")], traces[(name, attn, "meta", "no_grad")]
    assert signature(meta) == signature(cpu)
    assert meta.totals == cpu.totals
    assert meta.peak_activation_bytes == cpu.peak_activation_bytes > 0
    assert meta.uncovered_ops == cpu.uncovered_ops
    assert (meta.weight_bytes, meta.buffer_bytes) == (cpu.weight_bytes, cpu.buffer_bytes)
    assert cpu.device == "cpu" and meta.device == "meta"
    assert cpu.calls[0].wall_time_s is not None and meta.calls[0].wall_time_s is None


@pytest.mark.parametrize("name,attn", CASES)
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_no_grad_equals_inference_mode(traces: dict, name: str, attn: str, device: str) -> None:
    a, b = traces[(name, attn, device, "no_grad")], traces[(name, attn, device, "inference_mode")]
    assert signature(a) == signature(b)
    assert a.peak_activation_bytes == b.peak_activation_bytes


@pytest.mark.parametrize("name,attn", CASES)
def test_tiny_models_fully_covered(traces: dict, name: str, attn: str) -> None:
    t = traces[(name, attn, "cpu", "no_grad")]
    assert t.uncovered_ops == {}
    if attn == "sdpa":
        attention = [c for c in t.calls if "aten.scaled_dot_product_attention" in c.ops]
        assert len(attention) == 2  # one fused op per layer
    assert t.config and t.config["vocab_size"] == 128


def flop_counter_by_path(model: nn.Module, device: str) -> dict[str, int]:
    """FlopCounterMode's per-module FLOPs, keyed by our module paths ('' for the model)."""
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device=device)
    with torch.no_grad(), FlopCounterMode(display=False, depth=None) as fc:
        model(input_ids=ids)
    root = type(model).__name__
    by_path: dict[str, int] = {}
    for key, ops in fc.get_flop_counts().items():
        if key == "Global":
            continue
        path = "" if key == root else key.removeprefix(root + ".")
        by_path[path] = sum(ops.values())
    return by_path


@pytest.mark.parametrize("name,attn", CASES)
def test_per_module_flops_match_flop_counter(traces: dict, name: str, attn: str) -> None:
    model = build(name, attn, "cpu")
    reference = flop_counter_by_path(model, "cpu")
    t = traces[(name, attn, "cpu", "no_grad")]
    ours: dict[str, int] = {}
    for call in t.calls:
        ours[call.module_path] = ours.get(call.module_path, 0) + call.inclusive.flops
    assert {p: f for p, f in ours.items() if f} == {p: f for p, f in reference.items() if f}
    assert reference[""] == t.totals.flops > 0


def test_gpt2_flops_by_hand(traces: dict) -> None:
    """2 layers x (qkv, proj, fc, fc-proj, 2 attention matmuls) + lm_head, 2*M*N*K each."""
    t = traces[("gpt2", "sdpa", "cpu", "no_grad")]
    tokens, d, vocab = BATCH * SEQ, 64, 128
    dense = 2 * tokens * d * (3 * d + d + 4 * d + 4 * d)
    attention = 2 * 2 * BATCH * SEQ * SEQ * d  # QK^T and AV over all heads
    assert t.totals.flops == 2 * (dense + attention) + 2 * tokens * d * vocab


def transformer_layer(device: str) -> nn.Module:
    torch.manual_seed(0)
    with torch.device(device):
        return nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0), 2,
                                 enable_nested_tensor=False).eval()


@pytest.mark.parametrize("ctx", [torch.no_grad, torch.inference_mode])
def test_transformer_encoder_meta_equals_cpu(ctx: Callable[[], Any]) -> None:
    traced = {}
    for device in ("cpu", "meta"):
        model = transformer_layer(device)
        x = torch.zeros(SEQ, BATCH, 32, device=device)
        with ctx(), trace(model) as t:
            model(x)
        traced[device] = t
    assert signature(traced["meta"]) == signature(traced["cpu"])
    assert traced["cpu"].uncovered_ops == {}
    layer = traced["cpu"].by_path("layers.0")[0]
    assert layer.activation_bytes == SEQ * BATCH * 32 * 4
