"""Scaled dot-product attention counted as one fused op, the same on every backend and device.

Why: `F.scaled_dot_product_attention` reaches the dispatcher differently depending on where it
runs. On CPU it becomes `aten._scaled_dot_product_flash_attention_for_cpu` (in torch's flop
registry); on `meta` no fused kernel is chosen, so it decomposes into the math backend (mul, bmm,
_safe_softmax, bmm, ...: the same matmul FLOPs, but other vector FLOPs and bytes, and materialised
scores); under `torch.inference_mode` the composite `aten.scaled_dot_product_attention` itself
arrives, which torch's registry does not cover. `SdpaFence`, a TorchFunctionMode, catches the
Python-level call, runs it with the dispatch counter paused, and reports a single op
'aten.scaled_dot_product_attention' (formula below, vector FLOPs from `tracing.optable.sdpa`,
bytes = query, key, value, mask read + output written, as a fused kernel moves them).

Semantics:
- FLOPs reuse flop_counter's registered sdpa formula (`2*B*Hq*Lq*Lk*E + 2*B*Hq*Lq*Lk*Ev`,
  grouped-query heads supported): equal to the math backend's two bmm; causal masking is not
  discounted (as in flop_counter).
- On cpu and meta the output gets the memory layout of the query (what the CPU fused kernel and
  its meta kernel produce), so the ops after attention (`.transpose(1, 2).contiguous()`) are the
  same on both devices. When CPU falls back to the math backend this costs one uncounted copy.
- Temporaries inside attention are not tracked as activations (fused kernels do not materialise
  the Lq x Lk scores; the math backend would).

Limits: only the Python entry point `torch.nn.functional.scaled_dot_product_attention` is fenced
(see `SdpaFence` for how calls from inside other torch functions are caught); a direct
`torch.ops.aten.scaled_dot_product_attention` call is not: with autograd active it is counted
through whatever backend it decomposes into, under inference_mode as one op. Tracing from two
threads at once is not supported.

Example:
    >>> import torch
    >>> sdpa_flop((2, 4, 8, 16), (2, 4, 10, 16), (2, 4, 10, 32))  # 2*640*16 + 2*640*32
    61440
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from math import prod
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import flop_registry, shape_wrapper

aten = torch.ops.aten
_SDPA = torch._C._nn.scaled_dot_product_attention  # what F.scaled_dot_product_attention is
_REGISTERED_SDPA = flop_registry[aten._scaled_dot_product_flash_attention_for_cpu]


def _as_4d(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(..., H, L, E) -> (B, H, L, E), leading dims folded into B; (L, E) -> (1, 1, L, E)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) >= 4:
        return (prod(shape[:-3]),) + shape[-3:]  # type: ignore[return-value]
    return (1,) * (4 - len(shape)) + shape  # type: ignore[return-value]


def sdpa_flop(query_shape: tuple[int, ...], key_shape: tuple[int, ...],
              value_shape: tuple[int, ...], *args: Any, out_shape: Any = None,
              **kwargs: Any) -> int:
    """FLOPs of aten.scaled_dot_product_attention: torch's registered sdpa formula on 4-D shapes."""
    return _REGISTERED_SDPA(_as_4d(query_shape), _as_4d(key_shape), _as_4d(value_shape))


# Our own FLOP formulas, in flop_counter's calling convention (tensors in, `out_val=` keyword),
# for ops that actually run but torch's `flop_registry` lacks. Not merged into torch's global
# registry, so `FlopCounterMode` stays an independent reference.
def grouped_mm_flop(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None,
                    **kwargs: Any) -> int:
    """aten._grouped_mm (mixture-of-experts experts in transformers 5): 2 x rows x K x N summed
    over the groups. 2-D x 3-D (rows split by offsets) and 3-D x 3-D give 2 * numel(out) * K;
    2-D x 2-D (K split into groups) gives 2 * M * K * N. Missing from torch 2.15's registry."""
    if len(a_shape) == 2 and len(b_shape) == 2:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]
    return 2 * prod(out_shape) * a_shape[-1]


