"""fvcore's `FlopCountAnalysis` as a second, independent matmul-FLOP counter per module.

`fvcore_flops_by_module(model, inputs)` returns {module_path: FLOPs} ('' is the model, paths as
in `model.named_modules()`, inclusive of submodules). fvcore counts one multiply-add (MAC) per
matmul/conv output-element-times-reduction; we multiply by 2 to get FLOPs in flop_counter's
convention. Only fvcore's matmul-class handles are kept (addmm, mm, bmm, matmul, linear, einsum,
_convolution); its norm/upsample/pool handles count element-wise work, not MACs, so they are
switched off rather than doubled.

Known gaps of fvcore (why this is a cross-check, not the counter):
- it traces with `torch.jit.trace`: data-dependent control flow is frozen to the traced path,
  keyword-only inputs are not supported, and `meta` tensors generally fail to trace;
- ops without a handle (element-wise, softmax, scaled_dot_product_attention, ...) are skipped
  (it warns; we silence the warnings), so attention matmuls inside SDPA are missed;
- a module's count covers only ops run inside its `__call__`; modules never called are absent.

Example:
    >>> import torch
    >>> fvcore_flops_by_module(torch.nn.Linear(8, 4), (torch.ones(2, 8),))['']
    128
"""
from __future__ import annotations

from typing import Any

import torch

MATMUL_HANDLES = ("aten::addmm", "aten::bmm", "aten::_convolution", "aten::einsum",
                  "aten::matmul", "aten::mm", "aten::linear")
FLOPS_PER_MAC = 2


def fvcore_flops_by_module(model: torch.nn.Module, inputs: Any) -> dict[str, int]:
    """Matmul-class FLOPs per module path by fvcore (MACs x 2). `inputs`: tensor or tuple."""
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    analysis = FlopCountAnalysis(model, inputs)
    for name in _DEFAULT_SUPPORTED_OPS:
        if name not in MATMUL_HANDLES:
            analysis.set_op_handle(name, None)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return {path: FLOPS_PER_MAC * int(macs) for path, macs in analysis.by_module().items()}
