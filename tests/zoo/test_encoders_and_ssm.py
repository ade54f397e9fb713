"""Builtin zoo formulas for encoders (BERT, ViT), an encoder-decoder (T5) and a state-space model
(Mamba) reconcile exactly with the aten counter, and trace-free prediction equals a fresh trace.

Tiny configs on `meta`, float32. BERT and ViT are encoders (no decode phase); see
formula_db/zoo/NOTES_encoders_and_ssm.md for what each architecture covers and its limits.
"""
from __future__ import annotations

import pytest

from lm_predictor.models import load_preset, tiny_config
from lm_predictor.testing import assert_predicts, assert_reconciles

PREFILL = [(1, 3), (3, 5), (5, 7)]
PREDICT = [(7, 9), (2, 17)]


# --- BERT (BertForMaskedLM): encoder only, prefill ---------------------------------------------

@pytest.fixture(scope="module")
def bert_config():
    return tiny_config(load_preset("bert-base-uncased"))


def test_bert_reconciles(bert_config):
    assert_reconciles(bert_config, PREFILL, require_formulas=True)


def test_bert_predicts(bert_config):
    assert_predicts(bert_config, PREDICT)


# --- ViT (ViTModel, with pooler): encoder over image patches, prefill only ----------------------
# build_inputs makes token ids, so ViT is traced here with pixel_values of its own. The token
# count is fixed by the config (image_size, patch_size), so the three shapes use three configs:
# tokens = (image_size / patch_size)**2 + 1 = 5, 17, 37 at batches 1, 3, 5.

def _vit_config(image_size: int, qkv_bias: bool = True):
    from transformers import ViTConfig

    return ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, image_size=image_size, patch_size=4,
                     qkv_bias=qkv_bias)


def _trace_vit(config, batch: int, model=None):
    import torch

    from lm_predictor.api import run_trace
    from lm_predictor.models import build_model

    model = model or build_model(config)
    size = config.image_size
    pixels = torch.empty((batch, config.num_channels, size, size), device="meta")
    return run_trace(model, {"pixel_values": pixels})


@pytest.fixture(scope="module")
def registry():
    from formula_db.registry import Registry

    return Registry.default(include_user=False)


@pytest.mark.parametrize("batch,image_size", [(1, 8), (3, 16), (5, 24)])
def test_vit_reconciles(registry, batch, image_size):
    from lm_predictor.reconcile import reconcile
    from lm_predictor.testing import mismatches

    t = _trace_vit(_vit_config(image_size), batch)
    recon = reconcile(t, registry, 0.0)
    assert not recon.uncovered_classes
    assert mismatches(t, recon) == []


@pytest.mark.parametrize("batch,image_size,qkv_bias", [(7, 12, False), (2, 20, True)])
def test_vit_predicts(registry, batch, image_size, qkv_bias):
    from lm_predictor.predict.predictor import Predictor

    config = _vit_config(image_size, qkv_bias)
    predicted = Predictor.for_config(config, registry=registry).point(batch, 1)
    measured = _trace_vit(config, batch).totals.as_dict()
    assert {m: predicted[m] for m in measured} == measured


# --- T5 (T5ForConditionalGeneration): encoder-decoder, prefill only ------------------------------
# lm_predictor.inputs gives decoder_input_ids of the same length as input_ids and supports no
# decode phase for encoder-decoder models, so only prefill is checked.

@pytest.fixture(scope="module")
def t5_config():
    from transformers import T5Config

    return T5Config(vocab_size=128, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                    num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0)


def test_t5_reconciles(t5_config):
    assert_reconciles(t5_config, PREFILL, require_formulas=True)


def test_t5_predicts(t5_config):
    assert_predicts(t5_config, PREDICT)


# --- Mamba (MambaForCausalLM): state-space model, slow torch path, prefill and decode ------------
# lm_predictor's decode hands Mamba an empty DynamicCache (filled_cache only fills 4-D KV layers),
# so the decode step runs the full-sequence path on one token; the formulas model exactly that.
# x_proj and out_proj receive transposed (non-contiguous) 3-D inputs, which F.linear lowers to
# aten.bmm with the weight expanded over the batch in inference mode: the torch.nn.Linear builtin
# models that path (tests/test_builtins_measured.py::test_linear_non_contiguous_input), so every
# call reconciles exactly, with no exemption.

MAMBA_DECODE = [(1, 1, "decode", 7), (3, 1, "decode", 9), (5, 1, "decode", 11)]


@pytest.fixture(scope="module")
def mamba_config():
    from transformers import MambaConfig

    return MambaConfig(vocab_size=128, hidden_size=64, state_size=16, num_hidden_layers=2,
                       expand=2, conv_kernel=4)


def test_mamba_reconciles(mamba_config):
    assert_reconciles(mamba_config, PREFILL + MAMBA_DECODE, require_formulas=True)


def test_mamba_predicts(mamba_config):
    assert_predicts(mamba_config, PREDICT + [(4, 1, "decode", 13)])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_mamba_recurrent_decode_step(mamba_config, registry, batch, dtype):
    """The 'recurrent_decode_step' breakdown of MambaMixer equals a real decode step: one token on
    a cache initialised by a 7-token prefill (causal_conv1d_update + selective_state_update), in
    each dtype (the cached ssm state is float32 in all of them)."""
    import torch
    from transformers import DynamicCache

    from formula_db.bind import make_roots
    from lm_predictor.api import run_trace
    from lm_predictor.models import build_model

    model = build_model(mamba_config, dtype=getattr(torch, dtype))
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=torch.empty((batch, 7), dtype=torch.long, device="meta"), cache=cache,
              use_cache=True)
    t = run_trace(model, {"input_ids": torch.empty((batch, 1), dtype=torch.long, device="meta"),
                          "cache": cache, "use_cache": True})
    mixers = [c for c in t.calls if c.class_name.endswith("MambaMixer")]
    assert len(mixers) == mamba_config.num_hidden_layers
    for call in mixers:
        params = registry.bind(call.formula_key, make_roots(call.attributes, call.inputs,
                                                            call.kwargs, call.outputs, t.config))
        (step,) = [v for name, _, v in registry.breakdown(call.formula_key, params)
                   if name == "recurrent_decode_step"]
        assert step == dict(call.inclusive.as_dict(), activation_bytes=call.activation_bytes)
