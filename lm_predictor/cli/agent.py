"""`lm-predictor agent NAME`: run the formula agent (claude-agent-sdk) on one module class.

The agent reads the class's source and its traced calls and writes an entry, cached in the user
formula database only if it reconciles with measurement on every call (see
`lm_predictor.agent`). Exit codes: 0 cached, 3 not reconciled (nothing cached), 6 no
credentials, 5 a class or model that cannot be analysed.

Example:
    $ lm-predictor agent MyBlock --model-id ./my-model/config.json --budget-usd 1
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lm_predictor.cli._args import add_db_arg, add_formulas_arg
from lm_predictor.errors import EXIT_NO_FORMULA

from formula_db.agent.limits import AgentLimits  # a plain dataclass: no SDK import


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="write a module's formula with the formula agent",
                       description="Run the formula agent (claude-agent-sdk) on one module class: "
                                   "it reads the source and the traced calls and writes an entry, "
                                   "cached in the user database only if it reconciles with "
                                   "measurement on every call.")
    p.add_argument("name", help="class name: dotted (transformers.models.llama.modeling_llama."
                                "LlamaMLP), key, or bare (LlamaMLP)")
    p.add_argument("--model-id", "--model_id", dest="model_id",
                   help="model to trace on meta for the class's calls (default: the model of "
                        "the latest stored run that calls the class)")
    p.add_argument("--force", action="store_true",
                   help="re-analyse a class that already has an entry")
    p.add_argument("--max-turns", type=int, default=AgentLimits.max_turns)
    p.add_argument("--budget-usd", type=float, default=AgentLimits.max_budget_usd,
                   help="stop when the run has cost this much (as the SDK reports cost)")
    p.add_argument("--timeout", type=float, default=AgentLimits.timeout_s,
                   help="wall-clock limit of the run in seconds")
    p.add_argument("--rtol", type=float, default=AgentLimits.rtol,
                   help="relative tolerance for reconciliation (default 0: exact)")
    p.add_argument("--model", dest="claude_model", help="Claude model (default: the CLI's)")
    p.add_argument("--transcripts", metavar="DIR", help="transcript directory (default: "
                   "agent_transcripts/ beside the user formula database)")
    add_formulas_arg(p)
    add_db_arg(p)
    p.set_defaults(handler=cmd_agent)


def _limits(args: argparse.Namespace) -> AgentLimits:
    from lm_predictor.errors import AgentError

    if args.max_turns < 1 or args.budget_usd <= 0 or args.timeout <= 0 or args.rtol < 0:
        raise AgentError("--max-turns, --budget-usd and --timeout must be positive and --rtol "
                         ">= 0")
    return AgentLimits(max_turns=args.max_turns, max_budget_usd=args.budget_usd,
                       timeout_s=args.timeout, rtol=args.rtol)


def cmd_agent(args: argparse.Namespace) -> int:
    from formula_db.registry import Registry
    from lm_predictor.agent import run_for_class

    limits = _limits(args)
    result = run_for_class(args.name, Registry.default(args.formulas), limits,
                           model_id=args.model_id, force=args.force, db=args.db,
                           transcripts=Path(args.transcripts) if args.transcripts else None,
                           claude_model=args.claude_model)
    print(result.report())
    if result.outcome == "cached":
        return 0
    return EXIT_NO_FORMULA if result.outcome == "not_reconciled" else 1
