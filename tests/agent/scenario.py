"""The test scenario: a custom module with no formula, its trace, and entries for it.

`ScaledGELU` (a Linear, a GELU and a multiply by a constant) is traced on CPU at two shapes.
Measured on every call (rows = numel(input) / d_in, s = itemsize):
- flops: the Linear's, 2 * rows * d_in * d_out;
- vector_flops: the Linear's bias add (rows * d_out) + gelu (rows * d_out) + mul (rows * d_out);
- bytes_read / bytes_written: the Linear's + 2 * rows * d_out * s each (gelu and mul);
- activation_bytes: the output, rows * d_out * s (the gelu result is freed).
`GOOD` writes exactly that on top of `{torch__nn__Linear}`; `FORGETS_GELU` misses the gelu in
vector_flops, bytes_read and bytes_written (the agent's first, wrong attempt).
"""
from __future__ import annotations

import copy
import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ScaledGELU(nn.Module):
    """Project, GELU, scale: a block no formula database knows."""

    def __init__(self, d_in: int, d_out: int, scale: float = 0.5) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x)) * self.scale


FULL_NAME = f"{__name__}.ScaledGELU"
LINEAR = "{torch__nn__Linear}(${rows}, ${d_in}, ${d_out}, true, ${s})"

GOOD: dict[str, Any] = {
    "full_class_name": FULL_NAME,
    "description": "Linear, GELU and a constant scale.",
    "parameters": [
        {"name": "rows", "type": "int", "description": "rows of the input",
         "bind": "numel(input[0]) // input[0].shape[-1]"},
        {"name": "d_in", "type": "int", "description": "input features",
         "bind": "input[0].shape[-1]"},
        {"name": "d_out", "type": "int", "description": "output features",
         "bind": "output.shape[-1]"},
        {"name": "s", "type": "int", "description": "bytes per element",
         "bind": "itemsize(output)"},
    ],
    "flops": LINEAR,
    "vector_flops": LINEAR + " + 2 * ${rows} * ${d_out}",
    "bytes_read": LINEAR + " + 2 * ${rows} * ${d_out} * ${s}",
    "bytes_written": LINEAR + " + 2 * ${rows} * ${d_out} * ${s}",
    "activation_bytes": "${rows} * ${d_out} * ${s}",
    "breakdown": [{"name": "gelu", "vector_flops": "${rows} * ${d_out}"},
                  {"name": "mul", "vector_flops": "${rows} * ${d_out}"}],
    "module_depends": ["torch__nn__Linear"],
}

FORGETS_GELU = copy.deepcopy(GOOD)
FORGETS_GELU["vector_flops"] = LINEAR + " + ${rows} * ${d_out}"
FORGETS_GELU["bytes_read"] = LINEAR + " + ${rows} * ${d_out} * ${s}"
FORGETS_GELU["bytes_written"] = LINEAR + " + ${rows} * ${d_out} * ${s}"

SHAPES = ((2, 3, 8), (1, 5, 8))


def text(entry: dict[str, Any]) -> str:
    return json.dumps(entry)


def traces() -> list[Any]:
    """Traces of a ScaledGELU(8, 16) at `SHAPES` on CPU."""
    from tracing import trace

    torch.manual_seed(0)
    model = ScaledGELU(8, 16)
    out = []
    for shape in SHAPES:
        with torch.inference_mode(), trace(model) as t:
            model(torch.randn(*shape))
        out.append(t)
    return out
