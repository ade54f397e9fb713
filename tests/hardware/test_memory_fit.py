"""Memory fit: weights + KV cache + activations at bit widths, largest batch, on hand-computed
cases and through `lm-predictor hardware memory` on a tiny Llama config."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardware.memory_fit import MemoryNeeds, fit_memory
from lm_predictor.cli import main
from lm_predictor.models import load_preset, tiny_config


def test_fit_by_hand() -> None:
    # an 8B-parameter model, 32 layers x 8 KV heads x 128 dims x (K+V) = 131072 values per token
    needs = MemoryNeeds(8 * 10**9, 131072 * 4096, 0)
    fit = fit_memory(needs, 80 * 10**9, batch_size=4, w_bits=16, kv_bits=16)
    assert fit.weights_bytes == 16 * 10**9
    assert fit.kv_bytes == 4 * 131072 * 4096 * 2          # 4 GiB
    assert fit.total_bytes == 16 * 10**9 + 4 * 2**30 and fit.fits
    assert fit.max_batch == (64 * 10**9) // 2**30         # 59 sequences of 1 GiB
    int4 = fit_memory(needs, 80 * 10**9, w_bits=4, kv_bits=8)
    assert int4.weights_bytes == 4 * 10**9
    assert int4.max_batch == (76 * 10**9) // 2**29         # 141 sequences of 0.5 GiB


def test_activations_and_usable_fraction() -> None:
    needs = MemoryNeeds(1000, 10, 30)
    fit = fit_memory(needs, 10_000, batch_size=2, w_bits=8, a_bits=16, kv_bits=4,
                     usable_fraction=0.5)
    assert (fit.usable_bytes, fit.weights_bytes, fit.kv_bytes, fit.activation_bytes) == (
        5000, 1000, 10, 120)
    assert fit.total_bytes == 1130
    assert fit.max_batch == (4000 * 8) // (10 * 4 + 30 * 16)  # 61
    assert not fit_memory(needs, 900).fits and fit_memory(needs, 900).max_batch == 0
    assert fit_memory(MemoryNeeds(10, 0, 0), 100).max_batch is None  # nothing grows
    with pytest.raises(ValueError, match="kv_bits"):
        fit_memory(needs, 100, kv_bits=0)


def test_memory_command_on_a_tiny_llama(tmp_path: Path, user_devices: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    tiny_config(load_preset("meta-llama/Llama-3.1-8B")).to_json_file(str(config))
    user_devices.write_text(json.dumps({"schema_version": 1, "devices": {"small": {
        "display_name": "1 MB box", "vendor": "test", "kind": "cpu", "memory_gb": 0.001,
        "memory_bandwidth_gbs": 1, "matmul_tflops": {"fp32": 0.1},
        "sources": [{"title": "test"}]}}}))
    assert main(["hardware", "memory", "--model-id", str(config), "--seq-len", "100",
                 "--hardware", "small", "--batch-size", "2", "--w-bits", "8", "--kv-bits", "4",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # hidden 64, 4 heads, 2 KV heads x 16 dims, 2 layers, intermediate 128, vocab 128:
    # embed 8192 + 2 x (q 4096 + k 2048 + v 2048 + o 4096 + MLP 3 x 8192 + norms 128)
    # + final norm 64 + lm_head 8192
    assert out["parameters"] == 90432
    assert out["kv_elements_per_sequence"] == 2 * (2 * 16 * 2) * 100
    # lm_predictor.models.estimate_memory: S(7H + 3I) + 2 heads S (S + kv) + S V
    assert out["activation_elements_per_sequence"] == 100 * (7 * 64 + 3 * 128) \
        + 2 * 4 * 100 * 100 + 100 * 128
    assert out["weights_bytes"] == 90432
    assert out["kv_bytes"] == 2 * 12800 // 2
    assert out["activation_bytes"] == 2 * 176000 * 2
    assert out["max_batch"] == (10**6 - 90432) * 8 // (12800 * 4 + 176000 * 16)
    assert out["fits"] is True
    assert main(["hardware", "fit-memory", "--model-id", str(config), "--seq-len", "100",
                 "--hardware", "small", "--batch-size", "64"]) == 0
    assert "does NOT fit" in capsys.readouterr().out
