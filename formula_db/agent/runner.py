"""The formula agent's loop: one claude-agent-sdk run, then cache only what reconciled.

`run_agent(task, registry=..., user_db=...)` starts one SDK `query` whose only tools are the
in-process MCP tools of `tools.py` (`allowed_tools` = their names; built-in tools removed with
`tools=[]` and listed in `disallowed_tools`; permission mode `dontAsk`; no MCP servers or
settings from files), with the system and user prompts of `prompt.py`. The run is bounded by
`max_turns` and `max_budget_usd` (enforced by the CLI; turns are also counted here and the run
is stopped past the limit) and by `timeout_s` of wall-clock time (enforced here).

After the run, the LAST submission to `reconcile` that passed on every recorded call is taken,
re-checked, given `validation` (status validated, source agent, today's date, torch and
transformers versions, a note) and the class's real `code_location`, and written to the user
database atomically (`formula_db.store.save_entry`: locked, temp file, fsync, os.replace).
Nothing is written when no submission passed, or when the run was cut off (SDK or CLI error,
timeout): the database file is left untouched.

Every message is appended to a JSONL transcript (first line: prompts and limits; last line: the
outcome and every submission's verdict). `AgentRun` carries the outcome, the cached entry or
the last attempt and its remaining discrepancy, the transcript path and the cost as the SDK
reports it (turns, tokens, USD) with the wall-clock seconds.

Limits: `run_agent` calls `anyio.run`, so it cannot be called from inside a running event loop
(await `run_agent_async` there). The production transport is the SDK's default (the `claude`
CLI in a subprocess); tests pass a scripted `transport`.

Example:
    >>> run = run_agent(AgentTask(class_source(ScaledGELU), calls), registry=Registry.default(),
    ...                 user_db=user_db_path())
    >>> run.outcome, run.cost_usd, run.transcript
    ('cached', 0.21, PosixPath('.../agent_transcripts/my__pkg__ScaledGELU-20260101-120000.jsonl'))
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import anyio
import torch
from claude_agent_sdk import (AssistantMessage, ClaudeAgentOptions, ResultMessage, Transport,
                              query)

from formula_db.errors import DatabaseError
from formula_db.naming import key_for
from formula_db.registry import Registry
from formula_db.schema import FormulaEntry
from formula_db.store import save_entry

from .calls import RecordedCall
from .check import check_entry
from .limits import AgentLimits
from .prompt import SYSTEM_PROMPT, user_prompt
from .source import ClassSource
from .tools import SERVER, TOOL_NAMES, ToolSession, build_server

# Claude Code's built-in tools, all refused (they are also removed with `tools=[]`).
BUILTIN_TOOLS = ("Agent", "Bash", "BashOutput", "Edit", "ExitPlanMode", "Glob", "Grep",
                 "KillShell", "LS", "MultiEdit", "NotebookEdit", "NotebookRead", "Read",
                 "SlashCommand", "Skill", "Task", "TodoWrite", "WebFetch", "WebSearch", "Write")
Outcome = Literal["cached", "not_reconciled", "error", "timeout"]


@dataclass
class AgentTask:
    """What the agent works on: the class's source and its recorded calls."""

    source: ClassSource
    calls: list[RecordedCall]
    note: str = ""  # where the calls come from

    @property
    def full_class_name(self) -> str:
        return self.source.full_class_name

    @property
    def key(self) -> str:
        return key_for(self.full_class_name)


@dataclass
class AgentRun:
    """The outcome of one run, its cost and where its transcript is."""

    full_class_name: str
    key: str
    outcome: Outcome
    transcript: Path
    user_db: Path
    started_at: datetime.datetime
    duration_s: float = 0.0
    entry: FormulaEntry | None = None
    last_attempt: str | None = None
    discrepancy: str = ""
    error: str | None = None
    submissions: int = 0
    num_turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cost_usd: float | None = None

    def report(self) -> str:
        """A few lines for the user: what happened, what it cost, where to look."""
        cost = "unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        lines = [f"formula agent, {self.full_class_name}: {self.outcome} after "
                 f"{self.submissions} reconcile submission(s), {self.num_turns or 0} turn(s), "
                 f"{self.duration_s:.1f}s, cost {cost}"]
        if self.outcome == "cached":
            lines.append(f"cached {self.key} in {self.user_db} (validation source agent)")
        if self.error:
            lines.append(f"error: {self.error}")
        if self.outcome != "cached":
            lines.append("nothing was cached")
            if self.last_attempt is not None:
                lines.append(f"last attempt: {self.last_attempt}")
                lines.append("remaining discrepancy:\n  " + (self.discrepancy or "none recorded")
                             .replace("\n", "\n  "))
            else:
                lines.append("the agent submitted no entry")
        lines.append(f"transcript: {self.transcript}")
        return "\n".join(lines)


