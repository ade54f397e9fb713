"""cover_model end to end: stored entries, coverage by source, prediction equal to a fresh trace;
and coverage that no longer counts failed binds."""
from __future__ import annotations

from formula_db.registry import Registry
from formula_db.store import load_database
from lm_predictor.coverage import cover_model
from lm_predictor.derive import with_entries
from lm_predictor.models import tiny_config
from lm_predictor.reconcile import reconcile
from lm_predictor.testing import assert_predicts, trace_config


def test_cover_then_predict_equals_a_fresh_trace(olmoe, tmp_path) -> None:
    config, samples = olmoe
    path = tmp_path / "formulas.json"
    report = cover_model(config, Registry.default(path), user_path=path, samples=samples)
    assert report.stored_in == path
    stored = load_database(path).entries
    assert {e.key for e in report.entries} == set(stored)
    assert report.count("transferred") >= 1 and report.count("derived") >= 1
    assert not report.before.fully_exact and report.after.fully_exact
    assert report.after.covered_flops == 1.0 and report.after.covered_bytes == 1.0
    assert report.before.bytes_by_source.get("none", 0) > 0.5
    transferred = [e for e in stored.values() if e.validation.source == "transferred"]
    assert all(e.validation.transferred_from for e in transferred)
    # predict (trace-free, AST and compiled closed form) equals fresh traces at unseen shapes
    assert_predicts(config, [(3, 13), (2, 9), (4, 1, "decode", 21), (1, 1, "decode", 30)],
                    registry=Registry.default(path))


def test_failed_binds_do_not_count_as_covered(olmo) -> None:
    config, samples = olmo
    registry = Registry.default(include_user=False)
    report = cover_model(config, registry, store=False, transfer=False, samples=samples)
    reg = with_entries(registry, report.entries)
    other = tiny_config(type(config)())
    other.intermediate_size = 2 * config.intermediate_size  # another config of the same class
    t = trace_config(other, 2, 5)
    recon = reconcile(t, reg)
    failed = [r for r in recon.calls if r.error]
    assert failed and all("derived for the olmo config" in r.error for r in failed)
    # independently: only calls whose formula evaluates (builtin torch.nn ones here) explain work
    by_id = {r.call_id: r for r in recon.calls}
    explained, stack = 0, list(t.roots())
    while stack:
        call = stack.pop()
        r = by_id[call.call_id]
        if r.status != "no_formula" and r.error is None:
            explained += call.inclusive.flops
        else:
            stack.extend(t.children(call))
    assert recon.coverage["flops"] == explained / t.totals.flops < 1.0


def test_predict_refuses_a_dtype_the_entries_were_not_derived_for(olmo, tmp_path) -> None:
    import pytest

    from formula_db.errors import FormulaError
    from lm_predictor.predict.predictor import Predictor

    config, samples = olmo
    path = tmp_path / "formulas.json"
    cover_model(config, Registry.default(path), user_path=path, samples=samples)
    registry = Registry.default(path)
    assert Predictor.for_config(config, registry=registry).point(2, 3)["flops"] > 0
    with pytest.raises(FormulaError, match="4-byte activations"):
        Predictor.for_config(config, registry=registry, dtype="bfloat16")


def test_a_second_config_re_derives_its_entries(olmo, tmp_path) -> None:
    from lm_predictor.derive import sample_traces

    config, samples = olmo
    path = tmp_path / "formulas.json"
    first = cover_model(config, Registry.default(path), user_path=path, samples=samples)
    derived = {e.key for e in first.entries if e.validation.source == "derived"}
    assert derived
    other = tiny_config(type(config)())
    other.intermediate_size = config.intermediate_size + 32
    other_samples = sample_traces(other)
    second = cover_model(other, Registry.default(path), user_path=path, samples=other_samples)
    redone = {o.key for o in second.outcomes if o.source == "derived"}
    assert derived <= redone and second.after.fully_exact
    stored = Registry.default(path)
    assert all(stored.get(k).validation.config_hash == second.config_hash for k in derived)


def test_cover_in_bfloat16_then_predict_equals_a_bfloat16_trace() -> None:
    """Entries are sampled and verified in the run's dtype: an OLMo covered in bfloat16 (as
    `analyze --dtype bfloat16` does) reconciles exactly and predicts bfloat16 traces at unseen
    shapes, the top-level entry's size guard included."""
    import torch
    from transformers import OlmoConfig

    from formula_db.registry import Registry
    from lm_predictor.models import tiny_config
    from lm_predictor.predict.predictor import Predictor
    from lm_predictor.testing import trace_config

    config = tiny_config(OlmoConfig())
    registry = Registry.default(include_user=False)
    report = cover_model(config, registry, store=False, dtype=torch.bfloat16)
    assert report.after.fully_exact, report.lines()
    covered = with_entries(registry, list(report.entries))
    predictor = Predictor.for_config(config, registry=covered, dtype="bfloat16")
    for b, s in ((3, 11), (2, 6)):
        measured = trace_config(config, b, s, dtype="bfloat16").totals.as_dict()
        predicted = predictor.point(b, s, 0)
        assert {m: predicted[m] for m in measured} == measured
