"""MFU: the PaLM definition against nanoGPT's estimate_mfu, with hand-computed numbers."""
from __future__ import annotations

import pytest

from hardware.catalog import load_catalog
from hardware.errors import HardwareError
from hardware.mfu import palm_flops_per_token, transformer_shape, utilisation


def nanogpt_estimate_mfu(n: int, n_layer: int, n_head: int, n_embd: int, block_size: int,
                         fwdbwd_per_iter: int, dt: float) -> float:
    """nanoGPT model.py estimate_mfu, verbatim arithmetic (A100 bf16 peak 312 TFLOPS)."""
    L, H, Q, T = n_layer, n_head, n_embd // n_head, block_size
    flops_per_token = 6 * n + 12 * L * H * Q * T
    flops_per_fwdbwd = flops_per_token * T
    flops_per_iter = flops_per_fwdbwd * fwdbwd_per_iter
    return flops_per_iter * (1.0 / dt) / 312e12


def test_palm_flops_per_token_by_hand() -> None:
    # GPT-2 124M: 6 * 124e6 = 744e6; 12 * 12 * 12 * 64 * 1024 = 113,246,208
    assert palm_flops_per_token(124_000_000, layers=12, heads=12, head_dim=64,
                                seq_len=1024) == 857_246_208


def test_mfu_matches_nanogpt() -> None:
    n, batch, seq, dt = 123_653_376, 12, 1024, 0.5
    per_token = palm_flops_per_token(n, layers=12, heads=12, head_dim=64, seq_len=seq)
    a100 = load_catalog().get("A100-40GB-SXM").matmul_peak("bf16")
    assert a100 == 312e12
    u = utilisation(palm_per_token=per_token, tokens_per_step=batch * seq, peak_flops=a100,
                    step_time_s=dt)
    assert u.mfu == pytest.approx(nanogpt_estimate_mfu(n, 12, 12, 768, seq, batch, dt), rel=1e-12)
    # by hand: (6 * 123,653,376 + 113,246,208) * 12,288 tokens / 0.5 s / 312e12
    assert u.mfu == pytest.approx(855_166_464 * 12288 / 0.5 / 312e12, rel=1e-12)
    assert round(u.mfu, 4) == 0.0674
    same = utilisation(palm_per_token=per_token, tokens_per_step=batch * seq, peak_flops=a100,
                       tokens_per_s=batch * seq / dt)
    assert same.mfu == pytest.approx(u.mfu) and same.step_time_s == pytest.approx(dt)


def test_measured_utilisation_and_errors() -> None:
    u = utilisation(palm_per_token=100, tokens_per_step=10, peak_flops=1e4, step_time_s=0.5,
                    measured_flops_per_step=2500)
    assert u.mfu == 100 * 20 / 1e4 and u.measured_utilisation == 2500 / 0.5 / 1e4
    with pytest.raises(HardwareError, match="exactly one"):
        utilisation(palm_per_token=1, tokens_per_step=1, peak_flops=1.0)
    with pytest.raises(HardwareError, match="step time must be > 0"):
        utilisation(palm_per_token=1, tokens_per_step=1, peak_flops=1.0, step_time_s=0)


def test_transformer_shape_from_configs() -> None:
    assert transformer_shape({"n_layer": 12, "n_head": 12, "n_embd": 768}) == \
        {"layers": 12, "heads": 12, "head_dim": 64}
    assert transformer_shape({"num_hidden_layers": 2, "num_attention_heads": 4,
                              "hidden_size": 64, "head_dim": 32})["head_dim"] == 32
    with pytest.raises(HardwareError, match="lacks"):
        transformer_shape({})
