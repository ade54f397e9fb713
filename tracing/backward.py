"""Backward attribution: which module call's forward created each autograd node, and SDPA
backward counted as one chosen kernel on every device.

How: while a trace with `backward=True` is active, `GraphTagger` (a TorchFunctionMode) walks,
after every torch function call, the autograd nodes reachable from the call's outputs that are
not yet tagged (stopping at the grad_fn of its tensor arguments and at tagged nodes) and stores
the innermost module call id in the node's `metadata` dict (-1: created outside any module call,
e.g. a loss computed after the model). Module post-hooks walk the module's outputs the same way,
which catches nodes created without a torch function (custom autograd Functions, C++
internals). The AccumulateGrad node of a parameter belongs to the first call that used it.
During `loss.backward()` the dispatch counter asks `torch._C._current_autograd_node()` which node
the engine is running and charges its ops to the tagged call (`CallRecord.backward_self`); ops
of untagged nodes are `Trace.unattributed`. Gradient accumulation (the engine adding the
gradients of a tensor used by several consumers, after a node's function returned; seen through a
node post-hook) is charged to the parent of the node's call: the module that combined the
branches (a residual block, an attention module feeding q, k and v from one input), not a leaf.

Attention: `F.scaled_dot_product_attention` is a fused op on CPU (its backward is the flash
kernel's) but decomposes into the math backend on `meta`. In a training trace the fence runs each
SDPA call as one autograd node (`_SdpaNode`); in backward the ops it runs are not counted, and
it is charged once, as op 'aten.scaled_dot_product_attention_backward', with the cost of the chosen
kernel (`attention_backward`): 'flash' (torch's CPU flash backward: recomputes the scores, 2.5x
the forward matmul FLOPs, flop_counter's sdpa backward formula; when query and value head sizes
differ, which flash kernels refuse, math) or 'math' (the unfused math backward: 2x forward
FLOPs, materialised scores). The cost is measured once per shape by running
that kernel's backward on `meta` tensors, so `meta` and CPU give the same counts.

Example:
    >>> import torch
    >>> from tracing import trace
    >>> lin = torch.nn.Linear(8, 4)
    >>> with trace(lin, backward=True) as t:
    ...     lin(torch.ones(2, 8)).sum().backward()
    >>> t.calls[0].backward_self.flops   # grad of the weight (128); no grad for the input
    128
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import count
from typing import Any, Literal

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from .records import Counters

AttentionBackward = Literal["flash", "math"]
ATTENTION_BACKWARDS: tuple[str, ...] = ("flash", "math")
OUTSIDE = -1
_trace_ids = count()


def default_attention_backward(device: str) -> AttentionBackward:
    """The SDPA backward a device runs for the shapes LM-Predictor traces: the fused flash kernel
    on cpu and cuda (and for `meta`, which stands in for them); the math backward elsewhere."""
    return "flash" if device in ("cpu", "cuda", "meta", "") else "math"


def check_attention_backward(kind: str) -> AttentionBackward:
    if kind not in ATTENTION_BACKWARDS:
        raise ValueError(f"attention_backward must be one of {', '.join(ATTENTION_BACKWARDS)}, "
                         f"not {kind!r}")
    return kind  # type: ignore[return-value]


def _grad_fns(values: Iterable[Any]) -> set[Any]:
    found = set()
    for value in values:
        for t in tree_flatten(value)[0]:
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                found.add(t.grad_fn)
    return found


class NodeTags:
    """Per-trace tags stored in autograd nodes' `metadata` (one key per trace)."""

    def __init__(self) -> None:
        n = next(_trace_ids)
        self.call_key = f"lm_predictor.call.{n}"
        self.done_key = f"lm_predictor.done.{n}"

    def tag(self, outputs: Any, stop: set[Any], call_id: int) -> None:
        """Tag untagged nodes reachable from `outputs` (not crossing `stop` or tagged nodes)."""
        stack = list(_grad_fns([outputs]))
        while stack:
            node = stack.pop()
            if node is None or node in stop or self.call_key in node.metadata:
                continue
            node.metadata[self.call_key] = call_id
            if type(node).__name__ != "AccumulateGrad":
                node.register_hook(self._mark_done)
            stack.extend(next_node for next_node, _ in node.next_functions)

    def _mark_done(self, grad_inputs: Any, grad_outputs: Any) -> None:
        node = torch._C._current_autograd_node()
        if node is not None:
            node.metadata[self.done_key] = True

    def accumulating(self, node: Any) -> bool:
        """True once `node`'s function has returned: the engine is summing the gradients it
        produced into inputs that several consumers feed (a tensor used twice)."""
        return bool(node.metadata.get(self.done_key))

    def owner(self, node: Any) -> int | None:
        """Call id that created `node` (OUTSIDE for none), None when untagged."""
        return node.metadata.get(self.call_key)


