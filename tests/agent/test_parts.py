"""The agent's parts without the SDK: source location, class look-up, credentials, call merging,
the tools as plain functions."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
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
    assert session.packages == {"tests", "torch"}  # the target's, its children's, torch
    text, is_error = session.read_source("not.imported.Module")
    assert is_error and "outside the traced model's packages (tests, torch)" in text
    text, is_error = session.read_source(scenario.FULL_NAME)
    assert not is_error and "return F.gelu(self.proj(x)) * self.scale" in text
    text, is_error = session.read_source("tests.agent.scenario.Nope")
    assert is_error and "no class 'tests.agent.scenario.Nope' found" in text
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


PKG_INIT = "raise RuntimeError('hostpkg was imported')\n"
PKG_MOD = '''"""A module that must never be imported by read_source."""
import pathlib
pathlib.Path(__file__).with_name("EXECUTED").write_text("yes")


class Outer:
    class Block(Base):
        """A block."""

        def __init__(self, n):
            self.n = n

        @staticmethod
        def forward(x):
            return x * 2
'''


def test_read_source_reads_files_without_importing(tmp_path: Path,
                                                   monkeypatch: Any) -> None:
    from formula_db.agent.source import SourceError, read_class

    pkg = tmp_path / "hostpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(PKG_INIT)
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text(PKG_MOD)
    outside = tmp_path / "outside.py"
    outside.write_text("class Secret:\n    def forward(self):\n        return 'key'\n")
    (pkg / "link.py").symlink_to(outside)
    monkeypatch.syspath_prepend(str(tmp_path))
    src = read_class("hostpkg.sub.mod.Outer.Block", {"hostpkg"})
    assert "def __init__(self, n):" in src.text and "return x * 2" in src.text
    assert "@staticmethod" in src.text and '"""A block."""' in src.text
    assert (src.location.file, src.location.start_line, src.location.end_line) == \
        ("hostpkg/sub/mod.py", 7, 15)
    # nothing ran: neither the package's __init__ nor the module's top level
    assert "hostpkg" not in sys.modules and "hostpkg.sub.mod" not in sys.modules
    assert not (pkg / "sub" / "EXECUTED").exists()
    src = read_class("hostpkg.sub.mod.Outer", {"hostpkg"})
    assert "forward is not defined here: inherited from a base (object)" in src.text
    with pytest.raises(SourceError, match="no class 'hostpkg.link.Secret' found"):
        read_class("hostpkg.link.Secret", {"hostpkg"})   # resolves outside the package
    with pytest.raises(SourceError, match="outside the traced model's packages"):
        read_class("os.Secret", {"hostpkg"})
    with pytest.raises(SourceError, match="not a dotted class name"):
        read_class("hostpkg.sub.mod.Outer.__class__", {"hostpkg"})


def test_read_source_does_not_trigger_transformers_lazy_imports() -> None:
    code = ("import sys, transformers\n"
            "from formula_db.agent.source import read_class\n"
            "name = 'transformers.models.llama.modeling_llama'\n"
            "assert name not in sys.modules\n"
            "src = read_class(name + '.LlamaMLP', {'transformers', 'torch'})\n"
            "assert 'self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))' in src.text\n"
            "assert src.location.file == 'transformers/models/llama/modeling_llama.py'\n"
            "assert name not in sys.modules, 'imported'\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
