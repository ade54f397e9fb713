"""Covering models that are not causal decoders with a KV cache, or that do not trace on plain meta.

Each model is covered once (tiny config, meta) by what `lm_predictor.sampling` says it can run:
an encoder (ALBERT, through `analyze` of a local config) and an encoder-decoder model (mT5) from
prefill points only, a vision model (DeiT) from batch-only points, BioGPT (whose forward reads a
mask value on meta) with answered scalars, prefill and decode. The covered entries must then bind
and equal a fresh trace at a shape no sample used.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from formula_db.registry import Registry
from lm_predictor.coverage import CoverageReport, cover_model
from lm_predictor.derive import HELD_OUT_POINTS, FIT_POINTS, Point, with_entries
from lm_predictor.models import build_model, tiny_config
from lm_predictor.reconcile import reconcile
from lm_predictor.sampling import plan_points, sample_points
from lm_predictor.testing import trace_config
from tracing import Trace, trace


def _builtin() -> Registry:
    return Registry.default(include_user=False)


def _covered(config: Any, **kwargs: Any) -> tuple[Any, CoverageReport, Registry]:
    report = cover_model(config, _builtin(), store=False, **kwargs)
    return config, report, with_entries(_builtin(), report.entries)


def _all_exact(t: Trace, registry: Registry) -> list[str]:
    """Lines for every call that has no formula, does not bind or differs from measurement."""
    return [f"{t.calls[r.call_id].module_path or '(model)'} {r.formula_key}: {r.status} "
            f"{r.error or ''}" for r in reconcile(t, registry).calls if r.status != "exact"]


@pytest.fixture(scope="module")
def albert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Registry]:
    """ALBERT covered by `analyze` of a local tiny config (entries stored in a temp database)."""
    import lm_predictor

    folder = tmp_path_factory.mktemp("albert")
    config = tiny_config(transformers.AlbertConfig())
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    formulas = folder / "formulas.json"
    result = lm_predictor.analyze(str(folder), batch_size=2, seq_len=6, db=None,
                                  formulas=str(formulas))
    return config, result, Registry.default(str(formulas))


@pytest.fixture(scope="module")
def mt5() -> tuple[Any, CoverageReport, Registry]:
    return _covered(tiny_config(transformers.MT5Config()))


@pytest.fixture(scope="module")
def deit() -> tuple[Any, CoverageReport, Registry]:
    config = tiny_config(transformers.DeiTConfig(image_size=32, patch_size=8))
    return _covered(config, model=build_model(config, architecture="DeiTForImageClassification"))


@pytest.fixture(scope="module")
def biogpt() -> tuple[Any, CoverageReport, Registry]:
    return _covered(tiny_config(transformers.BioGptConfig()))


def test_plan_points_cuts_the_grid_to_what_a_model_runs() -> None:
    assert plan_points("decoder", FIT_POINTS, HELD_OUT_POINTS) == (FIT_POINTS, HELD_OUT_POINTS)
    fit, held = plan_points("prefill", FIT_POINTS, HELD_OUT_POINTS)
    assert fit and held and all(p.kv_len == 0 for p in fit + held)
    assert set(fit) == {p for p in FIT_POINTS if p.kv_len == 0}
    fit, held = plan_points("vision", [Point(1, 2), Point(2, 3), Point(1, 1, 4)],
                            [Point(3, 7), Point(2, 4)])
    assert fit == (Point(1, 0), Point(2, 0), Point(4, 0)) and held == (Point(3, 0),)


def test_encoder_is_covered_by_analyze_from_prefill_samples(albert) -> None:
    config, result, registry = albert
    report = result.coverage
    assert report is not None and report.sampled == "prefill"
    assert report.count("none") == 0 and report.after.fully_exact
    assert result.recon.coverage["flops"] == 1.0 and not result.recon.uncovered_classes
    assert all(r.status == "exact" for r in result.recon.calls)
    t = trace_config(config, 3, 11)  # a shape no sample used
    assert _all_exact(t, registry) == []


def test_encoder_decoder_is_covered_from_prefill_samples(mt5) -> None:
    config, report, registry = mt5
    assert report.sampled == "prefill" and report.after.covered_flops == 1.0
    t = trace_config(config, 2, 9)
    recon = reconcile(t, registry)
    root = recon.calls[0]
    assert t.calls[0].parent_call_id is None and root.status == "exact"
    assert root.predicted["flops"] == t.totals.flops  # the whole model, from its entry
    # every call with a formula equals measurement; classes without one were refused (reasons)
    assert all(r.status == "exact" for r in recon.calls if r.status != "no_formula")
    refused = {o.key for o in report.outcomes if o.source == "none"}
    assert {r.formula_key for r in recon.calls if r.status == "no_formula"} <= refused


def test_vision_model_is_covered_from_batch_only_samples(deit) -> None:
    config, report, registry = deit
    assert report.sampled == "vision" and report.count("none") == 0
    assert report.after.fully_exact and report.after.covered_bytes == 1.0
    model = build_model(config, architecture="DeiTForImageClassification")
    with torch.inference_mode(), trace(model) as t:  # batch 6: no sample used it
        model(pixel_values=torch.empty((6, 3, 32, 32), device="meta"))
    assert _all_exact(t, registry) == []


def test_answered_scalars_model_is_covered_for_prefill_and_decode(biogpt) -> None:
    config, report, registry = biogpt
    assert report.sampled == "decoder" and report.sample_method == "meta+answered-scalars"
    assert report.count("none") == 0 and report.after.fully_exact
    for shape in ((3, 11, "prefill", 0), (2, 1, "decode", 13)):
        t = trace_config(config, *shape)
        assert _all_exact(t, registry) == [], shape


def test_a_decode_that_does_not_run_leaves_decode_points_out() -> None:
    config = tiny_config(transformers.MiniMaxConfig())  # keeps a cache of its own
    samples = sample_points(config, (Point(1, 2), Point(1, 1, 2), Point(2, 3)),
                            (Point(3, 4), Point(2, 1, 3)))
    assert samples.kind == "decoder"
    assert [s.point for s in samples] == [Point(1, 2), Point(2, 3), Point(3, 4)]
    assert len(samples.notes) == 1 and "decode not sampled" in samples.notes[0]
    assert "MiniMax uses cache of its own" in samples.notes[0]


def test_cpu_sampling_traces_the_same_counts_as_meta() -> None:
    config = tiny_config(transformers.BioGptConfig())
    points = (Point(2, 3), Point(1, 1, 4))
    on_cpu = sample_points(config, points, (), method="cpu")
    assert on_cpu.method == "cpu" and [s.point for s in on_cpu] == list(points)
    for s in on_cpu:
        meta = trace_config(config, s.point.batch, s.point.seq_len, s.point.phase,
                            s.point.kv_len)
        assert s.trace.totals == meta.totals
        assert [c.class_name for c in s.trace.calls] == [c.class_name for c in meta.calls]
