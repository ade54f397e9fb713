"""Trace-free prediction: a model's cost from its config and the shape alone.

- `predictor`: `Predictor`, the model's nested formulas bound to its config;
- `closed_form`: closed forms as sympy ↔ JSON trees ↔ exact closures;
- `cache`: bound predictors and closed-form trees cached on disk;
- `points`: `predict_points`, the sweep behind `lm-predictor predict`.
Import the submodule you need; this package imports nothing on its own.
"""
