"""Module call recording: one `CallRecord` per call of every submodule of a model.

`CallRecorder` registers, on each module of `model.named_modules()`, a forward pre-hook and a
forward hook (`with_kwargs=True`, the post hook with `always_call=True` so a raising forward still
closes its call). It keeps the stack of active calls, which the dispatch counter asks for the
innermost call (`current()`), and fills records in call order: call_id 0 is the first root call.

Semantics:
- module_path is the qualified name from `model.named_modules()` ('' for the model itself); a
  module reachable under two names gets the first. A module called several times gets one record
  per call.
- inputs/kwargs/outputs are `formula_db.meta.describe`d; a mapping output (e.g. a transformers
  `ModelOutput`) is stored as a dict of described values.
- attributes: `formula_db.bind.plain_attributes(module)`, exactly what a formula bind sees: the
  module's public `vars()` entries that are int/float/bool/str/None or tuples of ints (Conv
  kernel_size, stride...), `training` included, plus `has_<name>` for registered parameters and
  buffers (`has_bias`).
- on exit, `inclusive` = `self_counters` + the children's `inclusive`.

- phase: 'recompute' for a call made while the autograd engine runs a node (activation
  checkpointing re-running forward during backward), else 'forward'.
- training traces (`on_output` given) add the attributes `input_requires_grad` (whether the
  first tensor argument needs a gradient: a formula's backward computes a grad input or not)
  and `grad_enabled` (autograd recording: what the forward saves for backward).
- `on_output(record, args, kwargs, output)`, when given, sees each call's real output before the
  caller does (`tracing.backward` tags the autograd nodes it reaches).

Limits: modules not registered in the model (created inside forward) and `submodule.forward(x)`
calls that bypass `__call__` are not recorded; their ops go to the calling module. Backward ops
are attributed by `tracing.backward`, not here.

Example:
    >>> import torch
    >>> rec = CallRecorder(torch.nn.Sequential(torch.nn.ReLU()))
    >>> with rec:
    ...     _ = rec.model(torch.ones(2))
    >>> [(c.call_id, c.module_path, c.parent_call_id) for c in rec.calls]
    [(0, '', None), (1, '0', 0)]
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from formula_db.bind import plain_attributes
from formula_db.meta import describe
from formula_db.naming import dotted_name, key_for

from .records import CallRecord


def module_attributes(module: torch.nn.Module, path: str = "") -> dict[str, Any]:
    """Plain attributes a formula may bind (`formula_db.bind.plain_attributes`: scalars, tuples
    of ints, `training`, and `has_<name>` for registered parameters and buffers), plus
    `list_index`: the module's position in its parent container (`model.layers.3` -> 3), None
    when its name is not a number. Decoder layers use it to know whether earlier layers have
    already appended this step's tokens to a shared KV cache. `block_index`: the position of the
    nearest numbered ancestor (`encoder.block.3.layer.0` -> 3), None when there is none, so that a
    sub-layer knows its layer (T5's shared position bias). `inference_mode` and
    `weight_requires_grad` decide which path aten's matmul takes for a non-contiguous input
    (fold into one mm, or a bmm over an expanded weight)."""
    attrs = plain_attributes(module)
    last = path.rsplit(".", 1)[-1]
    attrs.setdefault("list_index", int(last) if last.isdigit() else None)
    ancestors = [part for part in path.split(".")[:-1] if part.isdigit()]
    attrs.setdefault("block_index", int(ancestors[-1]) if ancestors else None)
    weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
    if weight is not None:
        attrs.setdefault("weight_requires_grad", bool(weight.requires_grad))
    attrs.setdefault("inference_mode", torch.is_inference_mode_enabled())
    return attrs


def describe_output(output: Any) -> Any:
    if isinstance(output, Mapping):
        return {str(k): describe(v) for k, v in output.items()}
    return describe(output)


class CallRecorder:
    """Records module calls of `model` while active (`with recorder:`)."""

    def __init__(self, model: torch.nn.Module,
                 on_enter: Callable[[CallRecord], None] | None = None,
                 on_exit: Callable[[CallRecord], None] | None = None,
                 on_output: Callable[[CallRecord, tuple, dict, Any], None] | None = None) -> None:
        self.model = model
        self.calls: list[CallRecord] = []
        self._stack: list[CallRecord] = []
        self._paths = {id(m): name for name, m in model.named_modules()}
        self._on_enter, self._on_exit = on_enter, on_exit
        self._on_output = on_output
        self._handles: list[Any] = []

    def current(self) -> CallRecord | None:
        return self._stack[-1] if self._stack else None

    def current_id(self) -> int:
        return self._stack[-1].call_id if self._stack else -1

    def _pre(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        parent = self.current()
        record = CallRecord(
            call_id=len(self.calls),
            parent_call_id=parent.call_id if parent else None,
            depth=len(self._stack),
            module_path=self._paths[id(module)],
            class_name=dotted_name(module),
            formula_key=key_for(module),
            inputs=tuple(describe(a) for a in args),
            kwargs={k: describe(v) for k, v in kwargs.items()},
            outputs=None,
            attributes=module_attributes(module, self._paths[id(module)]),
            phase="recompute" if torch._C._current_autograd_node() is not None else "forward",
        )
        if self._on_output is not None:
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            record.attributes["input_requires_grad"] = bool(first is not None
                                                            and first.requires_grad)
            record.attributes["grad_enabled"] = torch.is_grad_enabled()
        if parent is not None:
            parent.children.append(record.call_id)
        self.calls.append(record)
        self._stack.append(record)
        if self._on_enter is not None:
            self._on_enter(record)

    def _post(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self._stack or self._paths[id(module)] != self._stack[-1].module_path:
            return  # a call that started before the recorder was attached
        record = self._stack[-1]
        if self._on_output is not None:
            self._on_output(record, args, kwargs, output)
        if self._on_exit is not None:
            self._on_exit(record)
        self._stack.pop()
        record.outputs = describe_output(output)
        record.inclusive.add(record.self_counters)
        for child in record.children:
            record.inclusive.add(self.calls[child].inclusive)

    def __enter__(self) -> "CallRecorder":
        try:
            for module in self.model.modules():
                self._handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._post, with_kwargs=True,
                                                                  always_call=True))
        except BaseException:
            self.remove_hooks()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()
        self._stack.clear()

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
