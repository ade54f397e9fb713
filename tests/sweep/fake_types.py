"""Stand-in model types for the sweep tests: one that hangs, one whose worker dies."""
from __future__ import annotations

import os
import time
from typing import Any


def hang(spec: Any, shape: Any) -> Any:
    time.sleep(3600)


def crash(spec: Any, shape: Any) -> Any:
    os._exit(3)  # as a segfault or the OOM killer would: no exception, no result
