"""Exceptions of the lm_predictor layer, kept import-light so the CLI can catch them cheaply.

Each renders as one line naming the problem and the fix; `lm_predictor.cli.main` prints it and
exits with code 1.
"""
from __future__ import annotations


class ModelError(ValueError):
    """A model id, config file or memory budget problem, stated in one line with its fix."""


class StoreError(Exception):
    """A run database problem, worded as one line naming the file and the fix."""
