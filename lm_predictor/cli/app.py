"""The `lm-predictor` command line: the subcommand table and the error → exit-code boundary.

Each subcommand lives in its own thin module of this package (parse → call the library →
render → exit code). Building the parser imports only those modules and argparse, so `--help`
and argument errors answer at once; a handler imports the library it needs when it runs.
Exit codes are documented in `lm_predictor.errors` (and the README): 0 success, 2 usage,
3 no formula, 4 check failed, 5 bad input, 6 environment, 7 store, 1 a bug.

Example:
    $ lm-predictor module torch.nn.Linear --eval rows=8 in_features=4096 out_features=4096
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from lm_predictor.cli import agent, analyze, check, hardware, module, predict, sql
from lm_predictor.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, exit_code_of

Handler = Callable[[argparse.Namespace], int]
COMMANDS = (analyze, predict, check, module, agent, hardware, sql)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-predictor",
        description="FLOP, memory and time analysis of PyTorch/transformers models from formula "
                    "templates, reconciled against measured aten-op counts.",
        epilog="exit codes: 0 ok, 2 usage, 3 no formula, 4 check failed, 5 bad input, "
               "6 environment (device, network, credentials), 7 store, 1 unexpected")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """One line of text for an error message."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    from lm_predictor.settings import load_env

    load_env()  # HF_TOKEN, ANTHROPIC_API_KEY, LM_PREDICTOR_DB from ./.env when present
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("lm-predictor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one boundary where errors become exit codes
        code = exit_code_of(exc)
        if code is None:
            print(f"lm-predictor: unexpected error ({type(exc).__name__}: {error_line(exc)}); "
                  f"this is a bug, please report it with the command line", file=sys.stderr)
            return EXIT_UNEXPECTED
        print(f"lm-predictor: error: {error_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
