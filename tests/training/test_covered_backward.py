"""Transferred and derived entries in a training step: after `cover_model` (backward on), every
call of a traced training step of a non-zoo architecture reconciles exactly, forward and
backward, at shapes not used for fitting, under both attention backward kinds.

OLMo (tiny, meta, float32) has transferred entries whose source backward is exact (attention,
MLP, rotary: kept) and derived ones (bias-free LayerNorm, decoder layer, model, causal LM with
its loss); StableLM derives its attention (partial rotary, own SDPA op: the backward differs
between the flash and math kinds, so the fit splits on `${flash}`). A transferred entry whose
backward is wrong is not kept: another source is adopted, or the backward is derived.
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


def _broken_mlp(olmo: dict[str, Any]) -> tuple[str, FormulaEntry, FormulaEntry, Registry]:
    """OLMo's transferred MLP with its backward FLOPs off by one, in the OLMo registry."""
    key = "transformers__models__olmo__modeling__olmo__OlmoMLP"
    entry = olmo["registry"].get(key)
    assert entry.validation.source == "transferred" and entry.backward is not None
    data = entry.model_dump(mode="json")
    data["backward"]["flops"] = f"{data['backward']['flops']} + 1"
    broken = FormulaEntry.model_validate(data)
    work = with_entries(olmo["registry"], [broken])
    assert training_problem(broken, work, BackwardDeriver(olmo["train"], [], work).calls(key))
    return key, entry, broken, work


def test_wrong_transferred_backward_is_replaced_by_another_source(olmo: dict[str, Any]) -> None:
    """A transferred entry whose backward is wrong is not kept: another source with the same
    parameters (so callers' nested calls stay valid) and an exact backward is adopted."""
    key, entry, broken, work = _broken_mlp(olmo)
    new, outcome = BackwardDeriver(olmo["train"], olmo["infer"], work, "olmo").visit(
        key, entry.full_class_name)
    assert outcome.status == "retransferred", outcome
    assert new is not None and new.validation.source == "transferred"
    assert new.validation.transferred_from != broken.validation.transferred_from
    assert [p.name for p in new.parameters] == [p.name for p in broken.parameters]
    deriver = BackwardDeriver(olmo["train"], olmo["infer"], work)
    assert training_problem(new, work, deriver.calls(key)) is None


def test_wrong_transferred_backward_is_derived_when_no_source_fits(
        olmo: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """With no other source, the backward is derived over the transferred forward: the
    transferred parameters stay first (callers' nested calls stay valid), shape variables and
    the config guard are appended, and the result is exact on every training sample."""
    key, entry, broken, work = _broken_mlp(olmo)
    monkeypatch.setattr(BackwardDeriver, "_retransfer", lambda *args: None)
    new, outcome = BackwardDeriver(olmo["train"], olmo["infer"], work, "olmo").visit(
        key, entry.full_class_name)
    assert outcome.status == "derived" and "transferred backward not exact" in outcome.reason
    assert new is not None and new.validation.source == "derived" and new.backward is not None
    assert new.validation.transferred_from == entry.validation.transferred_from
    names = [p.name for p in entry.parameters]
    assert [p.name for p in new.parameters][:len(names)] == names
    assert {"batch", "seq_len", "holds_for_config"} <= {p.name for p in new.parameters}
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


def test_trace_free_training_step_after_cover(olmo: dict[str, Any]) -> None:
    """`Predictor.training_step` from the config alone (the covered OLMo entries) equals the
    traced step's totals at shapes not used for fitting; the zoo's Llama too."""
    from lm_predictor.models import load_preset
    from lm_predictor.predict.predictor import Predictor

    cases = [(olmo["config"], olmo["registry"]),
             (tiny_config(load_preset("meta-llama/Llama-3.1-8B")), BASE)]
    for config, registry in cases:
        predictor = Predictor.for_config(config, registry=registry)
        model = build_model(config, device="meta", dtype=torch.float32)
        for batch, seq, kind in CHECK:
            ids = torch.zeros((batch, seq), dtype=torch.long, device="meta")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = trace_training_step(model, {"input_ids": ids}, attention_backward=kind)
            predicted = predictor.training_step(batch, seq, kind)
            totals = t.step_totals()
            assert predicted["backward"] == totals.backward.as_dict()
            assert predicted["step"] == totals.measured.as_dict()
            assert predicted["forward"]["activation_bytes"] == t.calls[0].activation_bytes


def test_training_step_without_backward_is_refused(olmo: dict[str, Any]) -> None:
    """A top-level entry without a backward block (forward-only coverage) is refused with the
    fix named."""
    from formula_db.errors import UnknownKeyError
    from lm_predictor.predict.predictor import Predictor

    registry = with_entries(BASE, olmo["forward"].entries)
    predictor = Predictor.for_config(olmo["config"], registry=registry)
    with pytest.raises(UnknownKeyError, match="analyze --phase train"):
        predictor.training_step(1, 4)


def test_cli_predict_phase_train_equals_a_traced_step(tmp_path, capsys) -> None:
    """`lm-predictor predict --phase train` (trace-free) gives the traced step's totals, with
    the forward and backward parts, for both attention backward kinds."""
    import json

    from lm_predictor.cli import main
    from lm_predictor.models import load_preset

    config = tiny_config(load_preset("meta-llama/Llama-3.1-8B"))
    path = tmp_path / "config.json"
    config.to_json_file(str(path))
    model = build_model(config, device="meta", dtype=torch.float32)
    for kind in ("flash", "math"):
        assert main(["predict", "--model-id", str(path), "--phase", "train", "--batch-size",
                     "3", "--seq-len", "6", "--attention-backward", kind, "--dtype", "float32",
                     "--no-store", "--json"]) == 0
        row = json.loads(capsys.readouterr().out)["points"][0]
        ids = torch.zeros((3, 6), dtype=torch.long, device="meta")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = trace_training_step(model, {"input_ids": ids}, attention_backward=kind)
        totals = t.step_totals()
        assert {m: row[m] for m in totals.measured.as_dict()} == totals.measured.as_dict()
        assert {m: row[f"backward_{m}"] for m in totals.backward.as_dict()} == \
            totals.backward.as_dict()
        assert row["activation_bytes"] == t.calls[0].activation_bytes
    assert main(["predict", "--model-id", str(path), "--phase", "train", "--kv-len", "4",
                 "--no-store"]) != 0


def test_analyze_train_derives_backward_for_forward_only_entries(olmo: dict[str, Any],
                                                                  tmp_path) -> None:
    """Entries stored forward-only (an earlier inference cover) get their backward when a
    training step is analyzed: every call then reconciles forward and backward."""
    from formula_db.store import save_entries
    from lm_predictor.api import analyze

    path = tmp_path / "formulas.json"
    save_entries(path, olmo["forward"].entries)
    config_file = tmp_path / "config.json"
    olmo["config"].to_json_file(str(config_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = analyze(str(config_file), batch_size=2, seq_len=6, phase="train",
                         formulas=str(path), db=None, dtype="float32")
    registry = Registry.default(str(path))
    assert registry.get("transformers__models__olmo__modeling__olmo__OlmoForCausalLM").backward
    assert all(r.status == "exact" and r.backward is not None and r.backward.status == "exact"
               for r in result.recon.calls), result.recon.uncovered_classes