def agent_options(server: Any, limits: AgentLimits, model: str | None = None
                  ) -> ClaudeAgentOptions:
    """SDK options: our MCP tools only, no built-ins, no settings files, bounded turns and USD."""
    return ClaudeAgentOptions(
        system_prompt=SYSTEM_PROMPT, mcp_servers={SERVER: server}, strict_mcp_config=True,
        tools=[], allowed_tools=list(TOOL_NAMES), disallowed_tools=list(BUILTIN_TOOLS),
        permission_mode="dontAsk", setting_sources=[], max_turns=limits.max_turns,
        max_budget_usd=limits.max_budget_usd, model=model)


def default_transcript_dir(user_db: Path) -> Path:
    """Transcripts live beside the user database (the user data dir by default)."""
    return user_db.parent / "agent_transcripts"


class Transcript:
    """An append-only JSONL log of one run, flushed line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self._t0 = time.monotonic()

    def write(self, event: str, **data: Any) -> None:
        line = {"t": round(time.monotonic() - self._t0, 3), "event": event, **data}
        self._fh.write(json.dumps(line, default=str) + "\n")
        self._fh.flush()

    def message(self, message: Any) -> None:
        data = dataclasses.asdict(message) if dataclasses.is_dataclass(message) else message
        self.write("message", type=type(message).__name__, message=data)

    def close(self) -> None:
        self._fh.close()


def _transcript_path(directory: Path, key: str) -> Path:
    now = datetime.datetime.now(datetime.timezone.utc)
    return directory / f"{key}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}.jsonl"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def finalize(entry: FormulaEntry, task: AgentTask, rtol: float) -> FormulaEntry:
    """The passing entry with its real code location and an agent validation record."""
    data = entry.model_dump(mode="json")
    traced = sum(c.count for c in task.calls)
    note = (f"written by the formula agent; reconciled on {len(task.calls)} distinct recorded "
            f"call(s) ({traced} traced) within rtol {rtol:g}")
    data["code_location"] = task.source.location.model_dump(mode="json")
    data["validation"] = {"status": "validated", "source": "agent",
                          "date": datetime.date.today().isoformat(),
                          "torch_version": torch.__version__,
                          "transformers_version": _version("transformers"),
                          "notes": note + (f"; calls from {task.note}" if task.note else "")}
    return FormulaEntry.model_validate(data)


def _usage(run: AgentRun, result: ResultMessage | None, partial: dict[str, int]) -> None:
    usage = (result.usage if result is not None and result.usage else partial) or {}
    run.input_tokens = usage.get("input_tokens")
    run.output_tokens = usage.get("output_tokens")
    run.cache_read_tokens = usage.get("cache_read_input_tokens")
    run.cache_creation_tokens = usage.get("cache_creation_input_tokens")
    if result is not None:
        run.cost_usd = result.total_cost_usd
        run.num_turns = result.num_turns


async def run_agent_async(task: AgentTask, *, registry: Registry, user_db: Path,
                          limits: AgentLimits = AgentLimits(),
                          transcript_dir: Path | None = None, transport: Transport | None = None,
                          model: str | None = None) -> AgentRun:
    """One agent run (see the module docstring); never raises for a failed run."""
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    session = ToolSession(task.full_class_name, task.calls, registry, limits.rtol)
    options = agent_options(build_server(session), limits, model)
    prompt = user_prompt(task.source, task.calls, registry, limits.rtol, task.note)
    log = Transcript(_transcript_path(transcript_dir or default_transcript_dir(user_db),
                                      task.key))
    run = AgentRun(task.full_class_name, task.key, "not_reconciled", log.path, user_db, started)
    log.write("start", full_class_name=task.full_class_name, key=task.key,
              limits=dataclasses.asdict(limits), allowed_tools=options.allowed_tools,
              disallowed_tools=options.disallowed_tools, system_prompt=SYSTEM_PROMPT,
              prompt=prompt)
    try:
        result, turns, partial, stopped, timed_out = await _drive(
            query(prompt=prompt, options=options, transport=transport), log, limits, run)
        _conclude(run, task, session, registry, limits, result, turns, partial, stopped,
                  timed_out)
        run.duration_s = time.monotonic() - t0
        log.write("end", outcome=run.outcome, error=run.error, cached=run.entry is not None,
                  cost_usd=run.cost_usd, num_turns=run.num_turns, duration_s=run.duration_s,
                  submissions=[{"index": s.index, "ok": s.report.ok, "stage": s.report.stage,
                                "discrepancy": s.report.discrepancy()}
                               for s in session.submissions])
    finally:
        log.close()
    return run


async def _drive(messages: Any, log: Transcript, limits: AgentLimits, run: AgentRun
                 ) -> tuple[ResultMessage | None, int, dict[str, int], str, bool]:
    """Consume the SDK's messages under the timeout; (result, turns, usage, stop, timed out).

    A turn is one assistant message id (Claude Code sends one message per content block)."""
    result: ResultMessage | None = None
    partial: dict[str, int] = {}
    seen: set[str] = set()
    turns, stopped, timed_out = 0, "", False
    try:
        with anyio.move_on_after(limits.timeout_s) as scope:
            async for message in messages:
                log.message(message)
                if isinstance(message, ResultMessage):
                    result = message
                    continue
                if not isinstance(message, AssistantMessage) or message.parent_tool_use_id:
                    continue
                if message.message_id is not None and message.message_id in seen:
                    continue
                seen.add(message.message_id or f"anonymous-{turns}")
                turns += 1
                for name, value in (message.usage or {}).items():
                    if isinstance(value, int):
                        partial[name] = partial.get(name, 0) + value
                if turns > limits.max_turns:
                    stopped = f"stopped after {limits.max_turns} turns (max_turns)"
                    break
        timed_out = scope.cancelled_caught
    except Exception as exc:  # noqa: BLE001 - any SDK/CLI/transport failure ends the run
        run.outcome, run.error = "error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    finally:
        with anyio.CancelScope(shield=True):
            await messages.aclose()
    return result, turns, partial, stopped, timed_out


def _conclude(run: AgentRun, task: AgentTask, session: ToolSession, registry: Registry,
              limits: AgentLimits, result: ResultMessage | None, turns: int,
              partial: dict[str, int], stopped: str, timed_out: bool) -> None:
    """Outcome, cost and last attempt of a finished run; caches the last passing entry."""
    if timed_out:
        run.outcome, run.error = "timeout", f"no result within {limits.timeout_s:g}s (timeout)"
    elif run.outcome != "error" and result is None and not stopped:
        run.outcome, run.error = "error", "the run ended without a result message"
    elif result is not None and result.is_error:
        run.error = f"the run ended with {result.subtype}" + (
            f": {'; '.join(result.errors)}" if result.errors else "")
    elif stopped:
        run.error = stopped
    run.num_turns = turns
    _usage(run, result, partial)
    run.submissions = len(session.submissions)
    last, passing = session.last(), session.last_passing()
    if last is not None:
        run.last_attempt, run.discrepancy = last.text, last.report.discrepancy()
    if passing is not None and run.outcome == "not_reconciled":
        _cache(run, task, passing.report.entry, registry, limits.rtol)


def _cache(run: AgentRun, task: AgentTask, entry: FormulaEntry | None, registry: Registry,
           rtol: float) -> None:
    """Finalize, re-check and save the passing entry; on any problem cache nothing."""
    if entry is None:
        return
    final = finalize(entry, task, rtol)
    text = json.dumps(final.model_dump(mode="json"))
    recheck = check_entry(text, task.full_class_name, task.calls, registry, rtol)
    if not recheck.ok:
        run.error = f"the finalized entry no longer reconciles: {recheck.discrepancy()}"
        return
    try:
        save_entry(run.user_db, final)
    except DatabaseError as exc:
        run.outcome, run.error = "error", str(exc)
        return
    run.outcome, run.entry = "cached", final
    run.discrepancy = ""


def run_agent(task: AgentTask, *, registry: Registry, user_db: Path,
              limits: AgentLimits = AgentLimits(), transcript_dir: Path | None = None,
              transport: Transport | None = None, model: str | None = None) -> AgentRun:
    """Synchronous `run_agent_async` (starts its own event loop)."""
    return anyio.run(functools.partial(run_agent_async, task, registry=registry,
                                       user_db=user_db, limits=limits,
                                       transcript_dir=transcript_dir, transport=transport,
                                       model=model))
