"""`--counter fvcore`: fvcore's FlopCountAnalysis as an independent check of measured FLOPs.

fvcore traces with `torch.jit`, so it needs real tensors (`--device cpu`) and positional tensor
inputs: the model is wrapped to take `input_ids` and return the logits with the KV cache off.
Its MAC counts are doubled to FLOPs (`tracing.fvcore_counter`). fvcore has no handle for
`scaled_dot_product_attention`, so attention score/value matmuls inside SDPA are expected to be
missing from its figure; the report states the difference per module instead of hiding it.

Example:
    >>> rows = fvcore_cross_check(model, inputs, trace)
    >>> rows[0].module_path, rows[0].dispatch_flops, rows[0].fvcore_flops
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lm_predictor.errors import ModelError
from tracing import Trace, fvcore_flops_by_module


@dataclass
class CrossCheckRow:
    """Matmul FLOPs of one module path by both counters (first call of the path)."""

    module_path: str
    class_name: str
    dispatch_flops: int
    fvcore_flops: int | None


class _LogitsOnly(torch.nn.Module):
    """Positional-tensor wrapper jit can trace: input_ids -> logits, no cache."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.inner(input_ids=input_ids, use_cache=False)
        return out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))


def fvcore_cross_check(model: torch.nn.Module, inputs: dict[str, Any], trace: Trace
                       ) -> list[CrossCheckRow]:
    """Per module path: dispatch-measured inclusive FLOPs beside fvcore's."""
    ids = inputs.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.device.type == "meta":
        raise ModelError("--counter fvcore traces with torch.jit and needs real tensors; add "
                         "--device cpu (or cuda)")
    if any(k in inputs for k in ("cache", "past_key_values")):
        raise ModelError("--counter fvcore checks prefill only; drop --phase decode / --kv-len")
    try:
        with torch.no_grad():
            counts = fvcore_flops_by_module(_LogitsOnly(model), (ids,))
    except Exception as exc:  # jit tracing fails in many ways; report it on one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"fvcore could not trace the model ({first}); use the default "
                         f"--counter dispatch") from None
    by_path: dict[str, int] = {}
    for path, flops in counts.items():
        if path == "inner":
            by_path[""] = flops
        elif path.startswith("inner."):
            by_path[path[len("inner."):]] = flops
    rows: list[CrossCheckRow] = []
    seen: set[str] = set()
    for call in trace.calls:
        if call.module_path in seen:
            continue
        seen.add(call.module_path)
        rows.append(CrossCheckRow(call.module_path, call.class_name, call.inclusive.flops,
                                  by_path.get(call.module_path)))
    return rows
