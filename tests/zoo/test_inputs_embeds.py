"""Zoo language models called with `inputs_embeds`, as a vision- or audio-language wrapper calls
them: the embedding does not run inside the model, so its cost must not be predicted there
(the `ids` parameter of the *Model / *ForCausalLM entries); every call reconciles exactly.

Checked on the language model alone (Llama, Qwen2: `model.model(inputs_embeds=...)`, meta, float32,
prefill) and inside a real wrapper: GOT-OCR2 (a Qwen2 language model under a vision tower; its
config's text values reach the Qwen2 formulas through `formula_db.bind.plain_config`).
"""
from __future__ import annotations

import warnings

import pytest
import torch

from formula_db.registry import Registry
from lm_predictor.models import build_model, load_preset, tiny_config
from lm_predictor.reconcile import reconcile
from lm_predictor.testing import mismatches
from tracing import trace

REGISTRY = Registry.default(include_user=False)


@pytest.mark.parametrize("preset", ["meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-7B"])
def test_language_model_with_inputs_embeds(preset: str) -> None:
    config = tiny_config(load_preset(preset))
    model = build_model(config, device="meta", dtype=torch.float32)
    for batch, seq in ((1, 3), (2, 5)):
        embeds = torch.empty(batch, seq, config.hidden_size, device="meta")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.inference_mode(), trace(model) as t:
                model.model(inputs_embeds=embeds)
        recon = reconcile(t, REGISTRY)
        assert not recon.uncovered_classes
        assert not mismatches(t, recon), mismatches(t, recon)
        top = recon.calls[0]
        # no embedding call inside, and the prediction has no embedding term
        assert not any(c.class_name == "torch.nn.Embedding" for c in t.calls)
        assert top.predicted["bytes_read"] == t.calls[0].inclusive.bytes_read


def test_wrapped_language_model_binds_text_config() -> None:
    """GOT-OCR2 keeps Qwen2's sizes in `text_config`: the Qwen2 calls bind and are exact."""
    from transformers import GotOcr2Config

    config = tiny_config(GotOcr2Config())
    model = build_model(config, device="meta", dtype=torch.float32)
    ids = torch.zeros(1, 4, dtype=torch.long, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.inference_mode(), trace(model) as t:
            model(input_ids=ids)
    recon = reconcile(t, REGISTRY)
    qwen = [(c, r) for c, r in zip(t.calls, recon.calls) if ".qwen2." in c.class_name]
    assert qwen and all(r.status == "exact" for _, r in qwen), \
        [(c.module_path, r.error) for c, r in qwen if r.status != "exact"][:5]
