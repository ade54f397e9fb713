"""Plain-data descriptions of call arguments: the only place tensors are turned into metadata.

A traced call's inputs, outputs and keyword arguments are stored as `TensorMeta` (shape, dtype,
device, itemsize) or as `ValueSummary` (a short, JSON-safe summary of a non-tensor value; a
transformers KV cache is summarised with its current length as `value`, so binds can read the
cache length as `kwargs.cache.value`). Formula
binds (`input[0].shape[-1]`, `itemsize(output)`) read these records, never live tensors, so the
same bind works on a trace stored in DuckDB, on `meta` and on a real device.

Example:
    >>> import torch
    >>> describe(torch.zeros(2, 3, dtype=torch.float16))
    TensorMeta(shape=(2, 3), dtype='float16', device='cpu', itemsize=2)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import torch

Scalar = Union[int, float, bool, str, None]


@dataclass(frozen=True)
class TensorMeta:
    """Shape, dtype, device and element size of one tensor; `strides` only for a
    non-contiguous tensor (None: contiguous), since aten copies or reroutes such inputs."""

    shape: tuple[int, ...]
    dtype: str
    device: str
    itemsize: int
    strides: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def contiguous(self) -> bool:
        return self.strides is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype,
                               "device": self.device, "itemsize": self.itemsize}
        if self.strides is not None:
            out["strides"] = list(self.strides)
        return out

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "TensorMeta":
        strides = None if t.is_contiguous() else tuple(int(x) for x in t.stride())
        return cls(tuple(int(s) for s in t.shape), str(t.dtype).removeprefix("torch."),
                   t.device.type, t.element_size(), strides)


def merges(t: TensorMeta, n: int) -> bool:
    """The first `n` dimensions of `t` merge into one by a view, no copy (size-1 dimensions
    ignored, as `view` does)."""
    if t.strides is None or n <= 1:
        return True
    dims = [(size, st) for size, st in zip(t.shape[:n], t.strides[:n]) if size != 1]
    return all(a[1] == b[1] * b[0] for a, b in zip(dims, dims[1:]))


def rows_view(t: TensorMeta) -> bool:
    """`t.view(-1, t.shape[-1])` needs no copy."""
    return merges(t, t.ndim - 1)


@dataclass(frozen=True)
class ValueSummary:
    """A non-tensor argument: its Python type and a scalar value when it has one."""

    type: str
    value: Scalar = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value}


Described = Union[TensorMeta, ValueSummary, tuple["Described", ...]]


def describe(value: Any, _depth: int = 0) -> Described:
    """Turn one argument into metadata: tensors to TensorMeta, tuples/lists element-wise
    (two levels deep), plain scalars kept, everything else summarised by its type name."""
    import torch  # only called on live values, so torch is already loaded

    if isinstance(value, torch.Tensor):
        return TensorMeta.from_tensor(value)
    if isinstance(value, (tuple, list)) and _depth < 2:
        return tuple(describe(v, _depth + 1) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return ValueSummary(type(value).__name__, value)
    if isinstance(value, torch.dtype):
        return ValueSummary("dtype", str(value).removeprefix("torch."))
    if isinstance(value, (torch.Size,)):
        return ValueSummary("Size", str(tuple(value)))
    seq_length = getattr(value, "get_seq_length", None)
    if callable(seq_length):  # a transformers KV cache: its current length (tokens cached)
        try:
            return ValueSummary(type(value).__qualname__, int(seq_length()))
        except Exception:  # noqa: BLE001 - a cache that cannot tell is summarised by type
            pass
    return ValueSummary(type(value).__qualname__)


def flat_tensors(value: Described) -> list[TensorMeta]:
    """All TensorMeta inside a described value, in order."""
    if isinstance(value, TensorMeta):
        return [value]
    if isinstance(value, tuple):
        return [t for v in value for t in flat_tensors(v)]
    return []
