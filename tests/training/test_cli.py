"""`analyze --phase train` and `hardware memory --train` end to end on tiny configs: totals
equal FlopCounterMode's over the same step, nothing unattributed, MFU by hand, training memory
= ZeRO arithmetic + the saved activations of a full-depth trace."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lm_predictor.cli import main
from lm_predictor.models import build_inputs, build_model, load_preset, tiny_config
from tracing.train import trace_training_step


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    config = tiny_config(load_preset("meta-llama/Llama-3.1-8B"), num_hidden_layers=4)
    path = tmp_path_factory.mktemp("llama") / "config.json"
    config.to_json_file(str(path))
    return path, config


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_analyze_train_totals_equal_flop_counter_mode(tiny_llama, capsys) -> None:
    path, config = tiny_llama
    out = run_json(capsys, "analyze", "--model-id", str(path), "--phase", "train",
                   "--batch-size", "2", "--seq-len", "8", "--no-store", "--json",
                   "--attention-backward", "math")
    totals = out["totals"]
    assert out["unattributed"] == {"flops": 0, "vector_flops": 0, "bytes_read": 0,
                                   "bytes_written": 0}
    assert totals["measured"]["flops"] == totals["forward"]["flops"] + totals["backward"]["flops"]
    model = build_model(config, device="cpu")
    inputs = build_inputs(model, config, batch_size=2, seq_len=8, device="cpu",
                          attention_mask=False)
    model.train()
    with FlopCounterMode(display=False) as mode, sdpa_kernel(SDPBackend.MATH):
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert totals["measured"]["flops"] == mode.get_total_flops()
    assert out["training"]["predicted_backward"]["flops"] == totals["backward"]["flops"]


def test_mfu_by_hand(tiny_llama, capsys) -> None:
    path, config = tiny_llama
    out = run_json(capsys, "analyze", "--model-id", str(path), "--phase", "train",
                   "--batch-size", "2", "--seq-len", "8", "--no-store", "--json",
                   "--hardware", "A100-80GB-SXM", "--step-time", "0.001", "--dtype", "float32")
    mfu = out["training"]["mfu"]
    n = sum(p.numel() for p in build_model(config).parameters())
    layers, heads, head_dim, seq = 4, 4, 16, 8
    per_token = 6 * n + 12 * layers * heads * head_dim * seq   # PaLM, appendix B
    assert mfu["parameters"] == n and mfu["palm_flops_per_token"] == per_token
    assert mfu["mfu"] == pytest.approx(per_token * 16 / 0.001 / 19.5e12)  # A100 fp32 peak
    assert out["training"]["estimate"]["estimate_s"] > 0


def test_train_flags_need_the_train_phase(tiny_llama, capsys) -> None:
    path, _ = tiny_llama
    assert main(["analyze", "--model-id", str(path), "--checkpointing", "--no-store"]) == 2
    assert "only apply to --phase train" in capsys.readouterr().err


def test_training_memory_command(tiny_llama, capsys) -> None:
    path, config = tiny_llama
    out = run_json(capsys, "hardware", "memory", "--model-id", str(path), "--seq-len", "8",
                   "--batch-size", "2", "--hardware", "H100-SXM", "--train", "--json")
    n = sum(p.numel() for p in build_model(config).parameters())
    assert out["parameters"] == n
    assert out["weights_bytes"] + out["gradient_bytes"] + out["optimizer_bytes"] == 16 * n
    model = build_model(config, device="meta", dtype=torch.bfloat16)  # full depth, traced
    inputs = build_inputs(model, config, batch_size=2, seq_len=8, device="meta",
                          attention_mask=False)
    traced = trace_training_step(model, inputs, device_timing=False).saved_activation_bytes
    assert out["activation_bytes"] == traced  # 1- and 2-layer probes extrapolate exactly
    sharded = run_json(capsys, "hardware", "memory", "--model-id", str(path), "--seq-len", "8",
                       "--batch-size", "2", "--hardware", "H100-SXM", "--train", "--zero", "3",
                       "--data-parallel", "4", "--checkpointing", "--json")
    assert sharded["weights_bytes"] + sharded["gradient_bytes"] + sharded["optimizer_bytes"] \
        == pytest.approx(16 * n / 4, abs=4)
    assert sharded["activation_bytes"] < traced
