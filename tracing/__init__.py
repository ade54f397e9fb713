"""Tracing: run a model once and record every module call with measured costs.

`trace(model)` is a context manager yielding a `Trace`: one `CallRecord` per module call (call
tree, described arguments, attributes), measured per-op counters (matmul FLOPs from torch's
flop registry, vector FLOPs and bytes from `tracing.optable`), activation memory, wall time.
`count_ops(fn, ...)` measures a plain function call. `fvcore_flops_by_module` is an independent
second FLOP counter. Module map: records (dataclasses), optable (per-op vector/byte table),
attention (SDPA formula and fence), costs (bind: op -> counters), counter (dispatch mode),
memory (storage lifetimes), hooks (call recording), timing, trace (the context manager),
backward (training steps: backward ops attributed to modules, SDPA backward kernel choice,
saved-tensor bytes), summary (a trace's repr, `total()`, `by_module()`, `by_class()`,
`by_operator()`, `tree()`). `trace(model, backward=True)` records forward + loss +
`loss.backward()`; `Trace.step_totals()` splits forward / recompute / backward / unattributed.

Example:
    >>> import torch
    >>> from tracing import trace
    >>> model = torch.nn.Linear(8, 4)
    >>> with trace(model) as t:
    ...     _ = model(torch.ones(2, 8))
    >>> t.totals.flops
    128
"""
from .fvcore_counter import fvcore_flops_by_module
from .backward import ATTENTION_BACKWARDS, default_attention_backward
from .records import METRICS, CallRecord, Counters, OpStat, StepTotals, Trace
from .trace import count_ops, trace

__all__ = ["METRICS", "CallRecord", "Counters", "OpStat", "StepTotals", "Trace", "count_ops",
           "trace", "fvcore_flops_by_module", "ATTENTION_BACKWARDS", "default_attention_backward"]
