"""Cost of one executed aten op: FLOPs, vector FLOPs, bytes read and written, and coverage.

This is the bind layer of the counter: it is handed the op, its real arguments and its output,
and it turns tensors into shapes/`TensorMeta` before any formula sees them.

Semantics:
- flops: `torch.utils.flop_counter.flop_registry[op](*args, **kwargs, out_val=out)`, exactly as
  `FlopCounterMode` calls it (mm, addmm, bmm, baddbmm, convolution, sdpa kernels...), else
  `tracing.attention.EXTRA_FLOP_FORMULAS`. vector_flops: `tracing.optable`.
- bytes, unfused and logical (numel x itemsize of each tensor as the op sees it, so an expanded
  view counts its expanded size): bytes_read = every Tensor argument, lists of tensors included,
  except `out=` arguments and the `self` of write-only in-place ops (copy_, fill_, ...); a
  table look-up (`aten.embedding`) reads its indices and the rows it gathers, not the table;
  bytes_written = every output tensor.
- views move nothing: an op whose returns all alias an input without writing it
  (`func._schema.returns[i].alias_info` set and not `is_write`: view, t, transpose, permute,
  expand, slice, select, unsqueeze, split, unbind, detach, alias, lift_fresh...) costs 0 bytes,
  as do `optable.METADATA_OPS` (_unsafe_view) and `optable.ALLOC_ONLY` (empty*). In-place ops
  (returns with `is_write`) read their inputs and write their output.
- covered: the op has a FLOP formula, a vector rule, or is a view/metadata op. Uncovered ops still
  get their bytes counted; the caller reports them by name.

Example:
    >>> import torch
    >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
    >>> c = measure_op(torch.ops.aten.mm.default, (a, b), {}, a @ b)
    >>> (c.counters.flops, c.counters.bytes_read, c.counters.bytes_written, c.covered)
    (48, 72, 32, True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import flop_registry

from formula_db.meta import TensorMeta

from .attention import EXTRA_FLOP_FORMULAS
from .optable import ALLOC_ONLY, METADATA_OPS, WRITE_ONLY_INPLACE, vector_flops, vector_rule
from .records import Counters


@dataclass(frozen=True)
class OpCost:
    """What one op execution costs, under its overload-packet name (e.g. 'aten.addmm')."""

    name: str
    counters: Counters
    covered: bool


def op_name(func: Any) -> str:
    return str(func._overloadpacket)


def flop_formula(func: Any) -> Any | None:
    """The FLOP formula for an op: torch's registry first, then ours."""
    packet = func._overloadpacket
    return flop_registry.get(packet) or EXTRA_FLOP_FORMULAS.get(packet)


