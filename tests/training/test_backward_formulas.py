"""Backward formulas of the builtin torch.nn entries reconcile call by call with the traced
backward ops (cpu and meta, odd shapes, input with and without a gradient), BatchNorm and Dropout
in training mode, and a hand-written ResNet-style block trained end to end."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from formula_db.registry import Registry
from lm_predictor.reconcile import reconcile
from tracing import Trace, trace

REGISTRY = Registry.default(include_user=False)

CASES: dict[str, tuple[Callable[[], nn.Module], list[tuple[int, ...]]]] = {
    "Linear": (lambda: nn.Linear(8, 6), [(3, 5, 8), (7, 8)]),
    "LinearNoBias": (lambda: nn.Linear(5, 3, bias=False), [(2, 5), (3, 1, 5)]),
    "Conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2), [(2, 3, 9)]),
    "Conv2d": (lambda: nn.Conv2d(3, 4, 3, padding=1), [(2, 3, 6, 5), (1, 3, 7, 7)]),
    "Conv2dNoBias": (lambda: nn.Conv2d(4, 6, 3, stride=2, bias=False, groups=2), [(2, 4, 7, 7)]),
    "Conv3d": (lambda: nn.Conv3d(2, 3, 2), [(1, 2, 4, 5, 3)]),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), [(2, 3, 5, 4)]),
    "LayerNorm": (lambda: nn.LayerNorm(8), [(3, 5, 8), (7, 8)]),
    "LayerNormNoAffine": (lambda: nn.LayerNorm(6, elementwise_affine=False), [(4, 6)]),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), [(2, 4, 3, 3)]),
    "RMSNorm": (lambda: nn.RMSNorm(8), [(3, 5, 8), (2, 8)]),
    "RMSNormNoAffine": (lambda: nn.RMSNorm(6, elementwise_affine=False), [(4, 6)]),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(4), [(2, 4, 3, 5)]),
    "BatchNorm2dNoTrack": (lambda: nn.BatchNorm2d(3, track_running_stats=False), [(3, 3, 2, 2)]),
    "BatchNorm2dNoAffine": (lambda: nn.BatchNorm2d(3, affine=False), [(2, 3, 4, 4)]),
    "ReLU": (nn.ReLU, [(3, 7)]),
    "GELU": (nn.GELU, [(3, 7)]),
    "SiLU": (nn.SiLU, [(2, 3, 5)]),
    "Tanh": (nn.Tanh, [(5,)]),
    "Sigmoid": (nn.Sigmoid, [(4, 3)]),
    "Softmax": (lambda: nn.Softmax(-1), [(3, 9)]),
    "Dropout": (lambda: nn.Dropout(0.3), [(3, 7)]),
}


def step(module: nn.Module, shape: tuple[int, ...], device: str, input_grad: bool) -> Trace:
    x = torch.randn(shape, device=device, requires_grad=input_grad)
    with trace(module, backward=True) as t:
        y = module(x)
        y.backward(torch.ones_like(y))
    return t


def check_calls(t: Trace) -> list[Any]:
    recon = reconcile(t, REGISTRY)
    return [(r.formula_key, r.status, r.backward.status if r.backward else None,
             r.measured, r.predicted, r.backward.measured if r.backward else None,
             r.backward.predicted if r.backward else None) for r in recon.calls]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_builtin_backward_reconciles(name: str, device: str) -> None:
    factory, shapes = CASES[name]
    for shape in shapes:
        for input_grad in (True, False):
            for training in (True, False):
                with torch.device(device):
                    module = factory()
                module.train(training)
                if not input_grad and not any(p.requires_grad for p in module.parameters()):
                    continue  # nothing needs a gradient: no backward at all
                t = step(module, shape, device, input_grad)
                key, status, bstatus, fm, fp, bm, bp = check_calls(t)[0]
                where = (name, shape, device, input_grad, training)
                if (device == "meta" and "BatchNorm" in name and not training
                        and module.track_running_stats):
                    # eval BN bytes follow CPU: meta's kernel returns C-sized saved statistics
                    # where CPU's are empty, so only the FLOPs are compared
                    for m in ("flops", "vector_flops"):
                        assert (fm[m], bm[m]) == (fp[m], bp[m]), where
                    continue
                assert bstatus == "exact", (where, bm, bp)
                assert status == "exact", (where, fm, fp)
                assert t.step_totals().unattributed.flops == 0


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_batchnorm_training_mode_forward(device: str) -> None:
    """The issue's case: the eval formula predicted 4 vector FLOPs per element for a training
    call that measures 7 + 1 (batch statistics, affine, num_batches_tracked += 1)."""
    with torch.device(device):
        bn = nn.BatchNorm2d(5)
    x = torch.randn(2, 5, 25, 5, device=device)  # 1,250 elements
    for training, vector in ((True, 7 * 1250 + 1), (False, 4 * 1250)):
        bn.train(training)
        with torch.no_grad(), trace(bn) as t:
            bn(x)
        result = reconcile(t, REGISTRY).calls[0]
        assert t.calls[0].inclusive.vector_flops == vector
        assert result.predicted["vector_flops"] == vector
        if device == "cpu" or training:
            assert result.status == "exact", result


def test_sdpa_backward_formula_both_kinds() -> None:
    class Attention(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    causal: bool) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    for device in ("cpu", "meta"):
        for kind in ("flash", "math"):
            for causal in (False, True):
                q = torch.randn(2, 3, 5, 8, device=device, requires_grad=True)
                k = torch.randn(2, 3, 7, 8, device=device, requires_grad=True)
                v = torch.randn(2, 3, 7, 8, device=device, requires_grad=True)
                module = Attention()
                with trace(module, backward=True, attention_backward=kind) as t:
                    module(q, k, v, causal).sum().backward()
                params = {"bh": 6, "lq": 5, "lk": 7, "e": 8, "ev": 8, "bh_kv": 6,
                          "is_causal": causal, "mask_bytes": 0, "has_mask": False, "s": 4,
                          "flash": kind == "flash"}
                predicted = REGISTRY.evaluate_backward(
                    "torch.nn.functional.scaled_dot_product_attention", params)
                assert predicted == t.calls[0].backward_self.as_dict(), (device, kind, causal)


class BasicBlock(nn.Module):
    """ResNet basic block (conv-bn-relu-conv-bn + identity, relu), torchvision-free."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + x)


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(8), BasicBlock(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.relu(self.bn(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_small_resnet_training_step(device: str) -> None:
    torch.manual_seed(0)
    with torch.device(device):
        model = SmallResNet().train()
    x = torch.randn(2, 3, 8, 8, device=device)
    labels = torch.tensor([1, 2], device=device)
    with trace(model, backward=True) as t:
        F.cross_entropy(model(x), labels).backward()
    recon = reconcile(t, REGISTRY)
    totals = t.step_totals()
    assert totals.unattributed.as_dict() == {m: 0 for m in totals.unattributed.as_dict()}
    # layer1's convolutions: backward = 2x forward (grad input + grad weight), attributed
    layer1 = t.by_path("layer1")[0]
    assert layer1.backward_inclusive.flops == 2 * layer1.inclusive.flops > 0
    stem = t.by_path("stem")[0]
    assert stem.backward_inclusive.flops == stem.inclusive.flops  # the image needs no grad
    by_key: dict[str, set[str]] = {}
    for call, result in zip(t.calls, recon.calls):
        if result.status != "no_formula":
            by_key.setdefault(call.class_name, set()).add(result.status)
            by_key.setdefault(call.class_name + " backward", set()).add(result.backward.status)
    assert by_key["torch.nn.BatchNorm2d"] == {"exact"}
    assert by_key["torch.nn.Conv2d"] == {"exact"}
    assert by_key["torch.nn.BatchNorm2d backward"] == {"exact"}
    assert by_key["torch.nn.Conv2d backward"] == {"exact"}
    assert by_key["torch.nn.Linear backward"] == {"exact"}
    assert recon.step_totals["measured"]["flops"] == totals.measured.flops
