"""Exceptions of the lm_predictor layer and the CLI's exit codes, kept import-light.

Every error renders as one line naming the problem and the fix. `exit_code_of` maps any of the
project's errors (including `formula_db` and `hardware` ones) to the documented exit code:

| code | meaning                                                                  |
|------|--------------------------------------------------------------------------|
| 0    | success                                                                  |
| 1    | an unexpected failure (a bug: please report it)                          |
| 2    | bad usage: unknown flag, missing argument, a value of the wrong form     |
| 3    | no formula exists for the requested module or model                      |
| 4    | `check` found failing or regressed formulas                              |
| 5    | bad input: model id, config file, formula template, shape, dtype, device name |
| 6    | environment: a device, the network, credentials or a package is missing  |
| 7    | store: the run database or a formula/devices file is damaged, locked or newer |
| 130  | interrupted                                                              |
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_NO_FORMULA = 3
EXIT_CHECK_FAILED = 4
EXIT_INPUT = 5
EXIT_ENVIRONMENT = 6
EXIT_STORE = 7
EXIT_INTERRUPTED = 130


class PredictorError(Exception):
    """Base of this layer's errors; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_INPUT


class UsageError(PredictorError):
    """Flags that parse but do not go together (e.g. --phase decode without --kv-len)."""

    exit_code = EXIT_USAGE


class ModelError(PredictorError, ValueError):
    """A model id, config file, shape or memory budget problem, stated in one line with its fix."""


class EnvironmentProblem(PredictorError):
    """A device, network, credential or optional package that is not there."""

    exit_code = EXIT_ENVIRONMENT


class StoreError(PredictorError):
    """A run database problem, worded as one line naming the file and the fix."""

    exit_code = EXIT_STORE


class AgentError(PredictorError):
    """The formula agent cannot run on this class or model (one line with the fix)."""


def exit_code_of(exc: BaseException) -> int | None:
    """The exit code for one of the project's errors; None for anything else (a bug)."""
    if isinstance(exc, PredictorError):
        return exc.exit_code
    if type(exc).__module__.split(".")[0] == "duckdb":  # a database error no layer wrapped
        return EXIT_STORE
    from formula_db.errors import DatabaseError, FormulaError, UnknownKeyError

    if isinstance(exc, UnknownKeyError):
        return EXIT_NO_FORMULA
    if isinstance(exc, FormulaError):
        return EXIT_INPUT
    if isinstance(exc, DatabaseError):
        return EXIT_STORE
    from hardware.errors import DevicesFileError, HardwareError

    if isinstance(exc, DevicesFileError):
        return EXIT_STORE
    if isinstance(exc, HardwareError):
        return EXIT_INPUT
    return None
