"""Whether the formula agent can authenticate, checked without any network access.

The agent runs Claude Code (the `claude` CLI, bundled with claude-agent-sdk) which accepts, in
this order of our checks:
- an API key or token in the environment: `ANTHROPIC_API_KEY` (the CLI loads `./.env` into the
  environment first), `ANTHROPIC_AUTH_TOKEN`, `CLAUDE_CODE_OAUTH_TOKEN`;
- a cloud provider switch: `CLAUDE_CODE_USE_BEDROCK` or `CLAUDE_CODE_USE_VERTEX` (their own
  credentials are the provider's business);
- a logged-in Claude Code: `$CLAUDE_CONFIG_DIR/.credentials.json` (default `~/.claude/`);
- a `claude` executable on PATH, taken as a logged-in install (on macOS Claude Code keeps its
  login in the keychain, which cannot be inspected here).
Limits: these are signs, not proof: an expired key or a `claude` that was never logged in passes
the check and the run then fails with the CLI's own error (reported, nothing cached).

Example:
    >>> credentials_problem({"ANTHROPIC_API_KEY": "sk-..."}) is None
    True
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping

ENV_KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
            "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX")
HOW_TO = ("the formula agent needs Claude credentials: put ANTHROPIC_API_KEY=... in ./.env or the "
          "environment, or log in to Claude Code ('claude' then /login)")


def credentials_problem(env: Mapping[str, str] | None = None) -> str | None:
    """None when credentials appear configured; otherwise the message saying how to configure."""
    env = os.environ if env is None else env
    if any(env.get(name) for name in ENV_KEYS):
        return None
    config_dir = Path(env.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude").expanduser()
    if (config_dir / ".credentials.json").is_file():
        return None
    if shutil.which("claude", path=env.get("PATH", os.defpath)):
        return None
    return HOW_TO