class GraphTagger(TorchFunctionMode):
    """Tags the autograd nodes every torch function call creates with the innermost call id."""

    def __init__(self, tags: NodeTags, current_id: Callable[[], int]) -> None:
        super().__init__()
        self._tags = tags
        self._current_id = current_id

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        # The arguments' grad_fns before the call: an in-place op replaces its argument's grad_fn
        # with the node it creates, which must be tagged, not taken for an input's node.
        stop = _grad_fns((args, kwargs)) if torch.is_grad_enabled() else set()
        out = func(*args, **kwargs)
        if torch.is_grad_enabled():
            self._tags.tag(out, stop, self._current_id())
        return out


def _meta_like(t: torch.Tensor, heads: int | None = None) -> torch.Tensor:
    shape = list(t.shape)
    if heads is not None and len(shape) >= 3:
        shape[-3] = heads
    return torch.empty(shape, dtype=t.dtype, device="meta")


@lru_cache(maxsize=256)
def _sdpa_backward_cost(kind: str, q: tuple, k: tuple, v: tuple, mask: tuple | None,
                        dtype: torch.dtype, mask_dtype: torch.dtype | None, dropout_p: float,
                        is_causal: bool, scale: float | None) -> tuple[Counters, tuple]:
    """Counters of one SDPA backward by kernel `kind`, measured on meta tensors."""
    with torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
        return _measure_sdpa_backward(kind, q, k, v, mask, dtype, mask_dtype, dropout_p,
                                      is_causal, scale)


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _measure_sdpa_backward(kind: str, q: tuple, k: tuple, v: tuple, mask: tuple | None,
                           dtype: torch.dtype, mask_dtype: torch.dtype | None, dropout_p: float,
                           is_causal: bool, scale: float | None) -> tuple[Counters, tuple]:
    """The measurement itself; its own saved tensors stay out of any active saved-tensor hooks
    (activation checkpointing, `SavedTensorMeter`), pushed aside by identity hooks."""
    from .counter import OpCounter
    from .records import OpStat, add_op

    heads = q[-3] if len(q) >= 3 else None
    query = torch.empty(q, dtype=dtype, device="meta", requires_grad=True)
    key_shape, value_shape = list(k), list(v)
    if heads is not None and len(k) >= 3 and k[-3] != heads:  # grouped-query: kernels repeat kv
        key_shape[-3] = value_shape[-3] = heads
    key = torch.empty(key_shape, dtype=dtype, device="meta", requires_grad=True)
    value = torch.empty(value_shape, dtype=dtype, device="meta", requires_grad=True)
    attn_mask = None
    if mask is not None:
        attn_mask = torch.empty(mask, dtype=mask_dtype, device="meta")
    if kind == "flash" and q[-1] != v[-1]:
        kind = "math"  # the flash kernels need equal query and value head sizes; math runs
    if kind == "flash":
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(mask, dtype=dtype, device="meta")
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]
    else:
        out = torch.ops.aten._scaled_dot_product_attention_math(
            query, key, value, attn_mask, dropout_p, is_causal, scale=scale)[0]
    grad = torch.empty(out.shape, dtype=out.dtype, device="meta")
    total = Counters()
    ops: dict[str, OpStat] = {}

    def on_op(cost: Any) -> None:
        total.add(cost.counters)
        add_op(ops, cost.name, cost.counters)

    with OpCounter(on_op):
        torch.autograd.grad(out, (query, key, value), grad)
    return total, tuple(sorted(ops))


