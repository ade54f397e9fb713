"""The `lm-predictor` command line: argparse subcommands, each in its own module.

Exit codes: 0 success, 1 an error (one line on stderr naming the problem and the fix),
2 bad usage (argparse), 3 no formula exists for the requested module, 4 `check` found failing or
regressed formulas.

Example:
    $ lm-predictor module torch.nn.Linear --eval rows=8 in_features=4096 out_features=4096
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from dotenv import load_dotenv

from formula_db.errors import DatabaseError, FormulaError
from hardware.errors import HardwareError
from lm_predictor import (agent_cmd, analyze_cmd, check_cmd, hardware_cmd, module_cmd,
                          predict_cmd, sql_cmd)
from lm_predictor.errors import ModelError, StoreError

EXIT_ERROR = 1
EXIT_NO_FORMULA = 3

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-predictor",
        description="FLOP, memory and time analysis of PyTorch/transformers models from formula "
                    "templates, reconciled against measured aten-op counts.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    analyze_cmd.register(sub)
    predict_cmd.register(sub)
    check_cmd.register(sub)
    module_cmd.register(sub)
    agent_cmd.register(sub)
    hardware_cmd.register(sub)
    sql_cmd.register_sql(sub)
    sql_cmd.register_runs(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    load_dotenv()  # HF_TOKEN, ANTHROPIC_API_KEY, LM_PREDICTOR_DB from ./.env when present
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (DatabaseError, FormulaError, ModelError, StoreError, agent_cmd.AgentError,
            HardwareError) as exc:
        message = " ".join(str(exc).split())
        print(f"lm-predictor: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lm-predictor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
