"""LM-Predictor: what does this model cost? FLOPs, bytes and activation memory per module call,
predicted from formula templates and reconciled against aten-level measurement.

    >>> import lm_predictor
    >>> with lm_predictor.trace(model) as t:
    ...     model(x)
    >>> result = lm_predictor.analyze("gpt2", batch_size=2, seq_len=128)
    >>> lm_predictor.predict("gpt2", [(1, 128, 0)]).rows[0]["flops"]   # no trace
    >>> con = lm_predictor.connect()          # DuckDB connection to the stored runs

Attributes are imported lazily so that `import lm_predictor` (and the CLI) stay light.
"""
from __future__ import annotations

from typing import Any

from lm_predictor.version import __version__

__all__ = ["__version__", "trace", "analyze", "predict", "connect", "AnalysisResult"]


def __getattr__(name: str) -> Any:
    if name == "trace":
        from tracing import trace

        return trace
    if name in ("analyze", "connect", "AnalysisResult"):
        from lm_predictor import api

        return getattr(api, name)
    if name == "predict":
        from lm_predictor.predict.points import predict_points

        return predict_points
    raise AttributeError(f"module 'lm_predictor' has no attribute {name!r}")
