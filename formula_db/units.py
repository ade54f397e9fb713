"""The project's one vocabulary for metric names and dtypes, imported by every layer.

Metrics: `METRICS` are the five per-call metrics (formula templates, trace records, reconciled
results and the DuckDB columns all use these names); `COUNTER_METRICS` are the four counted per
aten op (activation memory is a property of a call, not of an op).

Dtypes have one canonical name (torch's: `float32`, `bfloat16`, `float16`, ...) and one short
name (`fp32`, `bf16`, `fp16`, ...: the hardware catalog's peak keys). `dtype_info` accepts either
spelling (and `torch.float32`, `half`, ...) and returns a `DTypeInfo`; nothing here imports torch.

Example:
    >>> dtype_info("bf16").name, dtype_info("torch.float16").short, dtype_info("float32").itemsize
    ('bfloat16', 'fp16', 4)
"""
from __future__ import annotations

from dataclasses import dataclass

METRICS: tuple[str, ...] = ("flops", "vector_flops", "bytes_read", "bytes_written",
                            "activation_bytes")
COUNTER_METRICS: tuple[str, ...] = METRICS[:4]


@dataclass(frozen=True)
class DTypeInfo:
    """One dtype: canonical (torch) name, short (catalog) name, bytes per element."""

    name: str
    short: str
    itemsize: float  # 0.5 for int4


DTYPES: dict[str, DTypeInfo] = {d.name: d for d in (
    DTypeInfo("float64", "fp64", 8), DTypeInfo("float32", "fp32", 4),
    DTypeInfo("tfloat32", "tf32", 4), DTypeInfo("bfloat16", "bf16", 2),
    DTypeInfo("float16", "fp16", 2), DTypeInfo("float8_e4m3fn", "fp8", 1),
    DTypeInfo("int8", "int8", 1), DTypeInfo("int4", "int4", 0.5))}
# the floating-point dtypes a model can be built and traced in
MODEL_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
_ALIASES: dict[str, str] = {
    "double": "float64", "f64": "float64", "float": "float32", "f32": "float32",
    "tf32": "tfloat32", "half": "float16", "f16": "float16", "float8": "float8_e4m3fn",
    "float8_e5m2": "float8_e4m3fn", "qint8": "int8",
}


class UnknownDTypeError(ValueError):
    """A dtype spelling nobody knows; the message lists the known ones."""


def dtype_info(dtype: object) -> DTypeInfo:
    """The `DTypeInfo` of any spelling: 'float32', 'fp32', 'torch.float32', 'half', ..."""
    text = str(dtype).strip().lower().removeprefix("torch.")
    for info in DTYPES.values():
        if text in (info.name, info.short):
            return info
    if text in _ALIASES:
        return DTYPES[_ALIASES[text]]
    known = ", ".join(f"{d.name} ({d.short})" for d in DTYPES.values())
    raise UnknownDTypeError(f"unknown dtype {dtype!r}; use one of {known}")


def config_dtype_name(config: object) -> str:
    """The model dtype a config asks for (`dtype` / `torch_dtype`, as a transformers config or
    its JSON dict holds it), when it is one of MODEL_DTYPES; float32 otherwise."""
    for name in ("dtype", "torch_dtype"):
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        text = str(value or "").strip().lower().removeprefix("torch.")
        if text in MODEL_DTYPES:
            return text
    return "float32"


def itemsize(dtype: object) -> float:
    """Bytes per element of a dtype in any spelling."""
    return dtype_info(dtype).itemsize
