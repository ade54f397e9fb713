"""Every hardware test reads and writes user devices in its own temporary file, never the real
user data directory."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def user_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "devices.json"
    monkeypatch.setenv("LM_PREDICTOR_DEVICES", str(path))
    return path
