"""The hardware layer's exception, import-light so the CLI can catch it without loading pydantic.

Example:
    >>> raise HardwareError("unknown hardware 'X100'; known: A10G, H100-SXM, ...")
"""
from __future__ import annotations


class HardwareError(Exception):
    """A device catalog or estimate problem, worded as one line naming the cause and the fix."""


class DevicesFileError(HardwareError):
    """A devices file that is damaged, unreadable or locked (a store problem, not bad input)."""
