"""Bounds of one formula-agent run (kept import-light: the CLI reads the defaults).

- `max_turns`: assistant turns; passed to Claude Code (`--max-turns`) and also counted by the
  runner, which stops the run past it.
- `max_budget_usd`: passed to Claude Code (`--max-budget-usd`), which stops the run when its
  reported cost exceeds it.
- `timeout_s`: wall-clock seconds, enforced by the runner (the run is cancelled, nothing cached).
- `rtol`: relative tolerance of reconciliation (0: exact).

Example:
    >>> AgentLimits(max_turns=10).timeout_s
    900.0
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AgentLimits:
    """Bounds of one run: turns, USD (as the SDK reports cost), seconds, and the tolerance."""

    max_turns: int = 30
    max_budget_usd: float = 2.0
    timeout_s: float = 900.0
    rtol: float = 0.0
