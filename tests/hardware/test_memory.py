"""Inference memory from the trace: agreement with analyze's traced peak (tiny Llama on meta, bf16,
both kernel models), the 2-layer probe against the full depth, and the largest batch / longest
context arithmetic on a hand-computed case."""
from __future__ import annotations

import pytest
import torch

from hardware.catalog import HardwareError
from hardware.memory import MemoryBreakdown, largest_fitting, plan_memory
from lm_predictor.models.inputs import build_inputs
from lm_predictor.models.memory import TracedMemory
from lm_predictor.models import build_model, load_preset, tiny_config
from lm_predictor.testing import trace_config
from tracing import trace

B = 2


@pytest.fixture(scope="module")
def config():  # type: ignore[no-untyped-def]
    # 4 layers (the probe traces 2) and a vocabulary large enough for logits to dominate
    return tiny_config(load_preset("meta-llama/Llama-3.1-8B"), num_hidden_layers=4,
                       vocab_size=4096)


def within(a: int, b: int, rel: float = 0.10) -> bool:
    return abs(a - b) <= rel * b


@pytest.mark.parametrize("phase,seq,kv", [("prefill", 32, 0), ("decode", 1, 64)])
def test_eager_memory_agrees_with_the_traced_peak(config, phase, seq, kv) -> None:  # type: ignore[no-untyped-def]
    t = trace_config(config, B, seq, phase=phase, kv_len=kv, dtype=torch.bfloat16)
    b = TracedMemory(config, torch.bfloat16, "eager").breakdown(B, seq, kv)
    assert b.weights_bytes == t.weight_bytes
    # KV cache: 4 layers x (K + V) x 2 heads x 16 dims x 2 bytes per token and sequence
    assert b.kv_cache_bytes == B * (kv + seq) * 4 * 2 * 2 * 16 * 2
    assert within(b.kv_cache_bytes + b.activation_bytes, t.peak_activation_bytes)
    assert 0 < b.activation_bytes < t.peak_activation_bytes


def test_fused_prefill_keeps_the_last_logits_only(config) -> None:  # type: ignore[no-untyped-def]
    seq = 32
    model = build_model(config, device="meta", dtype=torch.bfloat16)
    inputs = build_inputs(model, config, batch_size=B, seq_len=seq, device="meta",
                          attention_mask=False)
    with torch.inference_mode(), trace(model, device_timing=False) as t:
        model(**inputs, logits_to_keep=1)
    fused = TracedMemory(config, torch.bfloat16, "fused").breakdown(B, seq)
    eager = TracedMemory(config, torch.bfloat16, "eager").breakdown(B, seq)
    assert within(fused.kv_cache_bytes + fused.activation_bytes, t.peak_activation_bytes)
    # all-position logits (B x S x V x 2 bytes = 1 MiB) dominate the eager peak
    assert eager.activation_bytes - fused.activation_bytes > B * (seq - 1) * 4096 * 2 // 2
    assert fused.kv_cache_bytes == eager.kv_cache_bytes


def test_probe_depth_does_not_change_activations(config) -> None:  # type: ignore[no-untyped-def]
    two = TracedMemory(config, torch.bfloat16, "eager").breakdown(B, 1, 64)
    full = TracedMemory(config, torch.bfloat16, "eager", probe_layers=None).breakdown(B, 1, 64)
    assert two.activation_bytes == full.activation_bytes
    assert full.traced_peak_bytes > two.traced_peak_bytes  # full depth: 4 layers of cache


class Linear:
    """A hand-made source: 10 GB weights; per sequence and token 1 MB of cache and 0.5 MB of
    activations; context limit 4096."""

    itemsize = 2
    context_limit = 4096

    def breakdown(self, batch: int, seq_len: int, kv_len: int = 0) -> MemoryBreakdown:
        tokens = seq_len + kv_len
        return MemoryBreakdown("eager", batch, seq_len, kv_len, 10**10, batch * tokens * 10**6,
                               batch * seq_len * 5 * 10**5, 0)


