"""The formula agent: writes a missing formula entry with claude-agent-sdk, caches it only once it
reconciles with measurement.

Modules (import the one you need; this package imports nothing on its own, so the CLI stays
light):
- `limits`  — `AgentLimits`: turns, USD budget, wall-clock timeout, tolerance.
- `auth`    — `credentials_problem()`: are Claude credentials configured (no network).
- `source`  — `class_source(cls)`: header, `__init__`, `forward`, file and line range.
- `calls`   — `RecordedCall`: one traced call of the class as plain data; `distinct()`.
- `check`   — `check_entry()`: schema, safe language, registry and per-call reconciliation.
- `tools`   — the in-process MCP server: read_source, list_formulas, get_formula, reconcile.
- `prompt`  — system prompt and the user prompt built from source, formulas, schema and calls.
- `runner`  — `run_agent()`: one SDK run, then cache the last passing entry atomically.

The layer knows nothing of `lm_predictor` or `tracing`: callers convert their trace records to
`RecordedCall`s (see `lm_predictor.agent_cmd`).

Example:
    >>> from formula_db.agent.runner import AgentTask, run_agent
    >>> run = run_agent(AgentTask(class_source(MyBlock), calls), registry=reg, user_db=path)
    >>> print(run.report())
"""
