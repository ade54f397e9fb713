"""Transferred and derived entries in a training step: after `cover_model` (backward on), every
call of a traced training step of a non-zoo architecture reconciles exactly, forward and
backward, at shapes not used for fitting, under both attention backward kinds.

OLMo (tiny, meta, float32) has transferred entries whose source backward is exact (attention,
MLP, rotary: kept) and derived ones (bias-free LayerNorm, decoder layer, model, causal LM with
its loss); StableLM derives its attention (partial rotary, own SDPA op: the backward differs
between the flash and math kinds, so the fit splits on `${flash}`). A transferred entry whose
backward is wrong is re-derived, not kept.
"""
from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import transformers

from formula_db.registry import Registry
from formula_db.schema import FormulaEntry
from lm_predictor.coverage import cover_model
from lm_predictor.derive import sample_traces, with_entries
from lm_predictor.derive_backward import (BackwardDeriver, TRAIN_FIT_POINTS,
                                          TRAIN_HELD_OUT_POINTS, cover_backward,
                                          training_problem, training_samples)
from lm_predictor.models import build_model, tiny_config
from tests.training.test_zoo_backward import step_problems
from tracing.train import trace_training_step

BASE = Registry.default(include_user=False)
# (batch, seq, attention backward kind), none of them a fit or held-out point of the derivation
CHECK = [(2, 9, "flash"), (5, 3, "math")]


def _problems(config: Any, registry: Registry) -> list[str]:
    fitted = {(p.batch, p.seq_len) for p in TRAIN_FIT_POINTS + TRAIN_HELD_OUT_POINTS}
    model = build_model(config, device="meta", dtype=torch.float32)
    problems: list[str] = []
    for batch, seq, kind in CHECK:
        assert (batch, seq) not in fitted
        ids = torch.zeros((batch, seq), dtype=torch.long, device="meta")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = trace_training_step(model, {"input_ids": ids}, attention_backward=kind)
        problems += [f"{kind} ({batch}, {seq}): {p}" for p in step_problems(t, registry)]
    return problems


@pytest.fixture(scope="module")
def olmo() -> dict[str, Any]:
    config = tiny_config(transformers.OlmoConfig())
    infer = sample_traces(config)
    forward = cover_model(config, BASE, store=False, samples=infer, backward=False)
    work = with_entries(BASE, forward.entries)
    train = training_samples(config)
    report = cover_backward(config, work, infer, model_type="olmo", train=train)
    entries = [report.entries.get(e.key, e) for e in forward.entries]
    return {"config": config, "infer": infer, "train": train, "forward": forward,
            "report": report, "registry": with_entries(BASE, entries)}


def test_olmo_training_step_reconciles(olmo: dict[str, Any]) -> None:
    report = olmo["report"]
    status = {o.class_name.rsplit(".", 1)[-1]: o.status for o in report.outcomes}
    assert status == {"OlmoAttention": "kept", "OlmoMLP": "kept", "OlmoRotaryEmbedding": "kept",
                      "OlmoLayerNorm": "derived", "OlmoDecoderLayer": "derived",
                      "OlmoModel": "derived", "OlmoForCausalLM": "derived"}, report.lines()
    # before: the derived classes have no backward and no training-mode activation bytes
    before = _problems(olmo["config"], with_entries(BASE, olmo["forward"].entries))
    assert any("OlmoLayerNorm]: no backward formula" in p for p in before)
    assert any("[OlmoForCausalLM] forward activation_bytes" in p for p in before)
    problems = _problems(olmo["config"], olmo["registry"])
    assert not problems, "\n".join(problems[:20])


def test_derived_entries_stay_exact_in_inference(olmo: dict[str, Any]) -> None:
    """The training terms are gated on grad_enabled: every sampled inference call (prefill and
    decode) is still exact with the entries that gained a backward."""
    from lm_predictor.reconcile import reconcile

    for s in olmo["infer"]:
        recon = reconcile(s.trace, olmo["registry"])
        assert all(r.status == "exact" for r in recon.calls), s.point


def test_wrong_transferred_backward_is_rederived(olmo: dict[str, Any]) -> None:
    """A transferred entry whose backward block is off by one FLOP is not kept: the class is
    derived again and given a fitted backward that is exact on every training sample."""
    key = "transformers__models__olmo__modeling__olmo__OlmoMLP"
    reg = olmo["registry"]
    entry = reg.get(key)
    assert entry.validation.source == "transferred" and entry.backward is not None
    data = entry.model_dump(mode="json")
    data["backward"]["flops"] = f"{data['backward']['flops']} + 1"
    broken = FormulaEntry.model_validate(data)
    work = with_entries(reg, [broken])
    assert training_problem(broken, work, BackwardDeriver(olmo["train"], [], work).calls(key))
    new, outcome = BackwardDeriver(olmo["train"], olmo["infer"], work, "olmo").visit(
        key, entry.full_class_name)
    assert outcome.status == "derived" and "transferred backward not exact" in outcome.reason
    assert new is not None and new.validation.source == "derived" and new.backward is not None
    assert new.validation.transferred_from == entry.validation.transferred_from
    # the transferred parameters come first, unchanged: callers' nested calls stay valid
    names = [p.name for p in entry.parameters]
    assert [p.name for p in new.parameters][:len(names)] == names
    deriver = BackwardDeriver(olmo["train"], olmo["infer"], work)
    assert training_problem(new, work, deriver.calls(key)) is None


def test_stablelm_cover_model_gives_backward() -> None:
    config = tiny_config(transformers.StableLmConfig())
    report = cover_model(config, BASE, store=False)
    assert report.backward is not None
    assert {o.status for o in report.backward.outcomes} <= {"kept", "derived"}, report.lines()
    attention = next(e for e in report.entries if e.key.endswith("StableLmAttention"))
    assert attention.validation.source == "derived"
    assert "${flash}" in attention.backward.vector_flops  # flash and math backward differ
    problems = _problems(config, with_entries(BASE, report.entries))
    assert not problems, "\n".join(problems[:20])
