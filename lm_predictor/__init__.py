"""LM-Predictor: what does this model cost? FLOPs, bytes and activation memory per module call,
predicted from formula templates and reconciled against aten-level measurement."""
from __future__ import annotations

__version__ = "0.1.0"