def sdpa_backward_cost(kind: str, args: tuple, kwargs: dict) -> Counters:
    """Backward cost of one `F.scaled_dot_product_attention(*args, **kwargs)` call by `kind`."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
    bound = dict(zip(names, args))
    bound.update({n: kwargs[n] for n in kwargs})
    q, k, v = bound["query"], bound["key"], bound["value"]
    mask = bound.get("attn_mask")
    counters, _ = _sdpa_backward_cost(
        kind, tuple(q.shape), tuple(k.shape), tuple(v.shape),
        tuple(mask.shape) if isinstance(mask, torch.Tensor) else None, q.dtype,
        mask.dtype if isinstance(mask, torch.Tensor) else None,
        float(bound.get("dropout_p") or 0.0), bool(bound.get("is_causal")), bound.get("scale"))
    copy = Counters()
    copy.add(counters)
    return copy


class SavedTensorMeter:
    """Bytes autograd saves for backward during the forward of a training step, per call.

    A `torch.autograd.graph.saved_tensors_hooks` pack hook sees every tensor an autograd node
    saves; each storage counts once (its `nbytes()`, so views share it), parameters and buffers
    never, and only packs made outside the backward pass (not recomputation). Attributed to the
    innermost call at pack time (`OUTSIDE` for a loss after the model). Under non-reentrant
    checkpointing a region's inner saves go to the checkpoint's own hooks and only its inputs
    reach this one, so the figure is what checkpointing keeps.
    """

    def __init__(self, exclude: Iterable[int], current_id: Callable[[], int]) -> None:
        self._exclude = set(exclude)
        self._seen: set[int] = set()
        self._current_id = current_id
        self.by_call: dict[int, int] = {}
        self.total = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if torch._C._current_autograd_node() is None:
            try:
                storage = t.untyped_storage()
                key = storage._cdata
            except (RuntimeError, NotImplementedError, TypeError):
                return t
            if key not in self._exclude and key not in self._seen:
                self._seen.add(key)
                nbytes = storage.nbytes()
                owner = self._current_id()
                self.by_call[owner] = self.by_call.get(owner, 0) + nbytes
                self.total += nbytes
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def hooks(self) -> Any:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _SdpaNode(torch.autograd.Function):
    """One autograd node around an SDPA call: backward runs the real kernel's backward (whatever
    the device picked) while `SdpaGroups.active` says its ops are not to be counted, and returns
    gradients in their inputs' layout, so the ops after it are the same on every device."""

    @staticmethod
    def forward(ctx: Any, groups: "SdpaGroups", group: int, fn: Callable[..., Any], spec: Any,
                flat: list, *tensors: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
            inner = [t.detach().requires_grad_(t.requires_grad) for t in tensors]
            it = iter(inner)
            args, kwargs = tree_unflatten([next(it) if isinstance(x, torch.Tensor) else x
                                           for x in flat], spec)
            out = fn(*args, **kwargs)
        ctx.groups, ctx.group, ctx.inner, ctx.out = groups, group, inner, out
        # What the chosen kernel keeps for backward, saved through the active saved-tensor hooks
        # (activation checkpointing, `SavedTensorMeter`) instead of the device's own kernel's
        # saves: q, k, v, the output, and flash's fp32 logsumexp or math's attention weights.
        q, k = tensors[0], tensors[1]
        extra = (q.shape[:-1] if groups.kind == "flash" else q.shape[:-1] + k.shape[-2:-1])
        stand_in = torch.empty(extra, dtype=torch.float32 if groups.kind == "flash" else q.dtype,
                               device=q.device)
        ctx.save_for_backward(*tensors[:3], out.detach(), stand_in)
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        ctx.saved_tensors  # unpacked as a kernel would (checkpointing recomputes here)
        wanted = [t for t in ctx.inner if t.requires_grad]
        ctx.groups.active.append(ctx.group)
        try:
            grads = iter(torch.autograd.grad(ctx.out, wanted, grad, allow_unused=True))
            result = []
            for t in ctx.inner:
                g = next(grads) if t.requires_grad else None
                result.append(None if g is None else torch.empty_like(t).copy_(g))
        finally:
            ctx.groups.active.pop()
        return (None, None, None, None, None, *result)


class SdpaGroups:
    """SDPA calls run in a training trace: each is one `_SdpaNode`, charged in backward once
    with the chosen kernel's backward cost, to the call that ran it."""

    def __init__(self, kind: AttentionBackward, current_id: Callable[[], int]) -> None:
        self.kind = kind
        self._current_id = current_id
        self.costs: dict[int, Counters] = {}
        self.owners: dict[int, int] = {}
        self.charged: set[int] = set()
        self.active: list[int] = []

    def run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Run `fn(*args, **kwargs)` (an SDPA call) as one node when it needs a gradient."""
        flat, spec = tree_flatten((args, kwargs))
        tensors = [x for x in flat if isinstance(x, torch.Tensor)]
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
            return fn(*args, **kwargs)
        group = len(self.costs)
        self.costs[group] = sdpa_backward_cost(self.kind, args, kwargs)
        self.owners[group] = self._current_id()
        return _SdpaNode.apply(self, group, fn, spec, flat, *tensors)

    def charge(self) -> tuple[int, Counters] | None:
        """(owner call id, cost) of the active group the first time it runs an op, then None."""
        group = self.active[-1]
        if group in self.charged:
            return None
        self.charged.add(group)
        return self.owners[group], self.costs[group]
