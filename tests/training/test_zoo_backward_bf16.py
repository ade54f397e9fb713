"""Zoo formulas in a half-precision training step: forward and backward reconcile exactly in
bfloat16 (and float16), as they do in float32 (tests/training/test_zoo_backward.py).

A model built in bfloat16 does not run its whole step in bfloat16: transformers' RMSNorms upcast
to float32 (the float32 copy and the normalised input are what autograd saves, the gradient sums
inside the norm run in float32, and the casts have backward copies), Gemma 2 normalises and
softmaxes in float32, the causal-LM loss upcasts the logits (`logits.float()`), and SDPA's math
backend computes in float32 with casts at both ends. Every one of these is a term of the formulas,
switched on by the itemsize `s` (`s != 4`), so the same templates stay exact in float32.

One shape per family (batch 2, seq 5: batch and causal mask both non-trivial) with the flash
attention backward; the math backward (float32 internally) for OPT with attention dropout (the
score gradient is masked) and for Qwen3 (q/k norms); float16 for two families; trace-free
prediction of a whole bfloat16 step from the config for Llama and Gemma 2; an evaluation loss
(labels, no autograd) in float32 and bfloat16.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from lm_predictor.models import build_model
from lm_predictor.results import BACKWARD_METRICS
from tests.training.test_zoo_backward import (FAMILIES, REGISTRY, _tiny, predicted_step,
                                              step_problems, training_step)

BASE = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2", "opt", "gemma2", "gpt_neox"]
# variants whose float32 differences matter in half precision too: tied lm_head (gradient sum
# in the model), odd head sizes and MQA, Gemma 2's multi-head layers, GPT-NeoX half rotary
VARIANTS = ["llama_tied", "llama_odd", "gemma2_odd", "gpt_neox_odd", "gpt2_odd", "opt_odd"]
SHAPE = (2, 5)


def half_step_problems(family: str, dtype: torch.dtype, kind: str,
                       shape: tuple[int, int] = SHAPE) -> list[str]:
    preset, overrides = FAMILIES[family]
    model = build_model(_tiny(preset, **overrides), device="meta", dtype=dtype)
    assert next(model.parameters()).dtype == dtype
    return step_problems(training_step(model, *shape, kind))


@pytest.mark.parametrize("family", BASE + VARIANTS)
def test_bf16_training_step_reconciles(family: str) -> None:
    problems = half_step_problems(family, torch.bfloat16, "flash")
    assert not problems, "bf16 training step does not reconcile:\n  " + "\n  ".join(problems[:30])


@pytest.mark.parametrize("family", ["opt_odd", "qwen3"])
def test_bf16_math_attention_backward(family: str) -> None:
    """SDPA's math backward upcasts q, k, v and the output gradient to float32 and casts the
    three input gradients back; attention dropout multiplies the float32 score gradient."""
    problems = half_step_problems(family, torch.bfloat16, "math", (3, 4))
    assert not problems, "bf16 math backward does not reconcile:\n  " + "\n  ".join(problems[:30])


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_fp16_training_step_reconciles(family: str) -> None:
    problems = half_step_problems(family, torch.float16, "flash", (3, 4))
    assert not problems, "fp16 training step does not reconcile:\n  " + "\n  ".join(problems[:30])


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_trace_free_bf16_training_step(family: str) -> None:
    """Forward + backward of a whole bf16 step predicted from the config equal the traced totals;
    the loss is float32, so the seed gradient outside the model is 4 bytes as in float32."""
    preset, overrides = FAMILIES[family]
    config = _tiny(preset, **overrides)
    model = build_model(config, device="meta", dtype=torch.bfloat16)
    for batch, seq, kind in [(2, 9, "flash"), (4, 3, "math")]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = training_step(model, batch, seq, kind)
        totals = t.step_totals()
        predicted = predicted_step(config, batch, seq, kind, dtype="bfloat16")
        assert t.outside.as_dict() == {"flops": 0, "vector_flops": 0, "bytes_read": 4,
                                       "bytes_written": 4}
        assert {m: predicted["forward"][m] for m in BACKWARD_METRICS} == t.calls[0].inclusive.as_dict()
        assert predicted["backward"] == totals.backward.as_dict()
        assert predicted["forward"]["activation_bytes"] == t.calls[0].activation_bytes


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_eval_loss_with_labels(family: str, dtype: torch.dtype) -> None:
    """Labels without autograd (an evaluation loss): nothing is saved, so of the loss only the
    float32 scalar stays alive; every call reconciles exactly (top-level `has_labels` terms)."""
    from lm_predictor.reconcile import reconcile
    from lm_predictor.testing import mismatches
    from tracing import trace

    preset, overrides = FAMILIES[family]
    model = build_model(_tiny(preset, **overrides), device="meta", dtype=dtype).eval()
    for batch, seq in [(1, 3), (2, 5)]:
        ids = torch.zeros((batch, seq), dtype=torch.long, device="meta")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad(), trace(model) as t:
                model(input_ids=ids, labels=ids)
        problems = mismatches(t, reconcile(t, REGISTRY, 0.0))
        assert not problems, f"batch {batch} seq {seq}: " + "\n  ".join(problems)
