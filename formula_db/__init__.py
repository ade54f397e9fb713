"""formula_db: the formula language and the databases of formula entries.

A formula entry (JSON, never code) gives a module class's or torch function's cost — FLOPs,
vector FLOPs, bytes read and written, activation bytes — as templates with `${param}`
placeholders and nested `{key}(args)` calls. Modules: `parser`/`ast`/`evaluate`/`symbolic`/
`functions` (the language), `schema` (entries, pydantic), `bind`/`meta` (parameters from a traced
call), `naming` (keys), `units` (metric and dtype names), `paths`/`files`/`store` (database files),
`registry` (layered look-up), `agent/` (the LLM formula writer). This package imports nothing of
`lm_predictor` or `tracing`, and nothing heavy on import.
"""
