"""Per-call wall time: `time.perf_counter` on CPU, CUDA events on CUDA, nothing on meta.

A timer is started in a call's pre-hook and stopped in its post-hook; `results()` returns seconds
per call id (for CUDA after one synchronize at the end of the trace, so timing does not stall the
stream call by call).

Limits: times include the tracing overhead (hooks, dispatch-mode counting, describing arguments),
which dominates for small ops; use them to rank calls or for calibration runs, not as kernel
times. CUDA events measure the stream the calls were queued on (the current stream).

Example:
    >>> t = make_timer("cpu"); t.start(0); t.stop(0); t.results()[0] >= 0.0
    True
    >>> make_timer("meta") is None
    True
"""
from __future__ import annotations

import time
from typing import Protocol

import torch


class CallTimer(Protocol):
    def start(self, call_id: int) -> None: ...
    def stop(self, call_id: int) -> None: ...
    def results(self) -> dict[int, float]: ...


class WallTimer:
    """Host wall-clock time between pre- and post-hook."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self._elapsed: dict[int, float] = {}

    def start(self, call_id: int) -> None:
        self._started[call_id] = time.perf_counter()

    def stop(self, call_id: int) -> None:
        self._elapsed[call_id] = time.perf_counter() - self._started.pop(call_id)

    def results(self) -> dict[int, float]:
        return dict(self._elapsed)


class CudaEventTimer:
    """Device time between two CUDA events recorded on the current stream."""

    def __init__(self) -> None:
        self._events: dict[int, list[torch.cuda.Event]] = {}

    def start(self, call_id: int) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._events[call_id] = [event]

    def stop(self, call_id: int) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._events[call_id].append(event)

    def results(self) -> dict[int, float]:
        torch.cuda.synchronize()
        return {i: ev[0].elapsed_time(ev[1]) / 1000.0
                for i, ev in self._events.items() if len(ev) == 2}


def make_timer(device: str) -> CallTimer | None:
    """The timer for a device type: None on meta (nothing runs)."""
    if device == "meta":
        return None
    if device == "cuda":
        return CudaEventTimer()
    return WallTimer()
