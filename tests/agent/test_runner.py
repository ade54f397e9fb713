"""The agent loop through the real SDK and a scripted CLI: cache only what reconciles.

Scenario: `scenario.ScaledGELU`, a custom module with no formula, traced on CPU at two shapes.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from claude_agent_sdk import CLIConnectionError, CLINotFoundError
from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport

from formula_db.agent.limits import AgentLimits
from formula_db.agent.prompt import SYSTEM_PROMPT
from formula_db.agent.runner import AgentRun, agent_options, run_agent
from formula_db.agent.tools import TOOL_NAMES, ToolSession, build_server
from formula_db.registry import Registry
from formula_db.schema import FormulaEntry
from formula_db.store import load_database, save_entry
from lm_predictor import agent as agent_cmd
from lm_predictor.cli import main
from lm_predictor.reconcile import reconcile

from . import scenario
from .scripted import Ask, Call, Fail, Hang, Say, ScriptedTransport

KEY = "tests__agent__scenario__ScaledGELU"


def task_and_registry(traces: list[Any], user_db: Path) -> tuple[Any, Registry]:
    registry = Registry.default(user_db)
    return agent_cmd.make_task(traces, scenario.FULL_NAME, registry, note="test"), registry


def go(traces: list[Any], user_db: Path, steps: list[Any], limits: AgentLimits = AgentLimits(),
       **transport: Any) -> tuple[AgentRun, ScriptedTransport]:
    task, registry = task_and_registry(traces, user_db)
    t = ScriptedTransport(steps, **transport)
    run = run_agent(task, registry=registry, user_db=user_db, limits=limits, transport=t)
    return run, t


def reports(t: ScriptedTransport) -> list[dict[str, Any]]:
    return [json.loads(r["content"][0]["text"]) for r in t.tool_results
            if r["content"][0]["text"].startswith("{")]


def test_fails_once_corrects_itself_and_is_cached(isolated: Path, gelu_traces: list[Any],
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    user_db = isolated / "formulas.json"
    run, t = go(gelu_traces, user_db, [
        Call("read_source", {"class_name": scenario.FULL_NAME}),
        Call("get_formula", {"key": "torch__nn__Linear"}),
        Call("reconcile", {"entry_json": scenario.text(scenario.FORGETS_GELU)}),
        Say("vector_flops misses one element-wise op per output: the gelu. Fixing."),
        Call("reconcile", {"entry_json": scenario.text(scenario.GOOD)}),
        Say("Reconciled on every call.")])
    assert t.tools == ["read_source", "list_formulas", "get_formula", "reconcile"]
    assert "F.gelu(self.proj(x)) * self.scale" in t.tool_results[0]["content"][0]["text"]
    first, second = reports(t)[1:]
    # the failed attempt: per metric and per op, predicted vs measured
    assert not first["ok"] and first["failed_stage"] == "evaluate"
    call0 = first["calls"][0]["metrics"]
    assert call0["vector_flops"] == {"predicted": 192, "measured": 288, "rel_error": 1 / 3}
    assert call0["flops"]["predicted"] == call0["flops"]["measured"] == 1536
    gelu = next(op for op in first["calls"][0]["ops"] if op["op"] == "aten.gelu")
    assert gelu["measured"]["vector_flops"] == 96 and gelu["predicted"] == {"vector_flops": 96}
    assert t.tool_results[2]["isError"] is True
    assert second["ok"] and second["calls_passed"] == second["calls_total"] == 2

    assert run.outcome == "cached" and run.submissions == 2 and run.error is None
    assert run.cost_usd == pytest.approx(0.0123) and run.input_tokens == 1200
    assert run.output_tokens == 340 and run.num_turns == 6
    entry = load_database(user_db).entries[KEY]
    v = entry.validation
    assert (v.status, v.source, v.date) == ("validated", "agent", datetime.date.today())
    assert v.torch_version == torch.__version__ and "2 distinct recorded call(s)" in v.notes
    loc = entry.code_location
    assert loc is not None and loc.file == "tests/agent/scenario.py"
    assert loc.start_line is not None and loc.end_line is not None and loc.start_line < loc.end_line
    # the cached entry reconciles exactly with the traces it was written from
    registry = Registry.default(user_db)
    for trace in gelu_traces:
        root = reconcile(trace, registry).calls[0]
        assert root.formula_key == KEY and root.status == "exact"
    # transcript: JSONL, prompts first, outcome last
    lines = [json.loads(line) for line in run.transcript.read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["system_prompt"] == SYSTEM_PROMPT
    assert lines[-1]["event"] == "end" and lines[-1]["outcome"] == "cached"
    assert [s["ok"] for s in lines[-1]["submissions"]] == [False, True]
    assert {line.get("type") for line in lines} >= {"AssistantMessage", "UserMessage",
                                                   "ResultMessage"}
    # a second look-up is a cache hit: the agent does not run
    calls: list[Any] = []
    monkeypatch.setattr(agent_cmd, "transport_factory", lambda task: calls.append(task))
    code = main(["module", scenario.FULL_NAME])
    out, err = capsys.readouterr()
    assert code == 0 and calls == [] and err == ""
    assert KEY in out and "source agent" in out and "tests/agent/scenario.py" in out


def test_never_reconciles_caches_nothing(isolated: Path, gelu_traces: list[Any]) -> None:
    user_db = isolated / "formulas.json"
    run, t = go(gelu_traces, user_db, [
        Call("reconcile", {"entry_json": scenario.text(scenario.FORGETS_GELU)}),
        Call("reconcile", {"entry_json": scenario.text(scenario.FORGETS_GELU)}),
        Say("I cannot find the missing work.")])
    assert run.outcome == "not_reconciled" and run.entry is None and run.submissions == 2
    assert not user_db.exists()
    assert run.last_attempt == scenario.text(scenario.FORGETS_GELU)
    assert "vector_flops predicted 192, measured 288 (rel 0.333)" in run.discrepancy
    text = run.report()
    assert "nothing was cached" in text and "last attempt:" in text
    assert "remaining discrepancy" in text and str(run.transcript) in text
    assert run.transcript.exists()


def test_hostile_and_malformed_entries_are_refused(isolated: Path,
                                                   gelu_traces: list[Any]) -> None:
    def variant(**changes: Any) -> str:
        return scenario.text({**scenario.GOOD, **changes})

    user_db = isolated / "formulas.json"
    hostile = [
        "{not json",
        "[1, 2]",
        variant(flops="__import__('os').system('echo pwned')"),
        variant(flops="${rows}.__class__"),
        variant(vector_flops="exec(${rows})"),
        variant(parameters=[{"name": "rows", "type": "int", "description": "x",
                             "bind": "module.__dict__"}] + scenario.GOOD["parameters"][1:]),
        variant(full_class_name="torch.nn.Linear"),
        variant(flops="{os__system}(1)", module_depends=["os__system", "torch__nn__Linear"]),
        variant(flops="2 ** 100000"),
        variant(extra_field=1),
        # passes on the recorded (small) calls, but gives a string at a bigger shape
        variant(flops="${rows} > 30720 ? 'x' : " + scenario.GOOD["flops"]),
    ]
    run, t = go(gelu_traces, user_db, [Call("reconcile", {"entry_json": h}) for h in hostile]
                + [Ask("Bash", {"command": "rm -rf /"}), Say("giving up")])
    stages = [r["failed_stage"] for r in reports(t)]
    assert stages == ["json", "json", "schema", "schema", "schema", "schema", "target",
                      "registry", "schema", "schema", "schema"]
    assert all(r["isError"] for r in t.tool_results)
    errors = [r["error"] or r["calls"][0]["error"] for r in reports(t)]
    assert "__import__" in errors[2] or "not allowed" in errors[2] or "unknown" in errors[2]
    assert "exponent" in errors[8] or "bits" in errors[8]   # a constant: evaluated at load
    assert "must give a number on every branch; this gives a string" in errors[10]
    # a built-in tool asked for is refused by the SDK (no permission is ever granted)
    assert t.permission_answers[0]["subtype"] == "error"
    assert run.outcome == "not_reconciled" and not user_db.exists()


def test_sdk_error_and_timeout_leave_the_database_untouched(isolated: Path,
                                                            gelu_traces: list[Any]) -> None:
    user_db = isolated / "formulas.json"
    other = FormulaEntry.model_validate({**scenario.GOOD, "full_class_name": "other.Block",
                                         "module_depends": ["torch__nn__Linear"]})
    save_entry(user_db, other)
    before = user_db.read_bytes()
    good = Call("reconcile", {"entry_json": scenario.text(scenario.GOOD)})
    bad = Call("reconcile", {"entry_json": scenario.text(scenario.FORGETS_GELU)})

    run, _ = go(gelu_traces, user_db, [bad, Fail(CLIConnectionError("CLI process crashed"))])
    assert run.outcome == "error" and "CLIConnectionError: CLI process crashed" in run.error
    assert run.last_attempt is not None and "vector_flops" in run.discrepancy
    # even a passing entry is not cached from a run that was cut off
    run, _ = go(gelu_traces, user_db, [good, Fail(CLIConnectionError("CLI process crashed"))])
    assert run.outcome == "error" and run.entry is None
    run, _ = go(gelu_traces, user_db, [good],
                connect_error=CLINotFoundError("Claude Code not found"))
    assert run.outcome == "error" and "CLINotFoundError" in run.error and run.submissions == 0

    run, t = go(gelu_traces, user_db, [good, Hang()], AgentLimits(timeout_s=0.5))
    assert run.outcome == "timeout" and run.entry is None and run.duration_s < 15
    assert t.closed and "timeout" in run.report()
    assert json.loads(run.transcript.read_text().splitlines()[-1])["outcome"] == "timeout"
    assert user_db.read_bytes() == before


def test_turn_limit_is_enforced_here_too(isolated: Path, gelu_traces: list[Any]) -> None:
    user_db = isolated / "formulas.json"
    run, t = go(gelu_traces, user_db, [Say("thinking")] * 5 + [
        Call("reconcile", {"entry_json": scenario.text(scenario.GOOD)})],
        AgentLimits(max_turns=3))
    assert run.outcome == "not_reconciled" and run.submissions == 0
    assert "max_turns" in (run.error or "") and not user_db.exists()


def test_prompt_carries_source_schema_formulas_and_recorded_calls(
        isolated: Path, gelu_traces: list[Any]) -> None:
    run, t = go(gelu_traces, isolated / "formulas.json", [Say("nothing to do")])
    prompt = t.prompt
    assert isinstance(prompt, str)
    # the real source, located
    assert "class ScaledGELU(nn.Module):" in prompt
    assert "return F.gelu(self.proj(x)) * self.scale" in prompt
    assert "self.proj = nn.Linear(d_in, d_out)" in prompt
    assert "tests/agent/scenario.py, lines" in prompt
    # formulas it may call, with signatures, the child's first
    assert "{torch__nn__Linear}(rows: int, in_features: int, out_features: int" in prompt
    assert "<- called by the recorded calls" in prompt
    # the schema
    assert '"full_class_name"' in prompt and '"module_depends"' in prompt
    # the recorded calls: shapes, attributes, measured values and per-op counts
    calls = [json.loads(line) for line in prompt.splitlines() if line.startswith('{"module_path"')]
    assert [c["inputs"][0]["shape"] for c in calls] == [[2, 3, 8], [1, 5, 8]]
    assert [c["output"]["shape"] for c in calls] == [[2, 3, 16], [1, 5, 16]]
    assert [c["measured"]["flops"] for c in calls] == [1536, 1280]
    assert [c["measured"]["vector_flops"] for c in calls] == [288, 240]
    assert calls[0]["attributes"]["scale"] == 0.5
    assert calls[0]["ops"]["aten.gelu"]["count"] == 1
    assert calls[0]["ops"]["aten.addmm"]["flops"] == 1536
    assert calls[0]["children"][0]["formula_key"] == "torch__nn__Linear"
    assert run.outcome == "not_reconciled" and "no entry" in run.report()


def test_production_command_line_allows_only_the_mcp_tools() -> None:
    """What the default transport (the `claude` CLI, not run here) would be started with."""
    session = ToolSession("x.Y", [], Registry.from_entries([]))
    options = agent_options(build_server(session), AgentLimits(max_turns=7, max_budget_usd=0.5))
    options = dataclasses.replace(options, cli_path="/nonexistent/claude")
    cmd = SubprocessCLITransport(prompt="p", options=options)._build_command()

    def value(flag: str) -> str:
        return cmd[cmd.index(flag) + 1]

    assert value("--tools") == ""
    assert value("--allowedTools").split(",") == list(TOOL_NAMES)
    refused = value("--disallowedTools").split(",")
    assert {"Bash", "Write", "Edit", "Read", "WebFetch", "WebSearch", "Task"} <= set(refused)
    assert value("--permission-mode") == "dontAsk"
    assert value("--max-turns") == "7" and value("--max-budget-usd") == "0.5"
    assert "--strict-mcp-config" in cmd and "--setting-sources=" in cmd
    servers = json.loads(value("--mcp-config"))["mcpServers"]
    assert servers == {"lmp": {"type": "sdk", "name": "lmp"}}
    assert value("--system-prompt") == SYSTEM_PROMPT


def test_fill_gaps_on_a_custom_module_trace(isolated: Path, gelu_traces: list[Any],
                                           scripted: Any) -> None:
    """The Python path for a module no model id names: trace it, then `fill_gaps`."""
    factory = scripted(lambda task: [
        Call("reconcile", {"entry_json": scenario.text(scenario.GOOD)}), Say("done")])
    trace = gelu_traces[0]
    registry = Registry.default()
    assert reconcile(trace, registry).uncovered_classes == {scenario.FULL_NAME: 1}
    report = agent_cmd.fill_gaps(trace, registry, db=isolated / "runs.duckdb")
    assert [t.full_class_name for t in factory.tasks] == [scenario.FULL_NAME]
    assert [r.outcome for r in report.runs] == ["cached"]
    assert reconcile(trace, report.registry).uncovered_classes == {}
    assert "cached" in report.notes[0]
