"""The agent's parts without the SDK: source location, class look-up, credentials, call merging,
the tools as plain functions."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from formula_db.agent.auth import HOW_TO, credentials_problem
from formula_db.agent.calls import distinct
from formula_db.agent.source import class_source, find_class
from formula_db.agent.tools import ToolSession
from formula_db.registry import Registry
from lm_predictor import agent as agent_cmd

from . import scenario


class Inherits(scenario.ScaledGELU):
    """A subclass that keeps the parent's forward."""


def test_source_location_and_inherited_forward() -> None:
    src = class_source(Inherits)
    assert src.full_class_name == "tests.agent.test_parts.Inherits"
    assert src.location.file == "tests/agent/test_parts.py"
    assert "forward inherited from tests.agent.scenario.ScaledGELU" in src.text
    assert "return F.gelu(self.proj(x)) * self.scale" in src.text
    torch_src = class_source(torch.nn.Linear)
    assert torch_src.full_class_name == "torch.nn.Linear"
    assert torch_src.location.file == "torch/nn/modules/linear.py"
    assert "F.linear(input, self.weight, self.bias)" in torch_src.text


def test_find_class_never_imports() -> None:
    assert find_class("torch.nn.modules.linear.Linear") is torch.nn.Linear
    assert find_class(scenario.FULL_NAME) is scenario.ScaledGELU
    assert "antigravity" not in sys.modules
    assert find_class("antigravity.Anything") is None and "antigravity" not in sys.modules
    assert find_class("torch.nn.Linear.__class__") is None
    assert find_class("os.path") is None  # not a class


def test_credentials(tmp_path: Path) -> None:
    empty = {"PATH": str(tmp_path), "CLAUDE_CONFIG_DIR": str(tmp_path / "cfg")}
    assert credentials_problem(empty) == HOW_TO
    assert credentials_problem({**empty, "ANTHROPIC_API_KEY": "sk-test"}) is None
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / ".credentials.json").write_text("{}")
    assert credentials_problem(empty) is None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text("#!/bin/sh\n")
    (bin_dir / "claude").chmod(0o755)
    assert credentials_problem({"PATH": str(bin_dir),
                                "CLAUDE_CONFIG_DIR": str(tmp_path / "none")}) is None


def test_distinct_merges_identical_calls(gelu_traces: list[Any]) -> None:
    registry = Registry.default(include_user=False)
    calls = agent_cmd.recorded_calls(gelu_traces + gelu_traces, scenario.FULL_NAME, registry)
    assert [c.count for c in calls] == [2, 2]
    merged = distinct([dataclasses.replace(calls[0], module_path="other")] + calls, limit=1)
    assert len(merged) == 1 and merged[0].count == 4 and merged[0].module_path == "other"
    child = calls[0].children[0]
    assert (child.class_name, child.has_formula) == ("torch.nn.Linear", True)
    assert calls[0].ops["aten.addmm"]["flops"] == calls[0].measured["flops"]


def test_tools_as_plain_functions(gelu_traces: list[Any]) -> None:
    registry = Registry.default(include_user=False)
    calls = agent_cmd.recorded_calls(gelu_traces, scenario.FULL_NAME, registry)
    session = ToolSession(scenario.FULL_NAME, calls, registry)
    text, is_error = session.read_source("not.imported.Module")
    assert is_error and "no imported class" in text
    text, is_error = session.get_formula("torch.nn.Linear")
    assert not is_error and json.loads(text)["full_class_name"] == "torch.nn.Linear"
    assert session.get_formula("nope")[1]
    rows = json.loads(session.list_formulas()[0])
    linear = next(r for r in rows if r["key"] == "torch__nn__Linear")
    assert linear["signature"].startswith("{torch__nn__Linear}(rows: int")
    text, is_error = session.reconcile(scenario.text(scenario.FORGETS_GELU))
    assert is_error and not json.loads(text)["ok"]
    text, is_error = session.reconcile(scenario.text(scenario.GOOD))
    assert not is_error and json.loads(text)["ok"]
    assert session.last_passing() is session.submissions[-1]
    session.max_submissions = len(session.submissions)
    text, is_error = session.reconcile(scenario.text(scenario.GOOD))
    assert is_error and "submission limit" in text
