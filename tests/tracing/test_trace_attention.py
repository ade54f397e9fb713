"""Scaled dot-product attention: one fused op with the math backend's FLOPs on every device/mode."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from tracing import count_ops, trace
from tracing.attention import EXTRA_FLOP_FORMULAS

aten = torch.ops.aten
B, H, LQ, LK, E, EV = 2, 4, 8, 10, 16, 32
F32 = 4


def math_flops(b: int, h: int, lq: int, lk: int, e: int, ev: int) -> int:
    """QK^T: 2*B*H*Lq*Lk*E, then scores @ V: 2*B*H*Lq*Lk*Ev (causal not discounted)."""
    return 2 * b * h * lq * lk * e + 2 * b * h * lq * lk * ev


def qkv(device: str, hq: int = H, hkv: int = H, ev: int = EV) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    return (torch.randn(B, hq, LQ, E, device=device), torch.randn(B, hkv, LK, E, device=device),
            torch.randn(B, hkv, LK, ev, device=device))


class OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Any] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        self.ops.append(func._overloadpacket)
        return func(*args, **(kwargs or {}))


def test_registry_gap_is_real() -> None:
    """Under inference_mode the composite op itself reaches a dispatch mode, and torch's registry
    has no formula for it; on meta (no fused kernel) the math backend runs instead."""
    q, k, v = qkv("cpu")
    with torch.inference_mode(), OpLog() as log:
        F.scaled_dot_product_attention(q, k, v)
    assert log.ops == [aten.scaled_dot_product_attention]
    assert aten.scaled_dot_product_attention not in flop_registry
    assert aten.scaled_dot_product_attention in EXTRA_FLOP_FORMULAS
    meta_qkv, fused_qkv = qkv("meta"), qkv("cpu", ev=E)  # CPU fused kernel: equal head dims
    with torch.no_grad(), OpLog() as log:
        F.scaled_dot_product_attention(*meta_qkv)
    assert aten.bmm in log.ops and aten._scaled_dot_product_flash_attention_for_cpu not in log.ops
    with torch.no_grad(), OpLog() as log:
        F.scaled_dot_product_attention(*fused_qkv)
    assert log.ops == [aten._scaled_dot_product_flash_attention_for_cpu]


def math_backend_reference(*args: torch.Tensor, **kwargs: Any) -> int:
    """FlopCounterMode on CPU with the math backend forced: the two bmm of the decomposition."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        F.scaled_dot_product_attention(*args, **kwargs)
    return fc.get_total_flops()


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("ctx", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("ev", [E, EV], ids=["fused_cpu", "math_cpu"])
def test_sdpa_counts_equal_math_backend(device: str, ctx: Callable[[], Any], causal: bool,
                                        ev: int) -> None:
    q, k, v = qkv(device, ev=ev)
    with ctx():
        counters, ops, out = count_ops(F.scaled_dot_product_attention, q, k, v, is_causal=causal)
    expected = math_flops(B, H, LQ, LK, E, ev)
    reference = math_backend_reference(*qkv("cpu", ev=ev), is_causal=causal)
    assert counters.flops == expected == reference
    assert set(ops) == {"aten.scaled_dot_product_attention"}
    assert ops["aten.scaled_dot_product_attention"].count == 1
    assert counters.bytes_read == (q.numel() + k.numel() + v.numel()) * F32
    assert counters.bytes_written == B * H * LQ * ev * F32 == out.numel() * F32
    assert counters.vector_flops == B * H * LQ * LK * (1 + 5 + int(causal))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_sdpa_grouped_query_heads(device: str) -> None:
    q, k, v = qkv(device, hq=4, hkv=2)
    with torch.no_grad():
        counters, _, _ = count_ops(F.scaled_dot_product_attention, q, k, v, enable_gqa=True)
    assert counters.flops == math_flops(B, 4, LQ, LK, E, EV)
    assert counters.flops == math_backend_reference(*qkv("cpu", hq=4, hkv=2), enable_gqa=True)


def test_direct_aten_composite_counted_by_our_formula() -> None:
    q, k, v = qkv("meta")
    with torch.inference_mode():
        counters, ops, _ = count_ops(aten.scaled_dot_product_attention.default, q, k, v)
    assert set(ops) == {"aten.scaled_dot_product_attention"}
    assert counters.flops == math_flops(B, H, LQ, LK, E, EV)


def test_output_layout_same_on_meta_and_cpu() -> None:
    """The query's layout (CPU fused kernel's choice) on both devices, so later ops agree."""
    strides = {}
    for device in ("cpu", "meta"):
        q = torch.randn(B, LQ, H, E, device=device).transpose(1, 2)
        k = torch.randn(B, H, LK, E, device=device)
        with torch.no_grad():
            _, _, out = count_ops(F.scaled_dot_product_attention, q, k, k)
        strides[device] = out.stride()
    assert strides["cpu"] == strides["meta"] == torch.empty(B, LQ, H, E).transpose(1, 2).stride()


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_multihead_attention_is_fenced(device: str) -> None:
    """nn.MultiheadAttention calls SDPA from inside F.multi_head_attention_forward."""
    with torch.device(device):
        mha = nn.MultiheadAttention(32, 4).eval()
    x = torch.zeros(LQ, B, 32, device=device)
    with torch.no_grad(), trace(mha) as t:
        mha(x, x, x, need_weights=False)
    ops = t.calls[0].ops
    assert ops["aten.scaled_dot_product_attention"].flops == math_flops(B, 4, LQ, LQ, 8, 8)
    assert "aten.bmm" not in ops and "aten._scaled_dot_product_flash_attention_for_cpu" not in ops
    assert t.uncovered_ops == {}


def test_functional_name_restored() -> None:
    original = F.scaled_dot_product_attention
    count_ops(F.scaled_dot_product_attention, *qkv("meta"))
    assert F.scaled_dot_product_attention is original
    with pytest.raises(RuntimeError):
        count_ops(F.scaled_dot_product_attention, torch.ones(2, 3, 4), torch.ones(2, 3, 5),
                  torch.ones(2, 3, 5))
    assert F.scaled_dot_product_attention is original
    assert torch._C._len_torch_function_stack() == 0
