"""Dispatch-mode counter: measures every aten op that runs, and hands its cost to a callback.

`OpCounter` is a `TorchDispatchMode`. For each op it (1) decomposes ops that have no FLOP formula
but a CompositeImplicitAutograd decomposition, as `FlopCounterMode` does, so `torch.inference_mode`
(where composites such as aten.linear, aten.matmul, aten.softmax reach the mode whole) counts the
same leaf ops as `torch.no_grad` (where autograd decomposed them already); (2) runs the op;
(3) costs it with `tracing.costs.measure_op` and passes the `OpCost` to `on_op`; (4) tells the
optional `StorageTracker` about storages the op created. `counting()` also enters
`tracing.attention.SdpaFence`, so attention is one op on every device. The two grad modes give
the same counters; only the names of free metadata ops may differ (inference_mode shows
`aten.view` and `aten.detach_` where autograd produced `aten._unsafe_view`).

What it is not: not a timer, not a fused-kernel model (each aten op reads and writes its own
tensors), and not a backward counter unless backward runs inside it.

Example:
    >>> import torch
    >>> seen = []
    >>> with counting(OpCounter(seen.append)):
    ...     _ = torch.ones(2, 3) @ torch.ones(3, 4)
    >>> [(c.name, c.counters.flops) for c in seen]
    [('aten.ones', 0), ('aten.ones', 0), ('aten.mm', 48)]
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .attention import SdpaFence
from .costs import CostCache, OpCost, flop_formula, tensors_in
from .memory import StorageTracker, storage_key


def _no_creator() -> int:
    return -1


class OpCounter(TorchDispatchMode):
    """Counts aten ops; `creator()` names the module call that owns what they allocate."""

    def __init__(self, on_op: Callable[[OpCost], None], memory: StorageTracker | None = None,
                 creator: Callable[[], int] = _no_creator) -> None:
        super().__init__()
        self._on_op = on_op
        self._memory = memory
        self._creator = creator
        self._paused = 0
        self._costs = CostCache()

    def pause(self) -> None:
        self._paused += 1

    def resume(self) -> None:
        self._paused -= 1

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Cost one executed op (memoised by shapes) and account the storages it created."""
        flat_in = tree_flatten((args, kwargs))[0]
        out_tensors = tensors_in(out)
        self._on_op(self._costs.measure(func, args, kwargs, out, flat_in, out_tensors))
        if self._memory is not None:
            inputs = {k for t in flat_in
                      if isinstance(t, torch.Tensor) and (k := storage_key(t)) is not None}
            self._memory.note_outputs(out_tensors, inputs, self._creator())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self._paused:
            return func(*args, **kwargs)
        if flop_formula(func) is None and func is not torch.ops.prim.device.default:
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        self.record(func, args, kwargs, out)
        return out


@contextmanager
def counting(counter: OpCounter,
             attention_runner: Callable[[Callable[..., Any], tuple, dict], Any] | None = None
             ) -> Iterator[OpCounter]:
    """Activate `counter` together with the attention fence that feeds it; `attention_runner`
    (fn, args, kwargs) runs each fenced SDPA call (`tracing.backward.SdpaGroups.run`)."""
    with SdpaFence(counter.pause, counter.resume, counter.record, attention_runner), counter:
        yield counter