def is_view(func: Any) -> bool:
    """True when every return of the op aliases an input without writing to it."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write
                                 for r in returns)


def tensors_in(value: Any) -> list[torch.Tensor]:
    return [x for x in tree_flatten(value)[0] if isinstance(x, torch.Tensor)]


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def read_tensors(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """Tensor arguments an op reads: all of them except out= targets and write-only `self`."""
    write_only_self = op_name(func) in WRITE_ONLY_INPLACE
    bound = {a.name: v for a, v in zip(func._schema.arguments, args)}
    bound.update(kwargs)
    found: list[torch.Tensor] = []
    for arg in func._schema.arguments:
        if arg.name not in bound:
            continue
        alias = arg.alias_info
        if alias is not None and alias.is_write and (arg.kwarg_only or write_only_self):
            continue
        found.extend(tensors_in(bound[arg.name]))
    return found


def _describe_tree(value: Any) -> Any:
    return tree_map(lambda x: TensorMeta.from_tensor(x) if isinstance(x, torch.Tensor) else x,
                    value)


# Table look-ups read the rows they gather, not the whole table: bytes_read = the indices plus
# the output's size (one row per index), the exception to "every tensor argument is read".
GATHER_OPS = frozenset({"aten.embedding"})


def _gather_read(args: tuple, out: Any) -> int:
    indices = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else None
    return (_nbytes([indices]) if indices is not None else 0) + _nbytes(tensors_in(out))


# Backward ops with an `output_mask` (native_*_norm_backward, convolution_backward) write only the
# gradients it asks for; some meta kernels allocate the others anyway, which are not counted, so
# meta and CPU agree.
def _masked_outputs(func: Any, args: tuple, kwargs: dict, out: Any) -> list[torch.Tensor]:
    names = [a.name for a in func._schema.arguments]
    if "output_mask" not in names or not isinstance(out, (tuple, list)):
        return tensors_in(out)
    index = names.index("output_mask")
    mask = args[index] if len(args) > index else kwargs.get("output_mask")
    if mask is None or len(mask) != len(out):
        return tensors_in(out)
    return [t for t, keep in zip(out, mask) if keep and isinstance(t, torch.Tensor)]


# Eval-mode batch norm returns (output, save_mean, save_invstd); the CPU and CUDA kernels return
# the two statistics empty, meta's kernel allocates C elements each. Only the output is written,
# so meta and CPU agree.
FIRST_OUTPUT_ONLY = frozenset({"aten._native_batch_norm_legit_no_training"})


def _written(func: Any, name: str, args: tuple, kwargs: dict, out: Any) -> list[torch.Tensor]:
    if name in FIRST_OUTPUT_ONLY and isinstance(out, (tuple, list)) and out:
        return tensors_in(out[0])
    return _masked_outputs(func, args, kwargs, out)


def measure_op(func: Any, args: tuple, kwargs: dict, out: Any) -> OpCost:
    """Counters and coverage of one executed op (`func` an OpOverload)."""
    name = op_name(func)
    counters = Counters()
    formula = flop_formula(func)
    if formula is not None:
        counters.flops = int(formula(*args, **kwargs, out_val=out))
    rule = vector_rule(name)
    if rule is not None:
        counters.vector_flops = int(vector_flops(name, _describe_tree(args), _describe_tree(kwargs),
                                                 _describe_tree(out)))
    moves_nothing = name in ALLOC_ONLY or name in METADATA_OPS or is_view(func)
    if not moves_nothing:
        counters.bytes_read = (_gather_read(args, out) if name in GATHER_OPS
                               else _nbytes(read_tensors(func, args, kwargs)))
        counters.bytes_written = _nbytes(_written(func, name, args, kwargs, out))
    covered = formula is not None or rule is not None or moves_nothing
    return OpCost(name, counters, covered)


_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.memory_format,
            torch.layout)


def _signature(flat: list[Any]) -> tuple:
    """Hashable description of flattened op arguments: what `measure_op` depends on."""
    sig: list[Any] = []
    for x in flat:
        if isinstance(x, torch.Tensor):
            sig.append((tuple(x.shape), x.dtype))
        elif isinstance(x, _SCALARS):
            sig.append(x)
        else:
            sig.append(type(x))
    return tuple(sig)


class CostCache:
    """Memo of `measure_op` keyed by (op, argument shapes/dtypes/scalars, output shapes).

    `measure_op` is a pure function of those (FLOP formulas and the vector table read shapes,
    bytes read numel x itemsize), so repeated layers cost one dictionary look-up per op.
    """

    def __init__(self) -> None:
        self._costs: dict[tuple, OpCost] = {}

    def measure(self, func: Any, args: tuple, kwargs: dict, out: Any,
                flat_in: list[Any], out_tensors: list[torch.Tensor]) -> OpCost:
        try:
            key = (func, _signature(flat_in), _signature(out_tensors))
            cached = self._costs.get(key)
        except TypeError:  # an unhashable scalar: measure without caching
            return measure_op(func, args, kwargs, out)
        if cached is None:
            cached = self._costs[key] = measure_op(func, args, kwargs, out)
        return cached
