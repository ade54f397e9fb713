"""A scripted stand-in for the Claude Code CLI: a claude-agent-sdk `Transport` for tests.

The SDK talks to the CLI in stream-json lines over a `Transport`; this one plays the CLI's side
from a script, so the real SDK code runs (its `Query` control protocol, the in-process MCP
bridge, message parsing) with no process, no network and no key:

1. answers the SDK's `initialize` control request (and records it);
2. reads the user prompt the SDK writes (kept in `prompt`);
3. does the MCP handshake with the in-process server through `mcp_message` control requests
   (`initialize`, `notifications/initialized`, `tools/list`; tool names kept in `tools`);
4. plays the steps: `Say` emits an assistant text message; `Call` emits an assistant
   `tool_use` block, routes `tools/call` to the SDK MCP server, waits for the SDK's
   `control_response` and emits the tool result as the CLI does (a user message with a
   `tool_result` block); `Ask` sends a `can_use_tool` permission request and records the SDK's
   answer; `Fail` raises an error from the read loop (as a crashed CLI); `Hang` never answers;
5. emits a `result` message with the scripted turns, usage and cost, then waits for the SDK
   to close its input (bounded).

Example:
    >>> t = ScriptedTransport([Call("reconcile", {"entry_json": text}), Say("done")])
    >>> async for m in query(prompt="...", options=options, transport=t): ...
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from claude_agent_sdk import Transport

SERVER = "lmp"


@dataclass
class Say:
    text: str


@dataclass
class Call:
    tool: str  # short name: reconcile, read_source, ...
    args: dict[str, Any]


@dataclass
class Ask:
    tool_name: str  # e.g. "Bash"
    input: dict[str, Any]


@dataclass
class Fail:
    error: Exception


@dataclass
class Hang:
    pass


Step = Say | Call | Ask | Fail | Hang


@dataclass
class ScriptedTransport(Transport):
    """Plays the CLI's side of one session from `steps` (see the module docstring)."""

    steps: list[Step]
    cost_usd: float = 0.0123
    usage: dict[str, int] = field(default_factory=lambda: {
        "input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0})
    model: str = "scripted-model"
    connect_error: Exception | None = None
    # recorded for the tests
    initialize_request: dict[str, Any] | None = None
    prompt: str | None = None
    tools: list[str] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    permission_answers: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self._send, self._inbox = anyio.create_memory_object_stream[dict[str, Any]](1000)
        self._ended = anyio.Event()
        self._ready = False
        self._counter = 0
        self._turns = 0

    # -- Transport ---------------------------------------------------------------------------
    async def connect(self) -> None:
        if self.connect_error is not None:
            raise self.connect_error
        self._ready = True

    async def write(self, data: str) -> None:
        for line in data.splitlines():
            if line.strip():
                self._send.send_nowait(json.loads(line))

    def read_messages(self) -> AsyncIterator[dict[str, Any]]:
        return self._play()

    async def close(self) -> None:
        self.closed = True
        self._ready = False
        self._send.close()

    def is_ready(self) -> bool:
        return self._ready

    async def end_input(self) -> None:
        self._ended.set()

    # -- the CLI's side ----------------------------------------------------------------------
    async def _next(self, kind: str, request_id: str | None = None) -> dict[str, Any]:
        while True:
            message = await self._inbox.receive()
            if message.get("type") != kind:
                continue
            if request_id is None or message["response"].get("request_id") == request_id:
                return message

    def _request(self, request: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A control request frame from the CLI to the SDK, and its request id."""
        self._counter += 1
        rid = f"cli_req_{self._counter}"
        return {"type": "control_request", "request_id": rid, "request": request}, rid

    def _mcp(self, message: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return self._request({"subtype": "mcp_message", "server_name": SERVER,
                              "message": message})

    async def _mcp_result(self, rid: str) -> dict[str, Any] | None:
        reply = (await self._next("control_response", rid))["response"]
        if reply.get("subtype") != "success":
            return {"content": [{"type": "text", "text": reply.get("error", "error")}],
                    "isError": True}
        return reply["response"]["mcp_response"].get("result")

    def _assistant(self, content: list[dict[str, Any]]) -> dict[str, Any]:
        self._turns += 1
        return {"type": "assistant", "parent_tool_use_id": None, "session_id": "scripted",
                "message": {"id": f"msg_{self._turns}", "model": self.model, "role": "assistant",
                            "content": content, "stop_reason": "tool_use",
                            "usage": {"input_tokens": 100, "output_tokens": 20}}}

    async def _play(self) -> AsyncIterator[dict[str, Any]]:
        init = await self._next("control_request")
        self.initialize_request = init["request"]
        yield {"type": "control_response", "response": {
            "subtype": "success", "request_id": init["request_id"],
            "response": {"commands": [], "models": [], "account": {}}}}
        yield {"type": "system", "subtype": "init", "session_id": "scripted",
               "model": self.model, "tools": [], "mcp_servers": [{"name": SERVER,
                                                                  "status": "connected"}]}
        user = await self._next("user")
        self.prompt = user["message"]["content"]
        frame, rid = self._mcp({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                           "clientInfo": {"name": "scripted-cli",
                                                          "version": "0"}}})
        yield frame
        await self._mcp_result(rid)
        frame, rid = self._mcp({"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield frame
        await self._mcp_result(rid)
        frame, rid = self._mcp({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        yield frame
        listed = await self._mcp_result(rid)
        self.tools = [t["name"] for t in (listed or {}).get("tools", [])]
        for i, step in enumerate(self.steps):
            if isinstance(step, Say):
                yield self._assistant([{"type": "text", "text": step.text}])
            elif isinstance(step, Call):
                tool_id = f"toolu_{i}"
                yield self._assistant([{"type": "tool_use", "id": tool_id,
                                        "name": f"mcp__{SERVER}__{step.tool}",
                                        "input": step.args}])
                frame, rid = self._mcp({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                                        "params": {"name": step.tool, "arguments": step.args}})
                yield frame
                result = await self._mcp_result(rid) or {}
                self.tool_results.append(result)
                yield {"type": "user", "parent_tool_use_id": None, "session_id": "scripted",
                       "message": {"role": "user", "content": [
                           {"type": "tool_result", "tool_use_id": tool_id,
                            "content": result.get("content"),
                            "is_error": result.get("isError", False)}]}}
            elif isinstance(step, Ask):
                frame, rid = self._request({"subtype": "can_use_tool", "tool_name": step.tool_name,
                                            "input": step.input, "permission_suggestions": []})
                yield frame
                reply = await self._next("control_response", rid)
                self.permission_answers.append(reply["response"])
            elif isinstance(step, Fail):
                raise step.error
            elif isinstance(step, Hang):
                await anyio.sleep_forever()
        yield {"type": "result", "subtype": "success", "duration_ms": 1500,
               "duration_api_ms": 1200, "is_error": False, "num_turns": self._turns,
               "session_id": "scripted", "total_cost_usd": self.cost_usd, "usage": self.usage,
               "result": "done"}
        with anyio.move_on_after(2):
            await self._ended.wait()
