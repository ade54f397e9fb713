"""Zoo formulas of encoders, an encoder-decoder, a vision model and a state-space model in a
training step: every call's forward AND backward reconcile exactly.

As tests/training/test_zoo_backward.py (whose helpers this reuses): one tiny model per family on
`meta` in float32, one training step (`tracing.train.trace_training_step`) at two or three shapes,
with the SDPA backward counted as the flash kernel and as the math backward. Dropout stays as the
configs have it (active in training). Fully exact, trace-free too: BERT (BertForMaskedLM with
labels), ViT (ViTForImageClassification with class labels; ViTModel with its pooler), T5
(T5ForConditionalGeneration with labels) and Mamba (MambaForCausalLM; one exemption of the
builtin Linear, checked exactly: in_proj's gradient clone) and Falcon (FalconForCausalLM,
multi-query, parallel attention; formula_db/zoo/NOTES_encoders_and_ssm.md, "Training steps").
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

from lm_predictor.models import build_model
from lm_predictor.results import BACKWARD_METRICS
from tests.training.test_zoo_backward import REGISTRY, _tiny, step_problems
from tracing import Trace
from tracing.train import trace_training_step

Inputs = Callable[[Any, int, int], dict[str, Any]]


def _ids(batch: int, seq: int) -> torch.Tensor:
    return torch.zeros((batch, seq), dtype=torch.long, device="meta")


def bert_inputs(config: Any, batch: int, seq: int) -> dict[str, Any]:
    """Masked LM: token ids, token types, labels at every position (no -100 on meta)."""
    ids = _ids(batch, seq)
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "labels": ids}


def vit_inputs(config: Any, batch: int, seq: int) -> dict[str, Any]:
    """Image classification: `seq` is ignored (tokens follow from image and patch size)."""
    size = config.image_size
    return {"pixel_values": torch.empty((batch, config.num_channels, size, size), device="meta"),
            "labels": torch.zeros((batch,), dtype=torch.long, device="meta")}


def t5_inputs(config: Any, batch: int, seq: int) -> dict[str, Any]:
    """Seq2seq: encoder ids and labels (the decoder input is labels shifted right)."""
    return {"input_ids": _ids(batch, seq), "labels": _ids(batch, seq)}


def causal_inputs(config: Any, batch: int, seq: int) -> dict[str, Any]:
    """Causal LM: labels default to the input ids (transformers shifts them)."""
    return {"input_ids": _ids(batch, seq)}


def training_step(model: torch.nn.Module, inputs: dict[str, Any], kind: str) -> Trace:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trace_training_step(model, inputs, attention_backward=kind)


def assert_step_reconciles(config: Any, make_inputs: Inputs, shapes: list[tuple[int, int]],
                           kinds: tuple[str, ...] = ("flash", "math"),
                           architecture: str | None = None) -> None:
    """Every call of a training step at each (batch, seq) and attention backward kind is
    predicted exactly, forward and backward, and nothing is unattributed."""
    model = build_model(config, device="meta", dtype=torch.float32, architecture=architecture)
    problems: list[str] = []
    for kind in kinds:
        for batch, seq in shapes:
            t = training_step(model, make_inputs(config, batch, seq), kind)
            problems += [f"{kind} batch {batch} seq {seq}: {p}" for p in step_problems(t)]
    assert not problems, "training step does not reconcile:\n  " + "\n  ".join(problems[:30])


def assert_trace_free(config: Any, make_inputs: Inputs, shapes: list[tuple[int, int, str]],
                      architecture: str | None = None, seq_param: str | None = "seq_len") -> None:
    """The top-level entry evaluated from the config alone (with labels, autograd recording,
    dropout active and the attention backward kind) equals the traced step's forward and
    backward totals and its activation bytes."""
    from lm_predictor.predict.predictor import Predictor

    model = build_model(config, device="meta", dtype=torch.float32, architecture=architecture)
    predictor = Predictor.for_config(config, registry=REGISTRY, architecture=architecture)
    key, fixed = predictor.key, dict(predictor.fixed)
    names = REGISTRY.get(key).param_names
    for batch, seq, kind in shapes:
        t = training_step(model, make_inputs(config, batch, seq), kind)
        totals = t.step_totals()
        params = dict(fixed, batch=batch)
        if seq_param:
            params[seq_param] = seq
        step = {"has_labels": True, "grad_enabled": True, "flash": kind == "flash",
                "training": True}
        params.update({k: v for k, v in step.items() if k in names})
        forward = REGISTRY.evaluate_all(key, params)
        backward = REGISTRY.evaluate_backward(key, params)
        assert backward is not None
        root = t.calls[0]
        assert {m: forward[m] for m in BACKWARD_METRICS} == root.inclusive.as_dict()
        assert backward == totals.backward.as_dict()
        assert forward["activation_bytes"] == root.activation_bytes


# --- BERT: BertForMaskedLM, tied decoder, dropout 0.1 (hidden and attention) ---------------------

def test_bert_training_step_reconciles() -> None:
    assert_step_reconciles(_tiny("bert-base-uncased"), bert_inputs, [(1, 2), (2, 5), (3, 7)])


def test_bert_untied_no_dropout() -> None:
    """Untied decoder (no weight-gradient sum), dropout off (no masks kept), three layers."""
    config = _tiny("bert-base-uncased", tie_word_embeddings=False, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, num_hidden_layers=3)
    assert_step_reconciles(config, bert_inputs, [(2, 3), (1, 6)])


def test_bert_trace_free() -> None:
    assert_trace_free(_tiny("bert-base-uncased"), bert_inputs, [(2, 9, "flash"), (4, 3, "math")])


# --- ViT: ViTForImageClassification (no pooler), class labels; ViTModel with its pooler ----------
# Tokens follow from the config (image_size / patch_size): the shapes are two image sizes.

def _vit_config(image_size: int, dropout: float, **overrides: Any) -> Any:
    from transformers import ViTConfig

    return ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, image_size=image_size, patch_size=4,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                     **overrides)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_vit_classification_training_step_reconciles(dropout: float) -> None:
    """ViT's default (no dropout) and dropout active everywhere; 3 classes, batch 1 (the
    [CLS]/position gradients need no batch sum) and 3, images of 5 and 10 tokens."""
    for image_size, qkv_bias in [(8, True), (12, False)]:
        config = _vit_config(image_size, dropout, num_labels=3, qkv_bias=qkv_bias)
        assert_step_reconciles(config, vit_inputs, [(1, 0), (3, 0)],
                               architecture="ViTForImageClassification")


def test_vit_model_pooler_training_step() -> None:
    """ViTModel as AutoModel builds it (with the pooler), loss on the pooled output."""
    config = _vit_config(8, 0.1)
    model = build_model(config, device="meta", dtype=torch.float32)
    problems: list[str] = []
    for kind in ("flash", "math"):
        for batch in (1, 2):
            pixels = vit_inputs(config, batch, 0)["pixel_values"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = trace_training_step(model, {"pixel_values": pixels}, attention_backward=kind,
                                        loss_fn=lambda out: out.pooler_output.sum())
            problems += [f"{kind} batch {batch}: {p}" for p in step_problems(t)]
    assert not problems, "training step does not reconcile:\n  " + "\n  ".join(problems[:30])


def test_vit_trace_free() -> None:
    """Trace-free with the default two classes (config.num_labels does not reach the config
    root: see formula_db/zoo/NOTES_encoders_and_ssm.md)."""
    assert_trace_free(_vit_config(8, 0.1), vit_inputs, [(2, 0, "flash"), (3, 0, "math")],
                      architecture="ViTForImageClassification", seq_param=None)


# --- T5: T5ForConditionalGeneration with labels (decoder input = labels shifted right) -----------
# Every layer but the last sums one more gradient: the shared relative position bias (charged to
# T5LayerSelfAttention) and, in the decoder, the encoder states (T5Attention of the
# cross-attention). Sub-layers know their layer from `block_index` (the enclosing block's position,
# recorded by tracing.hooks.module_attributes); blocks from `list_index`.

def _t5_config(**overrides: Any) -> Any:
    from transformers import T5Config

    values: dict[str, Any] = {"vocab_size": 128, "d_model": 64, "d_kv": 16, "d_ff": 128,
                              "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
                              "decoder_start_token_id": 0, "pad_token_id": 0}
    values.update(overrides)
    return T5Config(**values)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_t5_training_step_reconciles(layers: int) -> None:
    """Dropout 0.1 (T5's default) everywhere; tied lm_head; 1, 2 and 3 layers per stack."""
    config = _t5_config(num_layers=layers, num_decoder_layers=layers)
    assert_step_reconciles(config, t5_inputs, [(1, 3), (2, 5)])


def test_t5_untied_uneven_stacks() -> None:
    """Untied lm_head (the decoder stack has no weight-gradient sum, the encoder still has one),
    3 encoder and 2 decoder layers."""
    config = _t5_config(num_layers=3, num_decoder_layers=2, tie_word_embeddings=False)
    assert_step_reconciles(config, t5_inputs, [(2, 4)], kinds=("flash",))


def test_t5_trace_free() -> None:
    """Trace-free training step (labels, dropout, saved tensors, backward) equals the trace."""
    assert_trace_free(_t5_config(), t5_inputs, [(2, 9, "flash"), (3, 4, "math")])


# --- Mamba: MambaForCausalLM (tied lm_head), the slow path (mamba_inner_fn has no kernel) ---------
# Every call exact, forward and backward, except one mismatch of the builtin torch.nn.Linear that
# no bind can see: in_proj's output is transposed after the call, so its output gradient arrives
# non-contiguous and Linear's backward clones it (batch * seq * 2 inner elements read and
# written) when batch > 1 and seq > 1. `mamba_problems` checks that mismatch is exactly that clone
# and drops it; MambaMixer and everything above it include the clone and reconcile exactly.

def _mamba_config(**overrides: Any) -> Any:
    from transformers import MambaConfig

    values: dict[str, Any] = {"vocab_size": 128, "hidden_size": 64, "state_size": 16,
                              "num_hidden_layers": 2, "expand": 2, "conv_kernel": 4}
    values.update(overrides)
    return MambaConfig(**values)


def mamba_problems(t: Trace) -> list[str]:
    """`step_problems` less in_proj's backward bytes, when they exceed the Linear formula by
    exactly the clone of its transposed (batch, seq, 2 inner) output gradient."""
    clone: dict[str, int] = {}
    for call in t.calls:
        if call.module_path.endswith("mixer.in_proj"):
            batch, seq, width = call.outputs.shape
            clone[call.module_path] = (4 * batch * seq * width if batch > 1 and seq > 1 else 0)
    kept: list[str] = []
    for line in step_problems(t):
        path = line.split(" [", 1)[0]
        if path in clone and " backward bytes_" in line:
            measured, predicted = (int(x.split()[-1]) for x in line.split(": ", 1)[1].split(", "))
            if measured - predicted == clone[path] > 0:
                continue
        kept.append(line)
    return kept


def test_mamba_rmsnorm_training_step() -> None:
    """Every MambaRMSNorm call (the blocks' norms and norm_f) of a training step is exact,
    forward (with what it keeps for backward) and backward; nothing is unattributed."""
    config = _mamba_config()
    model = build_model(config, device="meta", dtype=torch.float32)
    problems: list[str] = []
    for batch, seq in [(1, 3), (2, 5)]:
        t = training_step(model, causal_inputs(config, batch, seq), "flash")
        assert sum(c.class_name.endswith("MambaRMSNorm") for c in t.calls) == 3
        problems += [f"batch {batch} seq {seq}: {p}" for p in step_problems(t)
                     if "[MambaRMSNorm]" in p or p.startswith("unattributed")]
    assert not problems, "training step does not reconcile:\n  " + "\n  ".join(problems[:30])


@pytest.mark.parametrize("overrides", [
    {},
    {"hidden_size": 36, "expand": 3, "state_size": 7, "time_step_rank": 2, "conv_kernel": 6,
     "num_hidden_layers": 3, "vocab_size": 100},
])
def test_mamba_training_step_reconciles(overrides: dict[str, Any]) -> None:
    """Every call of a Mamba training step is exact, forward and backward (the scan's
    per-step select_backward into zero (batch, inner, seq, state) tensors is quadratic in seq),
    at batch 1..3 and seq 1..5 (seq 1 and batch 1 take other copy paths); in_proj's gradient
    clone is checked exactly (`mamba_problems`)."""
    config = _mamba_config(**overrides)
    model = build_model(config, device="meta", dtype=torch.float32)
    problems: list[str] = []
    for batch, seq in [(2, 5), (1, 4), (3, 2), (1, 1), (2, 1)]:
        t = training_step(model, causal_inputs(config, batch, seq), "flash")
        problems += [f"batch {batch} seq {seq}: {p}" for p in mamba_problems(t)]
    assert not problems, "training step does not reconcile:\n  " + "\n  ".join(problems[:30])


def test_mamba_in_proj_clone_is_the_only_exemption() -> None:
    """The exemption above is not vacuous: at batch 2, seq 5 both in_proj calls differ from the
    Linear formula by exactly the clone (4 * 2 * 5 * 256 bytes read and written)."""
    config = _mamba_config()
    model = build_model(config, device="meta", dtype=torch.float32)
    t = training_step(model, causal_inputs(config, 2, 5), "flash")
    lines = [p for p in step_problems(t) if "in_proj" in p]
    assert len(lines) == 4 and all("measured" in p for p in lines)
    for line in lines:
        measured, predicted = (int(x.split()[-1]) for x in line.split(": ", 1)[1].split(", "))
        assert measured - predicted == 4 * 2 * 5 * 2 * config.intermediate_size
    assert mamba_problems(t) == []


def test_mamba_trace_free() -> None:
    assert_trace_free(_mamba_config(), causal_inputs, [(2, 5, "flash"), (1, 3, "flash")])


# --- Falcon: FalconForCausalLM (multi-query, parallel attention, rotary; the default config) ---
# The attention's backward runs index_put (the [-2]/[-1] list-index split of k and v out of the
# fused qkv) and slice_backward (the rotary halves and the q split) besides SDPA's backward.

def _falcon_config(**overrides: Any) -> Any:
    return _tiny("transformers:FalconConfig", **overrides)


@pytest.mark.parametrize("overrides", [
    {},
    {"hidden_size": 36, "num_attention_heads": 3, "ffn_hidden_size": 20, "vocab_size": 90,
     "num_hidden_layers": 3},
    {"hidden_size": 32, "num_attention_heads": 2, "ffn_hidden_size": 40, "vocab_size": 96,
     "num_hidden_layers": 1, "bias": True},
])
def test_falcon_training_step_reconciles(overrides: dict[str, Any]) -> None:
    """Every call exact, forward and backward, flash and math, batch 1..3 x seq 1..5; 1..3
    layers, with and without biases."""
    assert_step_reconciles(_falcon_config(**overrides), causal_inputs,
                           [(2, 5), (1, 4), (3, 2), (1, 1)])


def test_falcon_trace_free() -> None:
    assert_trace_free(_falcon_config(ffn_hidden_size=96), causal_inputs,
                      [(2, 5, "flash"), (3, 4, "math")])
