"""`trace(model)`: record every module call of a forward pass with measured costs and memory.

Ties the pieces together: `CallRecorder` (hooks, call tree), `OpCounter` + `SdpaFence` (per-op
FLOPs, vector FLOPs, bytes), `StorageTracker` (activation memory) and a timer.

Semantics:
- Each aten op is attributed to the innermost active module call (`self_counters`, `ops`);
  `inclusive` rolls children up. Ops run inside the `with` block but outside any module call go to
  the pseudo-root `Trace.outside` / `Trace.outside_ops`; `Trace.totals` includes them.
- Ops no table covers are counted by name in `Trace.uncovered_ops` (their bytes still count).
- `weight_bytes` / `buffer_bytes`: `model.parameters()` / `model.buffers()` (shared tensors once);
  never counted as activations. `config`: the scalar entries of `model.config.to_dict()`.
- `device`: the type of the model's first parameter or buffer, else of the first input tensor.
  `wall_time_s` per call on real devices (perf_counter; CUDA events on cuda), None on meta or
  with `device_timing=False`.
- Counting is independent of `torch.no_grad` / `torch.inference_mode` and identical on `meta`
  and CPU for the same shapes (see `tracing.counter`, `tracing.attention`).
- `backward=True` records a training step: run forward, the loss and `loss.backward()` inside
  the block; each backward op is charged to the call whose forward created the autograd node
  being run (`CallRecord.backward_self`, rolled up into `backward_inclusive` on exit), see
  `tracing.backward`. `attention_backward` ('flash' or 'math'; default
  `default_attention_backward(device)`) picks the SDPA backward counted, identical on every
  device. Calls re-run by activation checkpointing during backward get `phase='recompute'`.
  `Trace.step_totals()` splits forward / recompute / backward / unattributed;
  `Trace.saved_activation_bytes` (and `CallRecord.saved_bytes`) are the bytes autograd saved
  for backward (`tracing.backward.SavedTensorMeter`).
Hooks and modes are removed on exit, also when the forward raises.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
    >>> with trace(model) as t:
    ...     _ = model(torch.ones(2, 8))
    >>> [(c.module_path, c.inclusive.flops) for c in t.calls]
    [('', 128), ('0', 128), ('1', 0)]
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from itertools import chain
from typing import Any

import torch

from formula_db.bind import plain_config
from formula_db.meta import flat_tensors

from .backward import (GraphTagger, NodeTags, OUTSIDE, SavedTensorMeter, SdpaGroups,
                       check_attention_backward, default_attention_backward)
from .costs import OpCost
from .counter import OpCounter, counting
from .hooks import CallRecorder
from .memory import StorageTracker, storage_key
from .records import CallRecord, Counters, OpStat, Trace, add_op
from .timing import CallTimer, make_timer


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """Scalar entries (int/float/bool/str/None) of `model.config` (with a composite config's
    text sub-config filling the keys the top level lacks: `formula_db.bind.plain_config`),
    else {}."""
    config = getattr(model, "config", None)
    if not callable(getattr(config, "to_dict", None)):
        return {}
    return {k: v for k, v in plain_config(config).items()
            if v is None or isinstance(v, (bool, int, float, str))}


def flat_tensors_of(value: Any) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_flatten(value)[0] if isinstance(t, torch.Tensor)]


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _model_device(model: torch.nn.Module) -> str | None:
    for t in chain(model.parameters(), model.buffers()):
        return t.device.type
    return None


def _accumulate(counters: Counters, ops: dict[str, OpStat]) -> Callable[[OpCost], None]:
    def on_op(cost: OpCost) -> None:
        counters.add(cost.counters)
        add_op(ops, cost.name, cost.counters)
    return on_op


def _roll_up_backward(calls: list[CallRecord]) -> None:
    for call in reversed(calls):  # children have larger ids than their parent
        call.backward_inclusive = Counters()
        call.backward_inclusive.add(call.backward_self)
        for child in call.children:
            call.backward_inclusive.add(calls[child].backward_inclusive)


@contextmanager
def trace(model: torch.nn.Module, *, device_timing: bool = True, backward: bool = False,
          attention_backward: str | None = None) -> Iterator[Trace]:
    """Record module calls of `model` run inside the block; yields the `Trace` being filled.

    With `backward=True` the block is a training step (forward, loss, `loss.backward()`) and
    backward ops are attributed to modules; see the module docstring."""
    result = Trace(config=model_config(model), weight_bytes=_bytes(model.parameters()),
                   buffer_bytes=_bytes(model.buffers()), device=_model_device(model) or "")
    if backward:
        result.backward = True
        result.attention_backward = check_attention_backward(
            attention_backward or default_attention_backward(result.device))
        result.config["attention_backward"] = result.attention_backward  # formulas bind it
    owned = [k for t in chain(model.parameters(), model.buffers())
             if (k := storage_key(t)) is not None]
    memory = StorageTracker(exclude=owned)
    timer: CallTimer | None = None

    def on_enter(record: CallRecord) -> None:
        nonlocal timer
        if not result.device:
            found = flat_tensors(record.inputs + tuple(record.kwargs.values()))
            result.device = found[0].device if found else "cpu"
        if device_timing and timer is None:
            timer = make_timer(result.device)
        memory.enter(record.call_id)
        if timer is not None:
            timer.start(record.call_id)

    def on_exit(record: CallRecord) -> None:
        if timer is not None:
            timer.stop(record.call_id)
        record.activation_bytes, record.peak_activation_bytes = memory.exit(record.call_id)

    tags = NodeTags()

    def on_output(record: CallRecord, args: tuple, kwargs: dict, output: Any) -> None:
        if torch.is_grad_enabled():
            stop = {t.grad_fn for t in flat_tensors_of((args, kwargs)) if t.grad_fn is not None}
            tags.tag(output, stop, record.call_id)

    recorder = CallRecorder(model, on_enter, on_exit, on_output if backward else None)
    groups = SdpaGroups(result.attention_backward or "flash",  # type: ignore[arg-type]
                        recorder.current_id)
    result.calls = recorder.calls
    outside = _accumulate(result.outside, result.outside_ops)
    outside_backward = _accumulate(result.outside_backward, result.outside_backward_ops)
    unattributed = _accumulate(result.unattributed, result.unattributed_ops)

    def on_backward_op(node: Any, cost: OpCost) -> None:
        owner = tags.owner(node)
        if owner is not None and owner >= 0 and tags.accumulating(node):
            parent = result.calls[owner].parent_call_id
            owner = parent if parent is not None else owner
        if groups.active:  # inside an SDPA node's backward: charge the chosen kernel once
            charged = groups.charge()
            if charged is None:
                return
            owner, counters = charged
            cost = OpCost("aten.scaled_dot_product_attention_backward", counters, True)
        if owner is None:
            unattributed(cost)
        elif owner == OUTSIDE:
            outside_backward(cost)
        else:
            call = result.calls[owner]
            call.backward_self.add(cost.counters)
            add_op(call.backward_ops, cost.name, cost.counters)

    def on_op(cost: OpCost) -> None:
        call = recorder.current()
        node = torch._C._current_autograd_node() if backward else None
        if node is not None and (call is None or call.phase != "recompute"):
            on_backward_op(node, cost)
        elif call is None:
            outside(cost)
        else:
            call.self_counters.add(cost.counters)
            add_op(call.ops, cost.name, cost.counters)
        if not cost.covered:
            result.uncovered_ops[cost.name] = result.uncovered_ops.get(cost.name, 0) + 1

    tagger = GraphTagger(tags, recorder.current_id) if backward else nullcontext()
    saved = SavedTensorMeter(owned, recorder.current_id)
    try:
        with recorder, tagger, saved.hooks() if backward else nullcontext(), counting(OpCounter(on_op, memory, recorder.current_id),
                                        groups.run if backward else None):
            yield result
    finally:
        if backward:
            _roll_up_backward(result.calls)
            for call_id, nbytes in saved.by_call.items():
                if call_id >= 0:
                    result.calls[call_id].saved_bytes = nbytes
            result.saved_activation_bytes = saved.total
        if timer is not None:
            for call_id, seconds in timer.results().items():
                result.calls[call_id].wall_time_s = seconds
        result.peak_activation_bytes = memory.peak
        memory.close()


def count_ops(fn: Callable[..., Any], *args: Any,
              **kwargs: Any) -> tuple[Counters, dict[str, OpStat], Any]:
    """Measure one plain function call (e.g. `F.scaled_dot_product_attention`, `torch.bmm`).

    Returns (total counters, per-op stats by aten op name, the function's output). Uncovered ops
    appear in the per-op stats under their names like any other.
    """
    total = Counters()
    ops: dict[str, OpStat] = {}
    with counting(OpCounter(_accumulate(total, ops))):
        output = fn(*args, **kwargs)
    return total, ops, output
