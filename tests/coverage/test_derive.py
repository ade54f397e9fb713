"""Derivation: exact closed forms for non-zoo architectures, verified at unseen shapes; piecewise
behaviour and foreign configs refused."""
from __future__ import annotations

import pytest

from formula_db.bind import make_roots
from formula_db.errors import FormulaError
from formula_db.registry import Registry
from lm_predictor.coverage import cover_model
from lm_predictor.derive import Deriver, basis, fit_poly, poly_text, with_entries
from lm_predictor.reconcile import reconcile
from lm_predictor.testing import trace_config

from .conftest import traced

UNSEEN = ((2, 11, "prefill", 0), (6, 1, "decode", 15))


def test_exact_fit_recovers_a_known_polynomial() -> None:
    data = [({"b": b, "s": s}, 3 * b * s * s + 7 * s - 2 * b + 11) for b in (1, 2) for s in (1, 2, 3)]
    poly = fit_poly(data, ["b", "s"])
    assert poly is not None
    assert poly_text(poly) == "11 - 2 * ${b} + 7 * ${s} + 3 * ${b} * ${s} ** 2"
    assert len(basis(["b", "s"])) == 8
    # a non-polynomial target (a step) is not fitted exactly
    step = [({"x": x}, 0 if x < 4 else 5) for x in (1, 2, 3, 4, 5)]
    assert fit_poly(step, ["x"]) is None


@pytest.mark.parametrize("fixture", ["olmo", "stablelm", "olmoe"])
def test_derived_entries_are_exact_at_unseen_shapes(fixture, request) -> None:
    config, samples = request.getfixturevalue(fixture)
    registry = Registry.default(include_user=False)
    report = cover_model(config, registry, store=False, transfer=False, samples=samples,
                         backward=False)
    assert report.count("none") == 0, report.lines()
    assert report.count("derived") == len(report.outcomes) >= 4
    sources = {e.validation.source for e in report.entries}
    assert sources == {"derived"}
    assert all(e.validation.config_hash for e in report.entries)
    reg = with_entries(registry, report.entries)
    for b, s, phase, kv in UNSEEN:
        t = trace_config(config, b, s, phase, kv)
        recon = reconcile(t, reg)
        assert not recon.uncovered_classes
        bad = [(t.calls[r.call_id].module_path, r.error, r.measured, r.predicted)
               for r in recon.calls if r.status != "exact"]
        assert not bad, bad[:3]
        assert recon.coverage == {"flops": 1.0, "bytes": 1.0}


def test_moe_block_is_derived_with_nested_calls(olmoe) -> None:
    config, samples = olmoe
    registry = Registry.default(include_user=False)
    report = cover_model(config, registry, store=False, transfer=False, samples=samples,
                         backward=False)
    moe = next(e for e in report.entries if e.full_class_name.endswith("OlmoeSparseMoeBlock"))
    assert any(k.endswith("OlmoeExperts") for k in moe.module_depends)
    assert any(k.endswith("OlmoeTopKRouter") for k in moe.module_depends)


def test_sliding_window_past_the_window_is_refused() -> None:
    config, samples = traced("Starcoder2Config", sliding_window=4)
    report = cover_model(config, Registry.default(include_user=False), store=False,
                         transfer=False, samples=samples, backward=False)
    attn = next(o for o in report.outcomes if o.class_name.endswith("Starcoder2Attention"))
    assert attn.source == "none"
    assert "polynomial" in attn.reason or "held-out" in attn.reason


def test_derived_entry_refuses_another_config_and_chunked_prefill(olmo) -> None:
    config, samples = olmo
    registry = Registry.default(include_user=False)
    deriver = Deriver(samples, registry, "olmo")
    key = "transformers__models__olmo__modeling__olmo__OlmoAttention"
    entry = deriver.derive(key, "transformers.models.olmo.modeling_olmo.OlmoAttention").entry
    assert entry is not None
    call = next(c for c in samples[0].trace.calls if c.formula_key == key)
    roots = make_roots(call.attributes, call.inputs, call.kwargs, call.outputs,
                       samples[0].trace.config)
    reg = with_entries(registry, [entry])
    assert reg.bind(key, roots)["batch"] == samples[0].point.batch
    other = dict(samples[0].trace.config, hidden_size=128)
    with pytest.raises(FormulaError, match="derived for the olmo config"):
        reg.bind(key, make_roots(call.attributes, call.inputs, call.kwargs, call.outputs, other))
    chunked = trace_config(config, 2, 3, "prefill", 4)
    ccall = next(c for c in chunked.calls if c.formula_key == key)
    with pytest.raises(FormulaError, match="chunked prefill"):
        reg.bind(key, make_roots(ccall.attributes, ccall.inputs, ccall.kwargs, ccall.outputs,
                                 chunked.config))


def test_derived_entry_refuses_lengths_past_the_sliding_window() -> None:
    config, samples = traced("Starcoder2Config", sliding_window=32)
    registry = Registry.default(include_user=False)
    report = cover_model(config, registry, store=False, transfer=False, samples=samples,
                         backward=False)
    assert report.count("none") == 0, report.lines()  # every sample is inside the window
    reg = with_entries(registry, report.entries)
    inside = reconcile(trace_config(config, 1, 30), reg)
    assert all(r.status == "exact" for r in inside.calls)
    past = reconcile(trace_config(config, 1, 40), reg)
    errors = [r.error for r in past.calls if r.error]
    assert errors and all("sliding_window=32" in e for e in errors)
    assert past.coverage["flops"] < 1.0
