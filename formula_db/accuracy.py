"""How far a prediction is from a measurement: the relative error used everywhere.

|predicted - measured| / measured; 0 when both are 0; None (unbounded) when the measurement is 0
and the prediction is not, or when there is no prediction. Used by reconciliation
(`lm_predictor.reconcile`) and by the formula agent's `reconcile` tool alike.

Example:
    >>> relative_error(110, 100)
    0.1
"""
from __future__ import annotations

from typing import Any


def relative_error(predicted: Any, measured: int) -> float | None:
    """|p - m| / m; 0 when both are 0; None when m == 0 != p or p is missing."""
    if predicted is None:
        return None
    if measured == 0:
        return 0.0 if predicted == 0 else None
    return float(abs(predicted - measured)) / abs(measured)
