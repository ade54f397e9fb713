"""File-store primitives shared by the formula database and the device catalog.

`locked(path)` holds a `filelock` lock beside a file for a read-modify-write; `write_atomic`
writes through a temporary file in the same directory, fsyncs it and `os.replace`s it over the
target, so a reader sees the old file or the new one, never a truncated one (a `kill -9` of the
writer leaves the old file). `LockTimeout` is raised when another writer holds the lock too long;
callers turn it into their own one-line error.

Example:
    >>> with locked(path):
    ...     write_atomic(path, text)
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_TIMEOUT_S = 30.0


class LockTimeout(Exception):
    """Another process held the file's lock longer than the timeout."""


@contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `<path>.lock` (the parent folder must exist); `LockTimeout` after `timeout` s."""
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(path) + ".lock", timeout=timeout):
            yield
    except Timeout:
        raise LockTimeout(f"{path} is locked by another process for more than {timeout:g}s; "
                          f"retry, or remove {path}.lock if no writer is running") from None


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a fsynced temporary file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
