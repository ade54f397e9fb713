"""fvcore as a second counter: per-module matmul FLOPs agree with flop_counter and our trace."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tracing import fvcore_flops_by_module, trace

pytest.importorskip("fvcore")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10),
                         nn.Sequential(nn.Linear(10, 12), nn.Linear(12, 4, bias=False))).eval()


def test_fvcore_matches_flop_counter_and_trace() -> None:
    model, x = small_cnn(), torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fv = fvcore_flops_by_module(model, (x,))
    conv = 2 * (2 * 8 * 6 * 6) * (3 * 3 * 3)  # 2 * output elements * (Cin*kh*kw)
    lin = [2 * 2 * 288 * 10, 2 * 2 * 10 * 12, 2 * 2 * 12 * 4]
    hand = {"": conv + sum(lin), "0": conv, "3": lin[0], "4": lin[1] + lin[2], "4.0": lin[1],
            "4.1": lin[2]}
    assert {p: f for p, f in fv.items() if f} == hand

    with torch.no_grad(), FlopCounterMode(display=False, depth=None) as fc:
        model(x)
    reference = {k.removeprefix("Sequential").removeprefix("."): sum(v.values())
                 for k, v in fc.get_flop_counts().items() if k != "Global"}
    assert {p: f for p, f in reference.items() if f} == hand

    with torch.no_grad(), trace(model) as t:
        model(x)
    assert {c.module_path: c.inclusive.flops for c in t.calls if c.inclusive.flops} == hand
