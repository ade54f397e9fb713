"""Fixtures for the formula-agent tests: isolated databases, no credentials, scripted transports.

No test here reaches the network or needs a key: every SDK run goes through
`tests.agent.scripted.ScriptedTransport`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from formula_db import registry as registry_module
from formula_db.agent.auth import ENV_KEYS
from lm_predictor import agent as agent_cmd

from . import scenario
from .scripted import ScriptedTransport, Step


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """User formula DB, run DB and transcripts under tmp_path; no Claude credentials; the
    builtin layer holds torch.nn only (so transformers classes stay uncovered)."""
    monkeypatch.setenv("LM_PREDICTOR_FORMULAS", str(tmp_path / "formulas.json"))
    monkeypatch.setenv("LM_PREDICTOR_DB", str(tmp_path / "runs.duckdb"))
    monkeypatch.setenv("COLUMNS", "250")
    for name in ENV_KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(registry_module, "builtin_paths", lambda: [registry_module.BUILTIN_PATH])
    monkeypatch.setattr(agent_cmd, "transport_factory", None)
    return tmp_path


@pytest.fixture(scope="session")
def gelu_traces() -> list[Any]:
    return scenario.traces()


class Factory:
    """A `transport_factory`: one scripted transport per agent run, scripts chosen by class."""

    def __init__(self, script: Callable[[Any], list[Step]]) -> None:
        self.script = script
        self.tasks: list[Any] = []
        self.transports: list[ScriptedTransport] = []

    def __call__(self, task: Any) -> ScriptedTransport:
        self.tasks.append(task)
        transport = ScriptedTransport(self.script(task))
        self.transports.append(transport)
        return transport


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[Any], list[Step]]], Factory]:
    """Install a scripted transport factory in `agent_cmd` (this also stands for credentials)."""
    def install(script: Callable[[Any], list[Step]]) -> Factory:
        factory = Factory(script)
        monkeypatch.setattr(agent_cmd, "transport_factory", factory)
        return factory
    return install
