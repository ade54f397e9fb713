"""The command line: one thin adapter module per subcommand (parse → call the library → render →
exit code). Nothing outside this package imports it; `app` holds the subcommand table.
"""
from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The `lm-predictor` entry point (see `lm_predictor.cli.app`)."""
    from lm_predictor.cli.app import main as app_main

    return app_main(argv)
