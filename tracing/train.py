"""One traced training step of a model: forward with labels, the loss, `loss.backward()`.

`trace_training_step(model, inputs)` is what `analyze --phase train` runs: it puts the model in
training mode (dropout active, batch-norm batch statistics), optionally turns on activation
checkpointing (transformers' `activation_checkpointing_enable`, non-reentrant), runs the step inside
`tracing.trace(model, backward=True)` and restores the model's mode, checkpointing and gradients
(`.grad` is None before and after, so a step never accumulates into an earlier one).

The loss: `labels` defaults to `input_ids` (causal LM: transformers shifts them); the model must
return an output with a `.loss`, or pass `loss_fn(output) -> scalar tensor`.

Example:
    >>> t = trace_training_step(model, {"input_ids": ids})           # doctest: +SKIP
    >>> t.step_totals().as_dict()["backward"]["flops"]                # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .records import Trace
from .trace import trace


class TrainingStepError(ValueError):
    """A training step cannot be traced as asked (one line naming the cause and the fix)."""


def _loss_of(output: Any) -> torch.Tensor:
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, Mapping):
        loss = output.get("loss")
    if not isinstance(loss, torch.Tensor):
        raise TrainingStepError("the model returned no loss; pass labels the model accepts or a "
                                "loss_fn(output) that returns a scalar tensor")
    return loss


def _set_checkpointing(model: torch.nn.Module, on: bool) -> None:
    if on:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if not callable(enable) or not getattr(model, "supports_gradient_checkpointing", False):
            raise TrainingStepError(f"{type(model).__name__} does not support activation "
                                    f"checkpointing (transformers activation_checkpointing_enable); "
                                    f"run without checkpointing")
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
        # Keep the flag on the decoder layers only: a model-level flag makes transformers drop
        # the cache (use_cache=False), and with no cache its mask code inspects position ids
        # (packed-sequence detection, `.all()`), which `meta` tensors cannot answer. The layers
        # themselves still checkpoint and ignore the cache, as with the model-level flag.
        from transformers.modeling_layers import GradientCheckpointingLayer
        for module in model.modules():
            if (hasattr(module, "gradient_checkpointing")
                    and not isinstance(module, GradientCheckpointingLayer)):
                module.gradient_checkpointing = False
    else:
        disable = getattr(model, "activation_checkpointing_disable", None)
        if callable(disable):
            disable()


def _refuse_autocast_on_meta(model: torch.nn.Module) -> None:
    """`torch.autocast` does nothing to meta tensors: a meta step under autocast would silently
    count full precision. Refused with the fix."""
    first = next(model.parameters(), None)
    if first is None or first.device.type != "meta":
        return
    active = [d for d in ("cpu", "cuda") if torch.is_autocast_enabled(d)]
    if active:
        raise TrainingStepError(f"torch.autocast ({active[0]}) has no effect on meta tensors, so "
                                f"this step would be counted in full precision; build the model "
                                f"in the compute dtype (dtype=torch.bfloat16) or trace on a "
                                f"device where autocast applies")


def trace_training_step(model: torch.nn.Module, inputs: Mapping[str, Any], *,
                        attention_backward: str | None = None, checkpointing: bool = False,
                        loss_fn: Callable[[Any], torch.Tensor] | None = None,
                        device_timing: bool = True) -> Trace:
    """Trace forward + loss + backward of one step; see the module docstring."""
    _refuse_autocast_on_meta(model)
    kwargs = dict(inputs)
    if loss_fn is None and "labels" not in kwargs and "input_ids" in kwargs:
        kwargs["labels"] = kwargs["input_ids"]
    was_training = model.training
    for p in model.parameters():
        p.grad = None
    model.train()
    if checkpointing:
        _set_checkpointing(model, True)
    try:
        with torch.enable_grad(), trace(model, backward=True, device_timing=device_timing,
                                        attention_backward=attention_backward) as t:
            output = model(**kwargs)
            loss = loss_fn(output) if loss_fn is not None else _loss_of(output)
            loss.backward()
        return t
    finally:
        if checkpointing:
            _set_checkpointing(model, False)
        model.train(was_training)
        for p in model.parameters():
            p.grad = None
