"""lm_predictor.sweep: the type list, one type end to end, and a small parallel sweep that
survives a hanging and a crashing type."""
from __future__ import annotations

import time

from transformers.models.auto import modeling_auto

from lm_predictor.sweep import (SweepType, TypeResult, normalise_reason, run_sweep, run_type,
                                suite_types, summarise)


def test_suite_lists_every_causal_lm_type_and_some_others() -> None:
    types = suite_types()
    names = {t.model_type for t in types}
    assert set(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) <= names
    kinds = {t.kind for t in types}
    assert kinds == {"causal", "encoder", "seq2seq", "vision"}
    assert {"t5", "bert", "vit"} <= names
    assert len(names) == len(types)  # one entry per type


def test_run_type_reports_method_and_coverage() -> None:
    bart = run_type(SweepType("bart", "causal", "BartForCausalLM"))
    assert (bart.built, bart.traced, bart.method, bart.config_method) == (
        True, True, "meta+answered-scalars", "tiny")
    assert bart.error is None and bart.stage == "done" and bart.calls > 10
    # builtin formulas (Linear, LayerNorm, Embedding...) explain part of it, exactly
    assert 0 < bart.coverage_by_source["builtin"]["flops"] <= 1
    assert bart.exact and bart.unbound_calls == 0
    assert not bart.fully_covered_exact  # BartAttention has no builtin entry
    assert "BartAttention" in " ".join(bart.uncovered_classes)


def test_vision_type_gets_pixel_values() -> None:
    vit = run_type(SweepType("vit", "vision", "ViTForImageClassification"))
    assert vit.traced and vit.method == "meta", vit.error


def test_reasons_group_alike_errors() -> None:
    a = normalise_reason("TypeError: 'FooConfig' object has no attribute 'rope_theta'", "foo")
    b = normalise_reason("TypeError: 'BarConfig' object has no attribute 'head_dim'", "bar")
    assert a == b
    assert normalise_reason("RuntimeError: size 64 vs 128") == "RuntimeError: size N vs N"


def test_summarise_counts() -> None:
    ok = TypeResult("a", "causal", built=True, traced=True, exact=True, fully_covered_exact=True,
                    method="meta", config_method="tiny",
                    coverage={"flops": 1.0, "bytes": 1.0},
                    coverage_by_source={"builtin": {"flops": 1.0, "bytes": 1.0}})
    half = TypeResult("b", "causal", built=True, traced=True, exact=True, method="cpu",
                      config_method="default", coverage={"flops": 0.5, "bytes": 0.25},
                      coverage_by_source={"builtin": {"flops": 0.5, "bytes": 0.25}},
                      uncovered_ops={"aten.mode": 1})
    bad = [TypeResult(t, "causal", built=False, error="E", reason="build: E") for t in "cd"]
    s = summarise([ok, half, *bad], wall_s=3.0)
    assert (s.types, s.built, s.traced, s.exact, s.fully_covered_exact) == (4, 2, 2, 2, 1)
    assert s.traced_by_method == {"meta": 1, "cpu": 1}
    assert s.traced_by_config == {"tiny": 1, "default": 1}
    assert s.coverage_by_source["builtin"] == {"flops": 0.75, "bytes": 0.625}
    assert s.coverage_by_source["none"] == {"flops": 0.25, "bytes": 0.375}
    assert s.failures_by_reason == {"build: E": ["c", "d"]}
    assert s.uncovered_ops == {"aten.mode": 1}


def test_sweep_survives_hang_and_crash() -> None:
    types = [SweepType("gpt2"), SweepType("hangs", runner="tests.sweep.fake_types:hang"),
             SweepType("crashes", runner="tests.sweep.fake_types:crash"),
             SweepType("biogpt")]
    start = time.perf_counter()
    result = run_sweep(types, workers=2, timeout_s=10)
    assert time.perf_counter() - start < 240
    by_type = {r.model_type: r for r in result.results}
    assert [r.model_type for r in result.results] == ["gpt2", "hangs", "crashes", "biogpt"]
    assert by_type["gpt2"].traced and by_type["gpt2"].method == "meta"
    assert by_type["biogpt"].traced and by_type["biogpt"].method == "meta+answered-scalars"
    assert by_type["hangs"].stage == "timeout" and not by_type["hangs"].traced
    assert by_type["crashes"].stage == "crash" and "exit code 3" in by_type["crashes"].error
    s = result.summary
    assert (s.types, s.traced) == (4, 2)
    assert sorted(t for ts in s.failures_by_reason.values() for t in ts) == ["crashes", "hangs"]
