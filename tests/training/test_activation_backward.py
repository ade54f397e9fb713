"""transformers' activation modules in a training step: forward (with what autograd saves) and
backward reconcile exactly with the traced aten counts, in float32 and bfloat16, at shapes and
sizes other than those the templates were written from; the inference forward stays exact.
(NewGELUActivation is checked inside GPT-2: tests/training/test_zoo_backward.py.)

The input is a view of a tensor that needs a gradient, as inside a model (a leaf input would add
an accumulation the module does not own).
"""
from __future__ import annotations

import pytest
import torch
from transformers import activations as A

from formula_db.registry import Registry
from lm_predictor.reconcile import reconcile
from tracing import trace

REGISTRY = Registry.default(include_user=False)
CLASSES = ["GELUActivation", "SiLUActivation", "MishActivation",
           "AccurateGELUActivation", "FastGELUActivation", "QuickGELUActivation",
           "ClippedGELUActivation", "ReLUSquaredActivation", "LaplaceActivation",
           "LinearActivation"]


def _module(name: str) -> torch.nn.Module:
    cls = getattr(A, name)
    return cls(-10.0, 10.0) if name == "ClippedGELUActivation" else cls()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", CLASSES)
def test_activation_training_step(name: str, dtype: torch.dtype) -> None:
    module = _module(name)
    for shape in ((3, 5), (2, 3, 7)):
        base = torch.randn(shape, device="meta", dtype=dtype, requires_grad=True)
        with trace(module, backward=True) as t:
            y = module(base * 1.0)
            y.backward(torch.ones_like(y))
        (result,) = [r for c, r in zip(t.calls, reconcile(t, REGISTRY).calls)
                     if c.class_name.endswith(name)]
        assert result.status == "exact", (shape, result.measured, result.predicted)
        assert result.backward is not None and result.backward.status == "exact", \
            (shape, result.backward.measured, result.backward.predicted)
        with torch.inference_mode(), trace(module) as t:
            module(base.detach())
        assert reconcile(t, REGISTRY).calls[0].status == "exact"