# FLOP formulas for ops torch's flop_registry lacks (known upstream gaps), same calling
# convention (shape_wrapper): looked up by `tracing.costs.flop_formula` after the registry.
EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    aten.scaled_dot_product_attention: shape_wrapper(sdpa_flop),
    aten._grouped_mm: shape_wrapper(grouped_mm_flop),
}


def _query_layout(query: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`out` with the query's dimension order (cpu/meta only); copies only when they differ."""
    if out.device.type not in ("cpu", "meta") or out.dim() != 4 or query.dim() != 4:
        return out
    order = sorted(range(4), key=lambda d: -query.stride(d))
    wanted = torch.empty_permuted(out.shape, order, dtype=out.dtype, device=out.device)
    if wanted.stride() == out.stride():
        return out
    # on meta the copy is free but keeps the autograd graph (training traces need it)
    return wanted.copy_(out) if out.device.type != "meta" or out.requires_grad else wanted


def _sdpa_in_query_layout(*args: Any, **kwargs: Any) -> torch.Tensor:
    return _query_layout(args[0], _SDPA(*args, **kwargs))


def _qkv_positional(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Move query/key/value passed by keyword to the front of args (formulas read positions)."""
    kwargs = dict(kwargs)
    names = ("query", "key", "value")[len(args):]
    return tuple(args) + tuple(kwargs.pop(n) for n in names if n in kwargs), kwargs


class SdpaFence(TorchFunctionMode):
    """Turns each `F.scaled_dot_product_attention` call into one op reported to `record`.

    `pause`/`resume` bracket the call so the dispatch counter ignores what runs inside; `record`
    receives (aten op, args, kwargs, output) after it returns. Two entry points feed it:
    the mode itself (any caller, including names imported before the trace), and, while active,
    `torch.nn.functional.scaled_dot_product_attention` replaced by a thin forwarder, because a
    torch function mode is popped while a Python-level torch function runs its body
    (`F.multi_head_attention_forward`, used by `nn.MultiheadAttention`, calls SDPA from there).
    The forwarder counts only on the thread that entered the fence; the name is restored on exit.
    """

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None],
                 record: Callable[[Any, tuple, dict, Any], None],
                 runner: Callable[[Callable[..., Any], tuple, dict], Any] | None = None) -> None:
        super().__init__()
        self._pause, self._resume, self._record = pause, resume, record
        self._runner = runner  # training traces: `tracing.backward.SdpaGroups.run`
        self._inside = False
        self._thread: int | None = None
        self._replaced: Any = None

    def _fenced(self, args: tuple, kwargs: dict) -> Any:
        if self._inside or threading.get_ident() != self._thread:
            return _SDPA(*args, **kwargs)
        args, kwargs = _qkv_positional(args, kwargs)
        self._inside = True
        self._pause()
        try:
            if self._runner is not None:
                out = self._runner(_sdpa_in_query_layout, args, kwargs)
            else:
                out = _sdpa_in_query_layout(*args, **kwargs)
        finally:
            self._inside = False
            self._resume()
        self._record(aten.scaled_dot_product_attention.default, args, kwargs, out)
        return out

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _SDPA:
            return self._fenced(args, kwargs)
        return func(*args, **kwargs)

    def __enter__(self) -> "SdpaFence":
        self._thread = threading.get_ident()
        self._replaced = F.scaled_dot_product_attention

        def scaled_dot_product_attention(*args: Any, **kwargs: Any) -> Any:
            return self._fenced(args, kwargs)

        F.scaled_dot_product_attention = scaled_dot_product_attention  # type: ignore[assignment]
        try:
            return super().__enter__()
        except BaseException:
            F.scaled_dot_product_attention = self._replaced
            raise

    def __exit__(self, *exc: Any) -> None:
        F.scaled_dot_product_attention = self._replaced
        self._thread = None
        super().__exit__(*exc)
