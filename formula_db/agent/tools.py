"""The agent's tools: an in-process MCP server (claude-agent-sdk) over one `ToolSession`.

Four tools, all read-only except that `reconcile` records what was submitted:
- `read_source(class_name)`: header, `__init__` and `forward` of a class of the traced model's
  packages (`ToolSession.packages`: the target's and its children's top-level packages, and
  torch), read from the imported class or else from its file on disk (`source.read_class`:
  nothing is imported on the agent's behalf, names outside those packages are refused);
- `list_formulas()`: every key in the registry with its class, kind, parameter signature,
  status and layer;
- `get_formula(key)`: one entry as JSON (key or dotted name);
- `reconcile(entry_json)`: `check.check_entry` on the recorded calls (the entry as JSON text or
  as an object); the JSON report gives predicted versus measured per metric and per op for
  every call, or the stage that refused it.
Every `reconcile` is recorded in `ToolSession.submissions` (text, report, time); the runner
takes the last passing one after the run. Tools answer with text; failures are `is_error`
results the model can read, never exceptions.

The SDK exposes the tools to the model as `mcp__<server>__<tool>` (`TOOL_NAMES`): these are the
only names the runner allows.

Example:
    >>> session = ToolSession("my_pkg.ScaledGELU", calls, Registry.default())
    >>> server = build_server(session)       # ClaudeAgentOptions(mcp_servers={SERVER: server})
    >>> session.reconcile(text)["ok"]
    True
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from claude_agent_sdk import McpSdkServerConfig, ToolAnnotations, create_sdk_mcp_server, tool

from formula_db.registry import Registry

from .calls import RecordedCall
from .check import CheckReport, check_entry
from .source import SourceError, read_class

SERVER = "lmp"
TOOLS = ("read_source", "list_formulas", "get_formula", "reconcile")
TOOL_NAMES = tuple(f"mcp__{SERVER}__{name}" for name in TOOLS)
MAX_SUBMISSIONS = 50  # reconcile calls answered per run; later ones are refused
MAX_RESULT_CHARS = 200_000  # tool results Claude Code keeps inline (not spilled to a file)
ENTRY_SCHEMA = {"type": "object", "required": ["entry_json"], "properties": {
    "entry_json": {"type": ["string", "object"],
                   "description": "the complete formula entry: JSON text or a JSON object"}}}


@dataclass
class Submission:
    """One entry the agent submitted through `reconcile`, and the verdict."""

    index: int
    text: str
    report: CheckReport
    at_s: float


@dataclass
class ToolSession:
    """State the tools share: the target, its recorded calls, the registry, the submissions."""

    target: str
    calls: list[RecordedCall]
    registry: Registry
    rtol: float = 0.0
    max_submissions: int = MAX_SUBMISSIONS
    submissions: list[Submission] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    packages: frozenset[str] = frozenset()  # read_source's reach; derived from the calls if empty

    def __post_init__(self) -> None:
        if not self.packages:
            names = {self.target} | {child.class_name for call in self.calls
                                     for child in call.children}
            self.packages = frozenset({"torch"} | {n.split(".")[0] for n in names if n})

    # -- the tools as plain functions: (text, is_error) --------------------------------------
    def read_source(self, class_name: str) -> tuple[str, bool]:
        try:
            return read_class(class_name.strip(), self.packages).text, False
        except SourceError as exc:
            return str(exc), True

    def list_formulas(self) -> tuple[str, bool]:
        rows = []
        for key in self.registry.keys():
            entry = self.registry.get(key)
            rows.append({"key": key, "full_class_name": entry.full_class_name,
                         "kind": entry.kind, "signature": signature(entry),
                         "status": entry.validation.status,
                         "layer": self.registry.source_of(key)})
        return json.dumps(rows, indent=1), False

    def get_formula(self, key: str) -> tuple[str, bool]:
        entry = self.registry.find(key.strip())
        if entry is None:
            return f"no formula with key or name {key!r}; list_formulas shows the keys", True
        return json.dumps(entry.model_dump(mode="json", exclude_defaults=True), indent=1), False

    def reconcile(self, entry_json: str) -> tuple[str, bool]:
        if len(self.submissions) >= self.max_submissions:
            return (f"submission limit reached ({self.max_submissions}); stop and summarise "
                    f"the remaining discrepancy", True)
        report = check_entry(entry_json, self.target, self.calls, self.registry, self.rtol)
        self.submissions.append(Submission(len(self.submissions) + 1, entry_json, report,
                                           time.monotonic() - self.started))
        return json.dumps(report.to_json(), indent=1), not report.ok

    # -- results for the runner --------------------------------------------------------------
    def last_passing(self) -> Submission | None:
        return next((s for s in reversed(self.submissions) if s.report.ok), None)

    def last(self) -> Submission | None:
        return self.submissions[-1] if self.submissions else None


def signature(entry: Any) -> str:
    """`key(name: type, name: type = default, ...)` of an entry, as nested calls bind it."""
    params = ", ".join(f"{p.name}: {p.type}" + ("" if p.default is None else f" = {p.default!r}")
                       for p in entry.parameters)
    return f"{{{entry.key}}}({params})"


def _result(text: str, is_error: bool) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "is_error": is_error}


def build_server(session: ToolSession) -> McpSdkServerConfig:
    """The in-process MCP server exposing the session's tools."""

    read_only = ToolAnnotations(readOnlyHint=True, maxResultSizeChars=MAX_RESULT_CHARS)

    @tool("read_source", "Source (class header, __init__, forward) of a class of the traced "
          "model's packages, by "
          "dotted name, e.g. torch.nn.Linear or transformers.models.llama.modeling_llama."
          "LlamaMLP.", {"class_name": str}, annotations=read_only)
    async def read_source(args: dict[str, Any]) -> dict[str, Any]:
        return _result(*session.read_source(str(args["class_name"])))

    @tool("list_formulas", "Every formula key you may call from a template, with its "
          "parameter signature (arguments are positional, in this order).", {},
          annotations=read_only)
    async def list_formulas(args: dict[str, Any]) -> dict[str, Any]:
        return _result(*session.list_formulas())

    @tool("get_formula", "One formula entry as JSON, by key (torch__nn__Linear) or dotted "
          "name.", {"key": str}, annotations=read_only)
    async def get_formula(args: dict[str, Any]) -> dict[str, Any]:
        return _result(*session.get_formula(str(args["key"])))

    @tool("reconcile", "Validate a complete formula entry (JSON text of one entry object) "
          "against the schema and the safe formula language, then evaluate it on every "
          "recorded call and compare with the measured values per metric and per aten op. "
          "Your last submission that passes on every call is the one cached.",
          ENTRY_SCHEMA, annotations=ToolAnnotations(maxResultSizeChars=MAX_RESULT_CHARS))
    async def reconcile(args: dict[str, Any]) -> dict[str, Any]:
        entry = args["entry_json"]
        text = entry if isinstance(entry, str) else json.dumps(entry)
        return _result(*session.reconcile(text))

    return create_sdk_mcp_server(SERVER, tools=[read_source, list_formulas, get_formula,
                                                reconcile])
