"""Training memory arithmetic: the ZeRO paper's published example, optimizers, precisions, and
saved activations measured from a traced step (with and without checkpointing)."""
from __future__ import annotations

import pytest
import torch

from hardware.errors import HardwareError
from hardware.training_memory import adafactor_state_elements, training_memory
from tracing import trace

from .models import Net, build

PSI, ND = 7_500_000_000, 64


@pytest.mark.parametrize(("stage", "published_gb"), [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_example(stage: int, published_gb: float) -> None:
    """ZeRO (SC20) figure 1: 7.5B parameters, Nd = 64, K = 12 (mixed-precision Adam)."""
    m = training_memory(PSI, optimizer="adam", zero_stage=stage, data_parallel=ND)
    assert round(m.model_state_bytes / 1e9, 1) == published_gb
    exact = {0: 16 * PSI, 1: 4 * PSI + 12 * PSI // ND, 2: 2 * PSI + 14 * PSI // ND,
             3: 16 * PSI // ND}[stage]
    assert m.model_state_bytes == exact


def test_mixed_adam_is_16_bytes_per_parameter() -> None:
    m = training_memory(1000, optimizer="adamw")
    assert (m.weights_bytes, m.gradient_bytes, m.optimizer_bytes) == (2000, 2000, 12000)
    assert m.model_state_bytes == 16 * 1000 and m.total_bytes == 16000


def test_other_optimizers_and_fp32() -> None:
    assert training_memory(10, optimizer="sgd").optimizer_bytes == 80  # master + momentum
    assert training_memory(10, optimizer="sgd", momentum=False).optimizer_bytes == 40
    fp32 = training_memory(10, optimizer="adam", precision="fp32")
    assert (fp32.weights_bytes, fp32.gradient_bytes, fp32.optimizer_bytes) == (40, 40, 80)
    shapes = [(64, 32), (32,), (4, 8, 16)]
    # rows + cols for matrices (64 + 32), the vector in full (32), per-slice factors 4*8 + 4*16
    assert adafactor_state_elements(shapes) == 96 + 32 + (32 + 64)
    params = 64 * 32 + 32 + 4 * 8 * 16
    ada = training_memory(params, optimizer="adafactor", parameter_shapes=shapes)
    assert ada.optimizer_bytes == 4 * params + 4 * 224
    with pytest.raises(HardwareError, match="parameter_shapes"):
        training_memory(params, optimizer="adafactor")


def test_zero_shards_round_up_and_bad_input() -> None:
    m = training_memory(10, optimizer="adam", zero_stage=3, data_parallel=3)
    assert (m.weights_bytes, m.gradient_bytes, m.optimizer_bytes) == (7, 7, 40)
    for kwargs, text in (({"optimizer": "lion"}, "unknown optimizer"),
                         ({"zero_stage": 4}, "ZeRO stage"), ({"data_parallel": 0}, "data parallel"),
                         ({"precision": "fp8"}, "unknown precision")):
        with pytest.raises(HardwareError, match=text):
            training_memory(10, **kwargs)


def saved_bytes(checkpointing: bool, device: str) -> tuple[int, dict[str, int]]:
    model = build(lambda: Net(checkpointing=checkpointing), device)
    ids = torch.zeros(2, 5, dtype=torch.long, device=device)
    with trace(model, backward=True) as t:
        model(ids).float().pow(2).mean().backward()
    return t.saved_activation_bytes, {c.module_path: c.saved_bytes for c in t.calls
                                      if c.saved_bytes}


def test_saved_activations_hand_derived() -> None:
    """10 tokens, width 16, hidden 32, fp32: what each autograd node saves for backward."""
    x, h, ids, stats = 10 * 16 * 4, 10 * 32 * 4, 10 * 8, 2 * 10 * 4
    total, by_call = saved_bytes(False, "cpu")
    assert by_call["emb"] == ids
    assert by_call["blocks.0.ln"] == x + stats  # input, mean, rstd
    assert by_call["blocks.0.fc"] == x  # its input (the weight is a parameter: not counted)
    assert by_call["blocks.0.act"] == h and by_call["blocks.0.out"] == h
    loss = 10 * 50 * 4  # pow saves the logits
    assert total == ids + 2 * (x + stats + x + h + h) + x + loss
    assert saved_bytes(False, "meta") == (total, by_call)
    ck_total, ck_calls = saved_bytes(True, "cpu")
    assert ck_calls[""] == 2 * x  # the checkpointed blocks keep only their inputs
    assert ck_total == ids + 2 * x + x + loss < total
    assert saved_bytes(True, "meta") == (ck_total, ck_calls)
    m = training_memory(1000, activation_bytes=ck_total)
    assert m.total_bytes == 16000 + ck_total
