"""Kernel models for time estimates: `eager` (what the trace measures) and `fused` (a serving engine).

A trace counts the unfused aten ops that transformers runs in eager PyTorch. A serving engine
(vLLM, TensorRT-LLM, SGLang) runs the same model with fused kernels. The two kernel models map
the same trace to per-call pseudo-leaf `Work` (see `hardware.roofline`), which is then estimated
and summed upward as usual:

- `eager`: every call's own work exactly as traced — unfused aten ops (a bf16 RMSNorm upcasts,
  squares, averages, multiplies and casts back: ~9 tensor passes), transformers' KV cache
  re-concatenated every step (`DynamicCache.update` is a `cat` of the whole cache), attention
  FLOPs dense (all S x T scores), logits at every position unless `logits="last"`.
- `fused`: per-class rules, recognised from the call record (class name, module path, inputs,
  outputs, own aten ops), never per model:
  * norm (leaf whose class name contains "Norm"): one kernel; bytes_read = its tensor inputs +
    the affine parameters (last dim x itemsize, once per `has_weight`/`has_bias`), bytes_written =
    its tensor outputs; FLOPs as traced.
  * activation (leaf named like GELU/SiLU/ReLU/Tanh/Sigmoid/...Activation): one kernel; bytes =
    tensor inputs + outputs; FLOPs as traced.
  * rotary embedding module (leaf whose class name contains "Rotary"): no work — the cos/sin
    table is precomputed at load time; the rows used are read by the attention's rotary kernel.
  * attention (class name contains "Attention" and its own ops hold the fenced
    `aten.scaled_dot_product_attention`): the call's own work is replaced by three kernels.
    From the SDPA op: Q = O = its bytes written, KV_all = its bytes read - Q (every key and
    value the kernel needs, cache included); S = the call output's dim 1 (new tokens); T = keys
    per query = the formula's cached tokens (`kv`/`kv_len`) + S where the call's zoo entry binds
    one, else flops * s / (2 * (Q + O)) (flop_counter's `2*B*Hq*S*T*(E+Ev)`, s = itemsize);
    KV_new = KV_all * S / T (all of it with nothing cached; none for a call given no cache:
    encoders append nothing).
      - rotary (only when the call got `position_embeddings`): read Q + KV_new/2 + cos/sin,
        write Q + KV_new/2 (q and the new keys rotated in place);
      - KV append in place (paged-attention style): read KV_new, write KV_new (only for calls
        given a cache);
      - flash attention: read Q + KV_all once, write O; no score matrix; FLOPs = the entry's
        `useful` breakdown item (causal / sliding-window useful work) when the call's formula
        has one, else the dense SDPA figure; vector FLOPs = the traced SDPA vector FLOPs x
        (useful / dense FLOPs), keeping the tracer's convention. The call's other own FLOPs
        (e.g. rotary arithmetic) are kept.
    Linear projections are child calls and stay as traced.
  * lm_head (leaf at path `lm_head`/`embed_out`, the output head of transformers causal LMs) with
    `logits="last"` in a prefill (S > 1): only the last position is projected: FLOPs, vector
    FLOPs and the input/output bytes / S, weight bytes unchanged (weight = bytes_read - input).
  * everything else (linears, embeddings, residual adds, the gated-MLP multiply): as traced.
  Fused kernels count 1 op each (for the per-op overhead).

Limits: attention implemented without SDPA (`attn_implementation="eager"`, e.g. Gemma-2's
soft-capping) keeps its eager cost; where the value head size differs from the query's (MLA),
Q is taken as large as O, so Q and KV bytes are split approximately; an attention mask read by SDPA counts as KV bytes; cross-attention is treated like
self-attention (its "new" keys are the whole encoder output). MoE routing and SSM scans are
charged as traced.

Example:
    >>> kernel_default("gpu"), kernel_default("cpu")
    ('fused', 'eager')
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Iterable, Literal

from hardware.catalog import Device, Efficiency, HardwareError
from hardware.roofline import (CallWork, TraceEstimate, Work, calls_from_records, estimate_calls,
                               work_of)

KernelModel = Literal["eager", "fused"]
Logits = Literal["last", "all"]
KERNEL_MODELS: tuple[str, ...] = ("eager", "fused")
SDPA_OP = "aten.scaled_dot_product_attention"
OUTPUT_HEADS = ("lm_head", "embed_out")
_ACTIVATION = re.compile(r"(GELU|SiLU|ReLU|Tanh|Sigmoid|Swish|Mish|Softplus|Activation)",
                         re.IGNORECASE)
Category = Literal["attention", "norm", "activation", "rotary", "lm_head", "other"]


def kernel_default(device_kind: str) -> KernelModel:
    """`fused` on accelerators, `eager` on CPUs (which run transformers' eager ops)."""
    return "eager" if device_kind == "cpu" else "fused"


def check_kernels(kernels: str, logits: str | None = None) -> None:
    """Raise `HardwareError` for an unknown kernel model or logits mode."""
    if kernels not in KERNEL_MODELS:
        raise HardwareError(f"unknown kernel model {kernels!r}; use 'eager' or 'fused'")
    if logits is not None and logits not in ("last", "all"):
        raise HardwareError(f"unknown logits mode {logits!r}; use 'last' or 'all'")


def _tensors(value: Any) -> list[Any]:
    """Tensor descriptions (`formula_db.meta.TensorMeta`-like: shape, itemsize) in a described
    value (tuples, lists, dicts nested)."""
    if hasattr(value, "shape") and hasattr(value, "itemsize"):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _nbytes(value: Any) -> int:
    total = 0
    for t in _tensors(value):
        n = 1
        for d in t.shape:
            n *= int(d)
        total += n * int(t.itemsize)
    return total


def _first(value: Any) -> Any | None:
    found = _tensors(value)
    return found[0] if found else None


def category_of(record: Any) -> Category:
    """Which fused-kernel rule applies to a call record (see the module docstring)."""
    name = record.class_name.rsplit(".", 1)[-1]
    leaf = not record.children
    if "Attention" in name and SDPA_OP in record.ops:
        return "attention"
    if not leaf:
        return "other"
    if record.module_path.rsplit(".", 1)[-1] in OUTPUT_HEADS:
        return "lm_head"
    if "Norm" in name:
        return "norm"
    if "Rotary" in name:
        return "rotary"
    if _ACTIVATION.search(name):
        return "activation"
    return "other"


@lru_cache(maxsize=1)
def _default_registry() -> Any:
    from formula_db.registry import Registry
    return Registry.default()


def useful_attention(record: Any, config: dict[str, Any], registry: Any) -> dict[str, int] | None:
    """The call's formula's `useful` breakdown item (flops, vector_flops), None without one."""
    if registry is None:
        return None
    from formula_db.bind import make_roots
    try:
        entry = registry.find(record.formula_key)
        if entry is None or not any(i.kind == "useful" for i in entry.breakdown):
            return None
        roots = make_roots(record.attributes, record.inputs, record.kwargs, record.outputs,
                           config)
        params = registry.bind(entry.key, roots)
        for name, kind, values in registry.breakdown(entry.key, params):
            if kind == "useful":
                return {m: int(v) for m, v in values.items()}
    except Exception:  # a formula that cannot bind this call: fall back to the dense figures
        return None
    return None


@dataclass(frozen=True)
class AttentionShapes:
    """What the fused attention rule reads off one attention call (bytes, tokens)."""

    q_bytes: int
    o_bytes: int
    kv_all_bytes: int
    kv_new_bytes: int
    new_tokens: int
    keys: int
    rotary_table_bytes: int


CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")
PAST_PARAMS = ("kv", "kv_len")  # zoo attention entries' name for tokens already cached


def has_cache(record: Any) -> bool:
    """Whether the call was given a KV cache (transformers' cache keyword, not None)."""
    kwargs = record.kwargs if isinstance(record.kwargs, dict) else {}
    for name in CACHE_KWARGS:
        value = kwargs.get(name)
        if value is None:
            continue
        if getattr(value, "type", None) == "NoneType":
            continue
        return True
    return False


def past_tokens(record: Any, config: dict[str, Any], registry: Any) -> int | None:
    """Tokens cached before this call, from the call's formula parameters (`kv`/`kv_len`);
    None without a formula that binds one."""
    if registry is None:
        return None
    from formula_db.bind import make_roots
    try:
        entry = registry.find(record.formula_key)
        if entry is None or not any(p.name in PAST_PARAMS for p in entry.parameters):
            return None
        params = registry.bind(entry.key, make_roots(record.attributes, record.inputs,
                                                     record.kwargs, record.outputs, config))
    except Exception:
        return None
    for name in PAST_PARAMS:
        if isinstance(params.get(name), int):
            return int(params[name])
    return None


def attention_shapes(record: Any, past: int | None = None) -> AttentionShapes:
    """Q/O/KV sizes and token counts of an attention call, from its fenced SDPA op; `past`
    (tokens cached before the call, from the formula) fixes the new-token share when known."""
    sdpa = record.ops[SDPA_OP]
    out = _first(record.outputs)
    if out is None or len(out.shape) < 2:
        raise HardwareError(f"{record.module_path}: attention output has no (batch, seq) shape")
    itemsize = int(out.itemsize)
    o_bytes = int(sdpa.bytes_written) // max(1, sdpa.count)
    q_bytes = o_bytes
    kv_all = int(sdpa.bytes_read) // max(1, sdpa.count) - q_bytes
    new = int(out.shape[1])
    if past is not None:
        keys = past + new
    else:
        keys = round(int(sdpa.flops) // max(1, sdpa.count) * itemsize
                     / (2 * (q_bytes + o_bytes)))
    if not has_cache(record):
        kv_new = 0  # an encoder: nothing is appended
    elif past == 0:
        kv_new = kv_all
    else:
        kv_new = kv_all * min(new, keys) // keys if keys else 0
    pe = record.kwargs.get("position_embeddings") if isinstance(record.kwargs, dict) else None
    return AttentionShapes(q_bytes, o_bytes, kv_all, kv_new, new, keys,
                           _nbytes(pe) if pe is not None else 0)


def fused_attention_work(record: Any, own: Work, useful: dict[str, int] | None,
                         past: int | None = None) -> Work:
    """Rotary (if any) + in-place KV append + flash attention, replacing the call's own work."""
    a = attention_shapes(record, past)
    sdpa = record.ops[SDPA_OP]
    flops, vector = int(sdpa.flops), int(sdpa.vector_flops)
    if useful and "flops" in useful and 0 < useful["flops"] <= flops:
        # the traced convention for vector FLOPs, scaled by the fraction of scores computed
        vector = vector * useful["flops"] // flops
        flops = useful["flops"]
    read = a.q_bytes + a.kv_all_bytes + a.kv_new_bytes
    written = a.o_bytes + a.kv_new_bytes
    ops = 2 if a.kv_new_bytes else 1
    if a.rotary_table_bytes:
        k_new = a.kv_new_bytes // 2
        read += a.q_bytes + k_new + a.rotary_table_bytes
        written += a.q_bytes + k_new
        ops += 1
    return Work(int(flops) + own.flops - int(sdpa.flops),
                int(vector) + own.vector_flops - int(sdpa.vector_flops), read, written, ops)


def _affine_bytes(record: Any) -> int:
    out = _first(record.outputs)
    if out is None or not out.shape:
        return 0
    count = sum(bool(record.attributes.get(f"has_{p}")) for p in ("weight", "bias"))
    return count * int(out.shape[-1]) * int(out.itemsize)


def _io_work(record: Any, own: Work, extra_read: int = 0) -> Work:
    inputs = _nbytes(record.inputs) + _nbytes(record.kwargs)
    return Work(own.flops, own.vector_flops, inputs + extra_read, _nbytes(record.outputs), 1)


def last_logits_work(record: Any, own: Work) -> Work:
    """An output head computing the last position only: work / S, weights read once."""
    inp, out = _first(record.inputs), _first(record.outputs)
    if inp is None or out is None or len(out.shape) < 3 or int(out.shape[-2]) <= 1:
        return own
    seq = int(out.shape[-2])
    in_bytes = _nbytes(record.inputs)
    weight = max(0, own.bytes_read - in_bytes)
    return Work(own.flops // seq, own.vector_flops // seq, weight + in_bytes // seq,
                own.bytes_written // seq, own.ops)


def kernel_work(record: Any, kernels: KernelModel, logits: Logits, config: dict[str, Any],
                registry: Any = None) -> Work:
    """One call's own (pseudo-leaf) work under a kernel model."""
    own = work_of(record.self_counters, record.ops)
    category = category_of(record)
    if category == "lm_head" and logits == "last":
        own = last_logits_work(record, own)
    if kernels == "eager":
        return own
    if category == "attention":
        return fused_attention_work(record, own, useful_attention(record, config, registry),
                                    past_tokens(record, config, registry))
    if category == "norm":
        return _io_work(record, own, _affine_bytes(record))
    if category == "activation":
        return _io_work(record, own)
    if category == "rotary":
        return Work()
    return own


def kernel_calls(records: Iterable[Any], kernels: KernelModel = "fused",
                 logits: Logits | None = None, *, config: dict[str, Any] | None = None,
                 registry: Any = None) -> list[CallWork]:
    """`CallWork`s of a trace's call records under a kernel model (`logits` defaults to "last"
    for fused and "all" for eager). `registry` (default: the builtin formulas) gives the useful
    attention FLOPs; pass `False` to use the dense SDPA figures."""
    check_kernels(kernels, logits)
    logits = logits or ("last" if kernels == "fused" else "all")
    records = list(records)
    if kernels == "eager" and logits == "all":
        return calls_from_records(records)
    if registry is None:
        registry = _default_registry()
    reg = registry or None
    return [replace(call, self_work=replace(kernel_work(r, kernels, logits, config or {}, reg),
                                            calls=1))
            for r, call in zip(records, calls_from_records(records))]


@dataclass(frozen=True)
class EstimateTotals:
    """Run totals under one kernel model: matmul FLOPs, vector FLOPs, bytes, estimated time."""

    flops: int
    vector_flops: int
    bytes_read: int
    bytes_written: int
    estimate_s: float
    bound: str

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    def to_json(self) -> dict[str, Any]:
        return {"flops": self.flops, "vector_flops": self.vector_flops, "bytes": self.bytes,
                "bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
                "estimate_s": self.estimate_s, "bound": self.bound}


@dataclass(frozen=True)
class KernelEstimates:
    """`estimates` of a trace on one device under one kernel model (JSON: `estimates.kernels`,
    `estimates.total.flops`, `.bytes`, `.estimate_s`)."""

    kernels: str
    logits: str
    device: str
    dtype: str
    total: EstimateTotals
    trace_estimate: TraceEstimate

    def to_json(self) -> dict[str, Any]:
        return {"kernels": self.kernels, "logits": self.logits, "hardware": self.device,
                "dtype": self.dtype, "total": self.total.to_json()}


def estimate_kernels(trace: Any, device: Device, dtype: object, kernels: KernelModel | None = None,
                     logits: Logits | None = None, *, efficiency: Efficiency | None = None,
                     registry: Any = None) -> KernelEstimates:
    """Roofline estimate of a `tracing.Trace` under a kernel model (default: `fused` on
    accelerators, `eager` on CPUs); efficiency defaults to the device's factors for that kernel
    model (`Device.kernel_efficiency`, else `Device.efficiency`)."""
    kernels = kernels or kernel_default(device.kind)
    check_kernels(kernels, logits)
    logits = logits or ("last" if kernels == "fused" else "all")
    calls = kernel_calls(trace.calls, kernels, logits, config=getattr(trace, "config", {}),
                         registry=registry)
    outside = work_of(trace.outside, getattr(trace, "outside_ops", None))
    eff = efficiency or device.efficiency_for(kernels)
    est = estimate_calls(calls, device, dtype, outside=outside, efficiency=eff)
    total = est.total
    w = total.work
    return KernelEstimates(kernels, logits, device.name, est.dtype,
                           EstimateTotals(w.flops, w.vector_flops, w.bytes_read, w.bytes_written,
                                          total.estimate_s, total.bound), est)
