"""lm_predictor.fallback: models that read values on meta still trace, and say how."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import BartConfig, BioGptConfig, DebertaV2Config, XLMConfig

from formula_db.registry import Registry
from lm_predictor.fallback import (FallbackTrace, MetaScalarAnswers, layer_count,
                                   trace_with_fallback, truncated_config)
from lm_predictor.models.inputs import build_inputs
from lm_predictor.models import build_model, load_preset, tiny_config
from lm_predictor.reconcile import reconcile
from tracing import Trace, trace


def factory(config: Any, batch: int = 2, seq: int = 8) -> Any:
    def make(model: torch.nn.Module, device: str) -> dict[str, Any]:
        return build_inputs(model, config, batch_size=batch, seq_len=seq, device=device,
                            attention_mask=False)
    return make


def cpu_trace(config: Any, make: Any) -> Trace:
    model = build_model(config, device="cpu")
    inputs = make(model, "cpu")
    with torch.inference_mode(), trace(model) as t:
        model(**inputs)
    return t


def per_call(t: Trace) -> list[tuple[str, dict[str, int], dict[str, int]]]:
    return [(c.module_path, c.inclusive.as_dict(), {k: v.count for k, v in c.ops.items()})
            for c in t.calls]


@pytest.mark.parametrize("config_class, answer", [(BartConfig, "aten.all -> True x1"),
                                                  (BioGptConfig, "aten.all -> True x1"),
                                                  (DebertaV2Config, "aten.any -> False x1")])
def test_meta_failure_answered_equals_cpu(config_class: type, answer: str) -> None:
    config = tiny_config(config_class())
    make = factory(config)
    model = build_model(config)
    inputs = make(model, "meta")
    with pytest.raises(RuntimeError, match="meta"):  # the plain meta trace fails
        with torch.inference_mode(), trace(model):
            model(**inputs)
    result = trace_with_fallback(config, model, make, "meta")
    assert result.method == "meta+answered-scalars"
    assert result.notes == [answer]
    assert per_call(result.trace) == per_call(cpu_trace(config, make))  # op for op
    assert result.trace.totals == cpu_trace(config, make).totals


def test_meta_failing_model_analyzed_with_builtin_formulas() -> None:
    """A tiny BART decoder (meta-failing) reconciles: every call with a formula is exact."""
    config = tiny_config(BartConfig())
    result = trace_with_fallback(config, build_model(config), factory(config), "meta")
    recon = reconcile(result.trace, Registry.default(include_user=False))
    with_formula = [r for r in recon.calls if r.status != "no_formula"]
    assert with_formula and all(r.status == "exact" for r in with_formula)
    assert recon.measured_totals["flops"] > 0


def test_unanswerable_value_falls_back_to_cpu() -> None:
    """XLM reads an int64 scalar on meta (not all/any): nothing is guessed, CPU traces it."""
    config = tiny_config(XLMConfig())
    make = factory(config)
    result = trace_with_fallback(config, build_model(config), make, "meta")
    assert result.method == "cpu"
    assert "UnansweredScalar" in result.notes[-1]
    assert result.trace.device == "cpu"
    assert result.trace.totals == cpu_trace(config, make).totals


def test_cpu_device_never_probes_meta(monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(BartConfig())
    monkeypatch.setattr(MetaScalarAnswers, "__init__",
                        lambda self: pytest.fail("meta probed for a cpu trace"))
    model = build_model(config, device="cpu")
    result = trace_with_fallback(config, model, factory(config), "cpu")
    assert (result.method, result.notes) == ("cpu", [])


def test_meta_success_is_plain_meta() -> None:
    config = tiny_config(load_preset("gpt2"))
    result = trace_with_fallback(config, build_model(config), factory(config), "meta")
    assert isinstance(result, FallbackTrace) and (result.method, result.notes) == ("meta", [])


def test_truncated_config_keeps_widths_and_pattern() -> None:
    config = load_preset("google/gemma-2-9b")
    small = truncated_config(config, 3)
    assert (layer_count(config), layer_count(small)) == (42, 3)
    assert small.layer_types == config.layer_types[:3]
    for key in ("hidden_size", "intermediate_size", "vocab_size", "num_attention_heads",
                "num_key_value_heads", "head_dim", "sliding_window"):
        assert getattr(small, key) == getattr(config, key)
    assert layer_count(config) == 42  # the original is untouched


def test_weights_over_the_cap_trace_truncated() -> None:
    config = tiny_config(BioGptConfig(), num_hidden_layers=4)
    model = build_model(config)
    make = factory(config)

    def cpu_only(model: torch.nn.Module, device: str) -> dict[str, Any]:
        if device == "meta":
            raise RuntimeError("Cannot copy out of meta tensor; no data!")
        return make(model, device)

    result = trace_with_fallback(config, model, cpu_only, "meta", cpu_max_weight_bytes=0,
                                 truncate_layers=2)
    assert (result.method, result.truncated_layers) == ("cpu-truncated", 2)
    layers = [c for c in result.trace.calls if c.class_name.endswith("DecoderLayer")]
    assert len(layers) == 2
    assert result.trace.totals == cpu_trace(truncated_config(config, 2), make).totals


def test_other_errors_are_not_swallowed() -> None:
    config = tiny_config(load_preset("gpt2"))

    def broken(model: torch.nn.Module, device: str) -> dict[str, Any]:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        trace_with_fallback(config, build_model(config), broken, "meta")


def test_cache_probe_of_meta_failing_model_works_under_answers() -> None:
    """`cache_layout` probes with a one-token forward, which BioGPT fails on plain meta; the
    probe runs under MetaScalarAnswers on meta (and on the model's own device otherwise) and
    gets the cache geometry the CPU model really keeps."""
    from lm_predictor.models.cache import cache_layout

    config = tiny_config(BioGptConfig())
    with pytest.raises(RuntimeError, match="meta"):
        build_model(config)(input_ids=torch.empty((1, 1), dtype=torch.long, device="meta"))
    layout = cache_layout(build_model(config))
    on_cpu = cache_layout(build_model(config, device="cpu"))
    heads, dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    assert [(c.key_heads, c.key_dim, c.value_heads, c.value_dim) for c in layout] == [
        (heads, dim, heads, dim)] * config.num_hidden_layers
    assert layout == on_cpu


def test_analyze_names_the_method_for_a_meta_failing_model(tmp_path, capsys) -> None:
    """`analyze` on tiny BART (its forward reads a mask value on meta) traces through the
    answered-scalar fallback, says so in JSON and in the note, and equals a CPU analysis."""
    import json

    from transformers import BartConfig

    from lm_predictor.cli import main
    from lm_predictor.models import tiny_config

    path = tmp_path / "config.json"
    tiny_config(BartConfig()).to_json_file(str(path))
    runs = {}
    for device in ("meta", "cpu"):
        assert main(["analyze", "--model-id", str(path), "--seq-len", "8", "--device", device,
                     "--no-store", "--no-cover", "--json"]) == 0
        out, err = capsys.readouterr()
        runs[device] = json.loads(out)
        if device == "meta":
            assert "traced by meta+answered-scalars" in " ".join(err.split())
    assert runs["meta"]["trace_method"] == "meta+answered-scalars"
    assert runs["cpu"]["trace_method"] == "cpu"
    for m in ("flops", "vector_flops", "bytes_read", "bytes_written"):
        assert runs["meta"]["totals"]["measured"][m] == runs["cpu"]["totals"]["measured"][m]
