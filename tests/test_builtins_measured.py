"""Builtin entries against the aten-level counter: every metric (FLOPs, vector FLOPs, bytes read
and written, activation bytes) predicted from the recorded call equals what `tracing` measures,
on CPU and on meta. Documented exceptions: MultiheadAttention models only FLOPs, and
torch.matmul's bytes with broadcast copies or 1-D operands (see the entries' notes)."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from formula_db.bind import call_roots
from formula_db.registry import Registry
from lm_predictor.reconcile import measured_of, predict_call
from tracing import count_ops, trace

REG = Registry.default(include_user=False)
r = torch.randn

MODULES: list[tuple[Callable[[], nn.Module], tuple[tuple[int, ...] | str, ...]]] = [
    (lambda: nn.Linear(5, 7), ((3, 2, 5),)),
    (lambda: nn.Linear(13, 3, bias=False), ((9, 13),)),
    (lambda: nn.Conv1d(3, 6, 3, stride=2, padding=1), ((2, 3, 11),)),
    (lambda: nn.Conv1d(3, 5, 3, padding="same"), ((3, 9),)),
    (lambda: nn.Conv2d(4, 6, 3, groups=2, padding=1, dilation=2), ((2, 4, 9, 7),)),
    (lambda: nn.Conv3d(2, 4, 3, padding=1, bias=False), ((1, 2, 5, 5, 5),)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2), ((2, 4, 5, 5),)),
    (lambda: nn.Embedding(11, 5), ("idx11:3x4",)),
    (lambda: nn.LayerNorm(5), ((3, 4, 5),)),
    (lambda: nn.LayerNorm((3, 7), elementwise_affine=False), ((2, 3, 7),)),
    (lambda: nn.LayerNorm(9, bias=False), ((11, 9),)),
    (lambda: nn.RMSNorm(5), ((3, 4, 5),)),
    (lambda: nn.RMSNorm(7, elementwise_affine=False), ((9, 7),)),
    (lambda: nn.GroupNorm(2, 4), ((3, 4, 5),)),
    (lambda: nn.GroupNorm(3, 9, affine=False), ((1, 9, 7, 3),)),
    (lambda: nn.BatchNorm2d(4), ((3, 4, 5, 5),)),
    (lambda: nn.BatchNorm2d(3, affine=False), ((1, 3, 7, 9),)),
    (lambda: nn.Dropout(0.1), ((3, 4),)),
    (lambda: nn.Dropout(0.3).train(), ((5, 7),)),
    (lambda: nn.ReLU(), ((3, 4),)),
    (lambda: nn.ReLU(inplace=True), ((3, 5),)),
    (lambda: nn.GELU(), ((7, 3),)),
    (lambda: nn.SiLU(), ((2, 9),)),
    (lambda: nn.Tanh(), ((5,),)),
    (lambda: nn.Sigmoid(), ((3, 1, 3),)),
    (lambda: nn.Softmax(-1), ((3, 7),)),
]


def _input(spec: tuple[int, ...] | str, device: str) -> torch.Tensor:
    if isinstance(spec, str):  # "idxN:AxB": int64 indices below N
        high, shape = spec[3:].split(":")
        dims = tuple(int(d) for d in shape.split("x"))
        return torch.randint(0, int(high), dims, device="cpu").to(device)
    return torch.randn(*spec, device=device)


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("case", range(len(MODULES)))
def test_module_entry_matches_measurement(case: int, device: str) -> None:
    make, specs = MODULES[case]
    with torch.device(device):
        module = make()
    if not module.training or not isinstance(module, nn.Dropout):
        module.eval()
    if device == "meta" and isinstance(module, nn.Dropout) and module.training:
        pytest.skip("bernoulli_ has no meta kernel")
    args = tuple(_input(s, device) for s in specs)
    with torch.no_grad(), trace(module) as t:
        module(*args)
    call = t.calls[0]
    assert predict_call(call, REG, {}) == measured_of(call)


FUNCTIONS: list[tuple[str, Callable[..., Any], tuple[tuple[int, ...], ...], dict[str, Any]]] = [
    ("torch.nn.functional.linear", F.linear, ((3, 2, 5), (7, 5), (7,)), {}),
    ("torch.nn.functional.linear", F.linear, ((9, 13), (3, 13)), {}),
    ("torch.matmul", torch.matmul, ((2, 3, 4, 5), (5, 7)), {}),
    ("torch.matmul", torch.matmul, ((9, 5), (3, 5, 7)), {}),
    ("torch.matmul", torch.matmul, ((3, 7, 5), (3, 5, 9)), {}),
    ("torch.bmm", torch.bmm, ((2, 3, 4), (2, 4, 5)), {}),
    ("torch.bmm", torch.bmm, ((7, 1, 9), (7, 9, 3)), {}),
    ("torch.nn.functional.scaled_dot_product_attention", F.scaled_dot_product_attention,
     ((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)), {}),
    ("torch.nn.functional.scaled_dot_product_attention", F.scaled_dot_product_attention,
     ((1, 3, 9, 8), (1, 3, 9, 8), (1, 3, 9, 8)), {"is_causal": True}),
    ("torch.nn.functional.scaled_dot_product_attention", F.scaled_dot_product_attention,
     ((1, 4, 9, 8), (1, 2, 9, 8), (1, 2, 9, 8)), {"enable_gqa": True}),
]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("case", range(len(FUNCTIONS)))
def test_function_entry_matches_measurement(case: int, device: str) -> None:
    name, fn, shapes, kwargs = FUNCTIONS[case]
    args = tuple(torch.randn(*s, device=device) for s in shapes)
    with torch.no_grad():
        total, _, out = count_ops(fn, *args, **kwargs)
    predicted = REG.evaluate_all(name, REG.bind(name, call_roots(None, args, kwargs, out)))
    assert {m: predicted[m] for m in total.as_dict()} == total.as_dict()
    assert predicted["activation_bytes"] == out.numel() * out.element_size()


# Inputs whose leading dimensions do not merge into rows by a view: aten's matmul then either
# copies the input (it folds them: the weight needs a gradient outside inference mode, or the
# rows are a view) or runs a bmm over the weight expanded per batch (inference mode, a frozen
# weight), and the bias is a separate add instead of addmm's epilogue.
LAYOUTS: dict[str, Callable[..., torch.Tensor]] = {
    "transposed-b2": lambda make: make(2, 8, 5).transpose(1, 2),    # (2, 5, 8), no view
    "transposed-b1": lambda make: make(1, 8, 5).transpose(1, 2),    # a view (size-1 batch)
    "seq-major": lambda make: make(5, 3, 8).transpose(0, 1),        # (3, 5, 8), no view
    "sliced": lambda make: make(2, 5, 12)[..., :8],                  # rows are a view
    "padded": lambda make: make(2, 6, 8)[:, :5, :],                  # (2, 5, 8), no view
    "4d": lambda make: make(2, 3, 8, 4).transpose(2, 3),            # (2, 3, 4, 8)
    "4d-heads": lambda make: make(2, 4, 3, 8).transpose(1, 2),      # batch dims do not merge
}


@pytest.mark.parametrize("mode", ["inference", "no_grad", "frozen", "train"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_linear_non_contiguous_input(device: str, layout: str, bias: bool, mode: str) -> None:
    """nn.Linear on non-contiguous inputs: every metric equals the aten counter in inference
    mode, under no_grad, with a frozen weight, and in a training step (forward and backward;
    the input is a view of a tensor that needs a gradient, as inside a model)."""
    from lm_predictor.reconcile import reconcile

    with torch.device(device):
        module = nn.Linear(8, 6, bias=bias)
    if mode == "frozen":
        module.requires_grad_(False)
    train = mode == "train"

    def make(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, requires_grad=train)

    if train:
        with trace(module, backward=True) as t:
            y = module(LAYOUTS[layout](make))
            y.backward(torch.ones_like(y))
        result = reconcile(t, REG).calls[0]
        assert (result.status, result.backward.status) == ("exact", "exact"), \
            (layout, result.measured, result.predicted, result.backward.measured,
             result.backward.predicted)
        return
    ctx = torch.inference_mode() if mode == "inference" else torch.no_grad()
    x = LAYOUTS[layout](make)
    with ctx, trace(module) as t:
        module(x)
    call = t.calls[0]
    assert predict_call(call, REG, {}) == measured_of(call), (layout, mode)
