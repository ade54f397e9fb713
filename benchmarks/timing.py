"""Shared timing helper of the benchmark scripts: median wall time of repeated calls."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], repeats: int, warmup: bool = False) -> float:
    """Median seconds of `repeats` calls of `fn` (after one untimed call if `warmup`)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
