"""Zoo formulas in a training step: every zoo call's forward AND backward reconcile exactly.

Each family's tiny config (`lm_predictor.models.tiny_config`) is built on `meta` in float32 and
traced through one training step (`tracing.train.trace_training_step`: forward with labels, the
causal-LM loss, `loss.backward()`) at several shapes, with the SDPA backward counted as the flash
kernel and as the math backward. Every call must have a formula, and each formula's forward
metrics (activation bytes include what autograd keeps for backward) and `backward` templates must
equal the measured counts; nothing may be unattributed. Trace-free: the top-level entry's forward
plus backward templates, evaluated from the config alone, equal the traced step totals.
"""
from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from formula_db.registry import Registry
from formula_db.units import METRICS
from lm_predictor.models import build_model, load_preset, tiny_config
from lm_predictor.reconcile import reconcile
from lm_predictor.results import BACKWARD_METRICS
from tracing import Trace
from tracing.train import trace_training_step

REGISTRY = Registry.default(include_user=False)


def training_step(model: torch.nn.Module, batch: int, seq: int, kind: str) -> Trace:
    ids = torch.zeros((batch, seq), dtype=torch.long, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trace_training_step(model, {"input_ids": ids}, attention_backward=kind)


def step_problems(t: Trace, registry: Registry | None = None) -> list[str]:
    """Readable lines for every call whose forward or backward is not predicted exactly
    (by `registry`, default the builtin formulas)."""
    recon = reconcile(t, registry or REGISTRY)
    problems: list[str] = []
    unattributed = t.step_totals().unattributed.as_dict()
    if any(unattributed.values()):
        problems.append(f"unattributed backward: {unattributed}")
    for call, result in zip(t.calls, recon.calls):
        where = f"{call.module_path or '(model)'} [{call.class_name.rsplit('.', 1)[-1]}]"
        if result.status == "no_formula":
            problems.append(f"{where}: no formula")
            continue
        if result.error:
            problems.append(f"{where}: {result.error}")
        for m in METRICS:
            if result.predicted[m] != result.measured[m]:
                problems.append(f"{where} forward {m}: measured {result.measured[m]}, "
                                f"predicted {result.predicted[m]}")
        backward = result.backward
        if backward is None or backward.status == "no_formula":
            problems.append(f"{where}: no backward formula")
            continue
        if backward.error:
            problems.append(f"{where} backward: {backward.error}")
        for m in BACKWARD_METRICS:
            if backward.predicted[m] != backward.measured[m]:
                problems.append(f"{where} backward {m}: measured {backward.measured[m]}, "
                                f"predicted {backward.predicted[m]}")
    return problems


def assert_training_reconciles(config: Any, shapes: list[tuple[int, int]],
                               kinds: tuple[str, ...] = ("flash", "math")) -> None:
    """Trace a training step of `config` at each (batch, seq) and attention backward kind and
    assert every call's forward and backward are predicted exactly."""
    model = build_model(config, device="meta", dtype=torch.float32)
    problems: list[str] = []
    for kind in kinds:
        for batch, seq in shapes:
            t = training_step(model, batch, seq, kind)
            problems += [f"{kind} batch {batch} seq {seq}: {p}" for p in step_problems(t)]
    assert not problems, "training step does not reconcile:\n  " + "\n  ".join(problems[:30])


def _tiny(preset: str, **overrides: Any) -> Any:
    """Tiny config of a bundled preset, or of a transformers config class
    ('transformers:Qwen3Config': its defaults) for architectures without a preset."""
    if preset.startswith("transformers:"):
        import transformers

        return tiny_config(getattr(transformers, preset.split(":", 1)[1])(), **overrides)
    return tiny_config(load_preset(preset), **overrides)


FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("meta-llama/Llama-3.1-8B", {}),
    # odd sizes: head_dim * heads != hidden, multi-query attention, three layers
    "llama_odd": ("meta-llama/Llama-3.1-8B",
                  {"hidden_size": 48, "intermediate_size": 80, "num_attention_heads": 6,
                   "num_key_value_heads": 1, "head_dim": 12, "num_hidden_layers": 3}),
    # lm_head tied to the token embedding: its two weight gradients are summed
    "llama_tied": ("meta-llama/Llama-3.1-8B", {"tie_word_embeddings": True}),
    "mistral": ("mistralai/Mistral-7B-v0.1", {}),
    "qwen2": ("Qwen/Qwen2.5-7B", {}),  # q/k/v biases
    # q_norm/k_norm over the head size; grouped-query variant
    "qwen3": ("transformers:Qwen3Config", {"num_key_value_heads": 2}),
    # fused qkv_proj and gate_up_proj (sliced, not accumulated); grouped-query variant
    "phi3": ("microsoft/Phi-3-mini-4k-instruct", {"num_key_value_heads": 2}),
    # dropout active (0.1 everywhere), tied embeddings, Conv1D projections
    "gpt2": ("openai-community/gpt2", {}),
    # no dropout, untied lm_head, one head (head transposes stay contiguous)
    "gpt2_odd": ("openai-community/gpt2",
                 {"n_embd": 48, "n_head": 1, "n_inner": 80, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                  "attn_pdrop": 0.0, "tie_word_embeddings": False}),
    # eager attention (repeat_kv, logit softcapping), four norms per layer, final softcapping
    "gemma2": ("google/gemma-2-9b", {}),
    # multi-head (no repeat_kv), untied, three layers (sliding and global alternate)
    "gemma2_odd": ("google/gemma-2-9b", {"num_attention_heads": 4, "num_key_value_heads": 4,
                                         "head_dim": 8, "num_hidden_layers": 3,
                                         "tie_word_embeddings": False}),
    # fused per-head qkv, partial rotary, parallel residual; odd variant: half rotary, tied
    "gpt_neox": ("transformers:GPTNeoXConfig", {}),
    "gpt_neox_odd": ("transformers:GPTNeoXConfig",
                     {"hidden_size": 48, "num_attention_heads": 3, "intermediate_size": 80,
                      "rotary_pct": 0.5, "tie_word_embeddings": True, "num_hidden_layers": 3}),
    # functional dropout of the residual branches, learned positions, tied lm_head
    "opt": ("facebook/opt-125m", {}),
    # no residual dropout, attention dropout (math backward masks the score gradient), untied
    "opt_odd": ("facebook/opt-125m", {"dropout": 0.0, "attention_dropout": 0.1,
                                      "tie_word_embeddings": False, "num_attention_heads": 2}),
}
SHAPES = [(1, 2), (2, 5), (3, 7)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_training_step_reconciles(family: str) -> None:
    preset, overrides = FAMILIES[family]
    assert_training_reconciles(_tiny(preset, **overrides), SHAPES)


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3"])
def test_single_token_and_batch_one(family: str) -> None:
    """seq 1 (no causal mask, contiguous head transposes) and batch 1 (labels shift in place)."""
    preset, overrides = FAMILIES[family]
    assert_training_reconciles(_tiny(preset, **overrides), [(1, 1), (2, 1), (1, 4)],
                               kinds=("flash",))


def test_backward_formula_is_not_the_forward() -> None:
    """The training step's backward is about twice the forward matmul FLOPs (grad input and
    grad weight) plus the attention backward; a formula that copied the forward would fail."""
    config = _tiny("meta-llama/Llama-3.1-8B")
    t = training_step(build_model(config, device="meta", dtype=torch.float32), 2, 5, "flash")
    totals = t.step_totals()
    assert 1.9 * totals.forward.flops < totals.backward.flops < 2.6 * totals.forward.flops


def predicted_step(config: Any, batch: int, seq: int, kind: str,
                   dtype: str = "float32") -> dict[str, dict[str, Any]]:
    """Trace-free training step: the top-level entry bound from the config alone
    (`Predictor.for_config`, whose `dtype` sets the itemsize), with labels, autograd recording
    and the attention backward kind."""
    from lm_predictor.predict.predictor import Predictor

    predictor = Predictor.for_config(config, registry=REGISTRY, dtype=dtype)
    names = REGISTRY.get(predictor.key).param_names
    step = {"has_labels": True, "grad_enabled": True, "flash": kind == "flash",
            "training": True}  # training: dropout active (GPT-2, OPT)
    params = dict(predictor.fixed, batch=batch, seq_len=seq, kv_len=0)
    params.update({k: v for k, v in step.items() if k in names})
    forward = REGISTRY.evaluate_all(predictor.key, params)
    backward = REGISTRY.evaluate_backward(predictor.key, params)
    assert backward is not None
    return {"forward": forward, "backward": backward}


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_trace_free_training_step(family: str) -> None:
    """Forward + backward of a whole step predicted from the config equal the traced totals
    (at shapes not used above), and inference prediction is unchanged by the training terms."""
    preset, overrides = FAMILIES[family]
    config = _tiny(preset, **overrides)
    model = build_model(config, device="meta", dtype=torch.float32)
    for batch, seq, kind in [(2, 9, "flash"), (4, 3, "math")]:
        t = training_step(model, batch, seq, kind)
        totals = t.step_totals()
        predicted = predicted_step(config, batch, seq, kind)
        # outside the model: only loss.backward()'s seed gradient (ones_like of the scalar loss)
        seed = {"flops": 0, "vector_flops": 0, "bytes_read": 4, "bytes_written": 4}
        assert t.outside.as_dict() == seed
        assert {m: predicted["forward"][m] for m in BACKWARD_METRICS} == t.calls[0].inclusive.as_dict()
        assert predicted["backward"] == totals.backward.as_dict()
        step = {m: predicted["forward"][m] + predicted["backward"][m] + seed[m]
                for m in BACKWARD_METRICS}
        assert step == totals.measured.as_dict()
        root = t.calls[0]
        assert predicted["forward"]["activation_bytes"] == root.activation_bytes
