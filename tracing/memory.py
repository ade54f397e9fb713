"""Activation memory: lifetimes of the tensor storages created while a trace is active.

Every op output whose untyped storage is new (not a storage of one of the op's inputs, not a
weight/buffer, not already tracked) is registered with its `nbytes()` and the id of the module
call that created it (-1 outside any call). A `weakref.finalize` on the storage subtracts it when
the last tensor or view using it dies. Storages are keyed by identity (`_cdata`), so views are
counted once; `nbytes()` is exact on `meta` too, so meta and CPU agree.

Definitions (per module call, bytes):
- live: sum of nbytes of tracked storages alive now (only storages created during the trace).
- activation_bytes: live bytes, at the moment the call returns, of storages created by this call
  or its descendants (its outputs and anything it kept, e.g. a KV cache).
- peak_activation_bytes: max(live during the call, entry included) - live at call entry.
- Trace.peak_activation_bytes: max live over the whole trace (live is 0 when the trace starts).
Inputs made before the trace, parameters and buffers are never counted.

Limits: only dispatched outputs are seen; scratch memory allocated inside a kernel (and inside a
fenced attention call, see `tracing.attention`) is invisible; allocator caching and fragmentation
are not modelled; storages resized in place keep their first size.

Example:
    >>> import torch
    >>> m = StorageTracker()
    >>> x = torch.zeros(4, 8)
    >>> m.note_outputs([x], set(), creator=-1); m.live
    128
    >>> del x; m.live
    0
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import torch


def storage_key(t: torch.Tensor) -> int | None:
    """Identity of a tensor's storage, None for tensors without one (sparse, nested, ...)."""
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, TypeError):
        return None


@dataclass
class _Frame:
    call_id: int
    entry_live: int
    peak: int


class StorageTracker:
    """Tracks live bytes of storages created during a trace, and per-call peaks."""

    def __init__(self, exclude: Iterable[int] = ()) -> None:
        self.live = 0
        self.peak = 0
        self._exclude = set(exclude)
        self._finalizers: dict[int, weakref.finalize] = {}
        self._live_by_creator: dict[int, int] = {}
        self._frames: list[_Frame] = []

    def note_outputs(self, outputs: list[torch.Tensor], input_keys: set[int], creator: int) -> None:
        """Register the storages of an op's outputs that the op created."""
        for t in outputs:
            key = storage_key(t)
            if key is None or key in input_keys or key in self._exclude or key in self._finalizers:
                continue
            storage = t.untyped_storage()
            nbytes = storage.nbytes()
            self._finalizers[key] = weakref.finalize(storage, self._release, key, nbytes, creator)
            self.live += nbytes
            self._live_by_creator[creator] = self._live_by_creator.get(creator, 0) + nbytes
            self.peak = max(self.peak, self.live)
            if self._frames:
                self._frames[-1].peak = max(self._frames[-1].peak, self.live)

    def _release(self, key: int, nbytes: int, creator: int) -> None:
        self._finalizers.pop(key, None)
        self.live -= nbytes
        self._live_by_creator[creator] -= nbytes

    def enter(self, call_id: int) -> None:
        self._frames.append(_Frame(call_id, self.live, self.live))

    def exit(self, call_id: int) -> tuple[int, int]:
        """Close a call's frame; returns (activation_bytes, peak_activation_bytes)."""
        frame = self._frames.pop()
        if frame.call_id != call_id:
            raise RuntimeError(f"call {call_id} exited while call {frame.call_id} was innermost")
        if self._frames:
            self._frames[-1].peak = max(self._frames[-1].peak, frame.peak)
        kept = sum(b for creator, b in self._live_by_creator.items() if creator >= call_id)
        return kept, frame.peak - frame.entry_live

    def close(self) -> None:
        """Stop watching storages (they may outlive the trace)."""
        for finalizer in list(self._finalizers.values()):
            finalizer.detach()
        self._finalizers.clear()
