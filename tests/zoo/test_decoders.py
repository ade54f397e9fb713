"""Zoo formulas of decoder-only architectures reconcile exactly and predict without a trace.

Architectures: Llama, Mistral, Qwen2, GPT-2, OPT, Qwen3, Phi-3 (formula_db/zoo/<arch>.json) and
the shared transformers activations and Conv1D (formula_db/zoo/common.json). Each model is a tiny
config traced on `meta`; every call must match its formula on all five metrics at three odd
prefill shapes and three odd decode points, and trace-free prediction must equal a fresh trace
at shapes not used for reconciliation. Exceptions are listed in formula_db/zoo/NOTES_decoders.md.
"""
from __future__ import annotations

import pytest
import torch

from formula_db.registry import Registry
from lm_predictor.models import load_preset, tiny_config
from lm_predictor.reconcile import reconcile
from lm_predictor.testing import assert_predicts, assert_reconciles, mismatches
from tracing import trace

PREFILL = [(1, 3), (3, 5), (5, 7)]
DECODE = [(1, 1, "decode", 7), (3, 1, "decode", 9), (5, 1, "decode", 11)]
PREDICT = [(7, 9), (2, 17), (4, 1, "decode", 13)]


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry.default(include_user=False)
    assert reg.check() == []
    return reg


def test_activations(registry: Registry) -> None:
    import transformers.activations as A
    from transformers.pytorch_utils import Conv1D

    modules = [A.GELUActivation(), A.GELUTanh(), A.SiLUActivation(), A.MishActivation(),
               A.NewGELUActivation(), A.AccurateGELUActivation(), A.FastGELUActivation(),
               A.QuickGELUActivation(), A.ClippedGELUActivation(-10, 10),
               A.ReLUSquaredActivation(), A.LaplaceActivation(), A.LinearActivation()]
    with torch.device("meta"):
        modules.append(Conv1D(24, 12))
    for module in modules:
        for shape in [(3, 5, 12), (1, 7, 12), (9, 12)]:
            x = torch.empty(shape, device="meta")
            with torch.inference_mode(), trace(module) as t:
                module(x)
            recon = reconcile(t, registry)
            assert not recon.uncovered_classes, recon.uncovered_classes
            assert mismatches(t, recon) == [], (type(module).__name__, shape)


METRICS = ("flops", "vector_flops", "bytes_read", "bytes_written", "activation_bytes")


def check_architecture(config, layer_key: str | None = None,
                       first_layer: str = "model.layers.0") -> None:
    """Exact reconciliation at PREFILL and DECODE (every call, every metric, no exemption: the
    decoder layers bind their cache length with `module.list_index`), then trace-free
    prediction at PREDICT. `layer_key`/`first_layer` name the decoder layer (kept for callers)."""
    assert_reconciles(config, PREFILL, require_formulas=True)
    assert_reconciles(config, DECODE, require_formulas=True)
    assert_predicts(config, PREDICT, metrics=METRICS[:4])


def _tiny(preset: str, **overrides):
    return tiny_config(load_preset(preset), **overrides)


def test_llama() -> None:
    check_architecture(_tiny("meta-llama/Llama-3.1-8B"),
                       "transformers__models__llama__modeling__llama__LlamaDecoderLayer")


def test_mistral() -> None:
    check_architecture(_tiny("mistralai/Mistral-7B-v0.1"),
                       "transformers__models__mistral__modeling__mistral__MistralDecoderLayer")


def test_qwen2() -> None:
    check_architecture(_tiny("Qwen/Qwen2.5-7B"),
                       "transformers__models__qwen2__modeling__qwen2__Qwen2DecoderLayer")


def test_qwen3() -> None:
    import transformers

    check_architecture(tiny_config(transformers.Qwen3Config()),
                       "transformers__models__qwen3__modeling__qwen3__Qwen3DecoderLayer")


def test_phi3() -> None:
    check_architecture(_tiny("microsoft/Phi-3-mini-4k-instruct"),
                       "transformers__models__phi3__modeling__phi3__Phi3DecoderLayer")


def test_gpt2() -> None:
    check_architecture(_tiny("gpt2"), "transformers__models__gpt2__modeling__gpt2__GPT2Block",
                       first_layer="transformer.h.0")


def test_opt() -> None:
    check_architecture(_tiny("facebook/opt-125m"),
                       "transformers__models__opt__modeling__opt__OPTDecoderLayer",
                       first_layer="model.decoder.layers.0")