def test_max_batch_and_context_by_hand() -> None:
    # prefill of 1000 tokens: 10 GB + b x 1000 x 1.5 MB <= 80 GB -> b <= 46.67
    plan = plan_memory(Linear(), 80 * 10**9, batch_size=4, seq_len=1000)  # type: ignore[arg-type]
    assert plan.breakdown.total == 10**10 + 4 * 1000 * 1_500_000 and plan.fits
    assert plan.max_batch == 46
    # longest prefill at batch 4: 10 GB + 4 x t x 1.5 MB <= 80 GB -> t <= 11666, capped at 4096
    assert plan.max_context == 4096 and plan.context_limit == 4096
    # decode at batch 8 on 500 cached tokens; 90% of 40 GB usable = 36 GB
    plan = plan_memory(Linear(), 40 * 10**9, batch_size=8, seq_len=1, kv_len=500,  # type: ignore[arg-type]
                       usable_fraction=0.9)
    assert plan.usable_bytes == 36 * 10**9
    # batch: 10 GB + b x (501 x 1 MB + 0.5 MB) <= 36 GB -> b <= 26e9 / 501.5e6 = 51.8
    assert plan.max_batch == 51
    # context t = kv + 1: 10 GB + 8 x (t x 1 MB + 0.5 MB) <= 36 GB -> t <= 3249.5
    assert plan.max_context == 3249
    # W8 KV8 halves weights and cache (bf16 -> 8 bits)
    plan = plan_memory(Linear(), 40 * 10**9, batch_size=8, seq_len=1, kv_len=500, w_bits=8,  # type: ignore[arg-type]
                       kv_bits=8)
    assert plan.breakdown.weights_bytes == 5 * 10**9
    assert plan.breakdown.kv_cache_bytes == 8 * 501 * 500_000


def test_largest_fitting_edges() -> None:
    assert largest_fitting(lambda n: n <= 1000, 1, 10**6) == 1000
    assert largest_fitting(lambda n: n <= 1000, 1, 700) == 700
    assert largest_fitting(lambda n: False, 1, 10) == 0
    assert largest_fitting(lambda n: n <= 2, 2, 10) == 2
    with pytest.raises(HardwareError, match="usable fraction"):
        plan_memory(Linear(), 10, usable_fraction=0)  # type: ignore[arg-type]


def test_traced_plan_is_the_boundary(config) -> None:  # type: ignore[no-untyped-def]
    source = TracedMemory(config, torch.bfloat16, "fused")
    weights = source.weights_bytes
    capacity = weights + 2 * 10**6  # 2 MB left for cache and activations
    plan = plan_memory(source, capacity, batch_size=2, seq_len=1, kv_len=64)
    b, t = plan.max_batch, plan.max_context
    assert b > 2 and t > 65
    assert source.breakdown(b, 1, 64).total <= capacity < source.breakdown(b + 1, 1, 64).total
    assert source.breakdown(2, 1, t - 1).total <= capacity < source.breakdown(2, 1, t).total
    # per sequence: 65 tokens x 512 B of cache (4 layers x K,V x 2 heads x 16 dims x 2 B) + its
    # activations (mostly the 4096-entry logits row, 8 KB); both grow linearly with the batch
    one = source.breakdown(1, 1, 64)
    assert one.kv_cache_bytes == 65 * 512
    assert abs(b - (capacity - weights) // (one.kv_cache_bytes + one.activation_bytes)) <= 1


def test_memory_command_agrees_with_the_analyze_peak(tmp_path, user_devices, capsys) -> None:
    """`hardware memory` (eager kernels) reports KV + activations equal to the peak activation
    memory analyze traces at the same shape and dtype, and weights = parameters x itemsize."""
    import json

    from lm_predictor.cli import main

    config = tmp_path / "config.json"
    tiny_config(load_preset("meta-llama/Llama-3.1-8B")).to_json_file(str(config))
    user_devices.write_text(json.dumps({"schema_version": 1, "devices": {"small": {
        "display_name": "1 MB box", "vendor": "test", "kind": "cpu", "memory_gb": 0.001,
        "memory_bandwidth_gbs": 1, "matmul_tflops": {"fp32": 0.1, "bf16": 0.1},
        "sources": [{"title": "test"}]}}}))
    assert main(["hardware", "memory", "--model-id", str(config), "--seq-len", "100",
                 "--hardware", "small", "--batch-size", "2", "--dtype", "bfloat16",
                 "--kernels", "eager", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameters"] == 90432  # hand count in the tiny Llama: see test_models
    assert out["weights_bytes"] == 90432 * 2
    assert main(["analyze", "--model-id", str(config), "--seq-len", "100", "--batch-size", "2",
                 "--dtype", "bfloat16", "--no-store", "--json"]) == 0
    peak = json.loads(capsys.readouterr().out)["totals"]["measured"]["peak_activation_bytes"]
    assert out["kv_cache_bytes"] + out["activation_bytes"] == pytest.approx(peak, rel=0.10)
    assert out["fits"] is (out["total_bytes"] <= 10**6)
    assert main(["hardware", "memory", "--model-id", str(config), "--seq-len", "100",
                 "--hardware", "small", "--batch-size", "64", "--dtype", "bfloat16"]) == 0
    assert "does NOT fit" in capsys.readouterr().out
