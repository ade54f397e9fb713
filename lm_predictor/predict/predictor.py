"""Trace-free prediction: a model's cost from its config and the shape alone.

Once the model's top-level class (e.g. `LlamaForCausalLM`) has a formula, every metric follows
from nested templates: the top entry's `batch`, `seq_len`, `kv_len` and `s` (bytes per element)
parameters are given, every other parameter binds from `config.*`, and nested `{key}(...)` calls
pass values down. Nothing is built and nothing is traced.

For sweeps the whole nested formula is reduced once per metric to a closed form in
(batch, seq_len, kv_len) with sympy (built from the AST, never from text), kept as a JSON tree
(`closed_form.to_tree`, cached on disk by `predict.cache`) and compiled into exact closures
(`closed_form.compile_tree`); a metric whose form cannot be compiled is evaluated exactly through
the AST at each point. A `Predictor` is built from a transformers config (`for_config`) or from
a cached `Binding` (`from_binding`: no transformers, no torch).

Example:
    >>> p = Predictor.for_model("meta-llama/Llama-3.1-8B")
    >>> p.point(batch=1, seq_len=2048)["flops"]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from formula_db.bind import make_roots, plain_config
from formula_db.errors import FormulaError, UnknownKeyError
from formula_db.evaluate import metric_value
from formula_db.registry import Registry
from formula_db.units import METRICS, itemsize
from lm_predictor.predict.cache import Binding
from lm_predictor.predict.closed_form import Fn, Tree, Unsupported, compile_tree, to_tree

SHAPE_PARAMS = ("batch", "seq_len", "kv_len")


@dataclass
class Predictor:
    """Nested formulas of one model's top-level class, with its config-bound parameters fixed."""

    model_id: str
    key: str
    registry: Registry
    fixed: dict[str, Any]
    shape_params: tuple[str, ...]
    _fast: dict[str, Fn | None] = field(default_factory=dict)
    _trees: dict[str, Tree | None] = field(default_factory=dict)

    @classmethod
    def for_config(cls, config: Any, model_id: str = "", registry: Registry | None = None,
                   dtype: str = "float32", architecture: str | None = None) -> "Predictor":
        """Bind the top-level entry's config parameters (raises UnknownKeyError without one)."""
        from lm_predictor.models.build import model_class

        registry = registry or Registry.default()
        klass = model_class(config, architecture)
        key = registry.resolve_key(klass)
        if key is None:
            raise UnknownKeyError(
                f"no formula for {klass.__module__}.{klass.__qualname__}, the top-level class of "
                f"{model_id or config.model_type}; trace it with 'lm-predictor analyze' and add "
                f"the missing formulas (see 'lm-predictor check')")
        entry = registry.get(key)
        shape = tuple(p for p in SHAPE_PARAMS if p in entry.param_names)
        overrides: dict[str, Any] = {p: 1 for p in shape}
        if "s" in entry.param_names:
            overrides["s"] = int(itemsize(dtype))
        if "dtype" in entry.param_names:  # entries whose cost depends on the dtype itself (T5's float16 clamps)
            overrides["dtype"] = dtype
        roots = make_roots({}, (), {}, None, plain_config(config))
        bound = registry.bind(key, roots, overrides)
        fixed = {k: v for k, v in bound.items() if k not in shape}
        return cls(model_id, key, registry, fixed, shape)

    @classmethod
    def from_binding(cls, binding: Binding, registry: Registry, model_id: str = "",
                     trees: dict[str, Tree | None] | None = None) -> "Predictor":
        """A predictor from a cached binding (and cached closed-form trees, if any)."""
        return cls(model_id, binding.key, registry, dict(binding.fixed),
                   tuple(binding.shape_params), _trees=dict(trees or {}))

    def binding(self) -> Binding:
        return Binding(self.key, dict(self.fixed), tuple(self.shape_params))

    @classmethod
    def for_model(cls, model_id: str, registry: Registry | None = None, dtype: str = "float32",
                  hf_token: str | None = None) -> "Predictor":
        from lm_predictor.models.resolve import resolve_config

        resolved = resolve_config(model_id, hf_token=hf_token)
        return cls.for_config(resolved.config, model_id, registry, dtype)

    def point(self, batch: int, seq_len: int, kv_len: int = 0) -> dict[str, Any]:
        """Exact metrics at one shape (AST evaluation)."""
        params = dict(self.fixed)
        params.update({k: v for k, v in (("batch", batch), ("seq_len", seq_len),
                                         ("kv_len", kv_len)) if k in self.shape_params})
        return self.registry.evaluate_all(self.key, params)

    def training_step(self, batch: int, seq_len: int, attention_backward: str = "flash",
                      dropout: bool = True) -> dict[str, dict[str, Any]]:
        """Exact cost of one training step (`tracing.train.trace_training_step`: forward with
        labels, the causal-LM loss, `loss.backward()`, no cache) at (batch, seq_len):
        `forward` (five metrics; activation bytes include what autograd saves), `backward` (the
        entries' `backward` templates) and `step` (forward + backward + the seed gradient of
        the float32 loss, 4 bytes read and written: the traced step totals). Training-mode
        parameters of the top-level entry are set when it has them: `has_labels`,
        `grad_enabled`, `training` (dropout active, unless `dropout` is False) and `flash`
        (`attention_backward` 'flash' or 'math')."""
        from formula_db.errors import UnknownKeyError
        from lm_predictor.results import BACKWARD_METRICS

        if attention_backward not in ("flash", "math"):
            raise FormulaError(f"attention_backward {attention_backward!r} is not one of "
                               f"'flash', 'math'; pass one of them")
        entry = self.registry.get(self.key)
        if entry.backward is None:
            raise UnknownKeyError(
                f"no backward formula for {entry.full_class_name}; trace a training step with "
                f"'lm-predictor analyze --phase train' (covers transferred and derived classes) "
                f"or add a 'backward' block")
        params = dict(self.fixed)
        params.update({k: v for k, v in (("batch", batch), ("seq_len", seq_len), ("kv_len", 0))
                       if k in self.shape_params})
        step = {"has_labels": True, "grad_enabled": True, "training": dropout,
                "flash": attention_backward == "flash"}
        params.update({k: v for k, v in step.items() if k in entry.param_names})
        forward = self.registry.evaluate_all(self.key, params)
        backward = self.registry.evaluate_backward(self.key, params) or {}
        seed = {"flops": 0, "vector_flops": 0, "bytes_read": 4, "bytes_written": 4}
        return {"forward": forward, "backward": backward,
                "step": {m: forward[m] + backward[m] + seed[m] for m in BACKWARD_METRICS}}

    def closed_form(self, metric: str) -> Any:
        """The metric as a simplified sympy expression in the shape parameters."""
        return self.registry.symbolic(self.key, metric, fixed=self.fixed,
                                      free=list(self.shape_params))

    def tree(self, metric: str) -> Tree | None:
        """The metric's closed form as a JSON tree (built with sympy once; None: unsupported)."""
        if metric not in self._trees:
            try:
                self._trees[metric] = to_tree(self.closed_form(metric))
            except (FormulaError, Unsupported, TypeError, ValueError):
                self._trees[metric] = None
        return self._trees[metric]

    def trees(self) -> dict[str, Tree | None]:
        """Every metric's tree (what `predict.cache` stores)."""
        return {m: self.tree(m) for m in METRICS}

    def compiled(self, metric: str) -> Fn | None:
        """The metric's closed form as an exact closure over the shape (None: use the AST)."""
        if metric not in self._fast:
            tree = self.tree(metric)
            try:
                self._fast[metric] = None if tree is None else compile_tree(tree)
            except Unsupported:
                self._fast[metric] = None
        return self._fast[metric]

    def sweep(self, points: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
        """Metrics at many (batch, seq_len, kv_len) points: compiled closed forms when possible."""
        fast = {m: self.compiled(m) for m in METRICS}
        slow_metrics = [m for m in METRICS if fast[m] is None]
        out: list[dict[str, Any]] = []
        for b, s, k in points:
            values = {"batch": b, "seq_len": s, "kv_len": k}
            row = {m: metric_value(fn(values), f"{self.key}.{m} (closed form)")
                   for m, fn in fast.items() if fn is not None}
            if slow_metrics:
                params = dict(self.fixed)
                params.update({n: values[n] for n in self.shape_params})
                for m in slow_metrics:
                    row[m] = self.registry.evaluate(self.key, m, params)
            out.append({m: row[m] for m in METRICS})
        return out
