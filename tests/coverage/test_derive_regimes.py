"""Derivation regimes: batch 1 apart from larger batches, one token apart from several, layers that
differ told apart by a module attribute, and a breakpoint the fit cannot see refused with its
config value."""
from __future__ import annotations

from typing import Callable

from formula_db.evaluate import Env, evaluate
from formula_db.parser import parse
from formula_db.registry import Registry
from lm_predictor.coverage import cover_model
from lm_predictor.derive import (FIT_POINTS, HELD_OUT_POINTS, Shape, _domain_bind, eval_bind,
                                 fit_regimes, with_entries)
from lm_predictor.reconcile import reconcile
from lm_predictor.testing import trace_config

from .conftest import traced

# unseen by the samples: batch 1 and batch 5, longer prefill and decode than the held-out ones
UNSEEN = ((1, 11, "prefill", 0), (5, 6, "prefill", 0), (1, 1, "decode", 12),
          (5, 1, "decode", 8))


def _data(shape: Shape, truth: Callable[[int, int, int], int]) -> list[tuple[dict[str, int], int]]:
    out = []
    for p in FIT_POINTS:
        values = {"batch": p.batch, "seq_len": p.seq_len, "kv_len": p.kv_len}
        out.append(({n: values[n] for n in shape.names}, truth(p.batch, p.seq_len, p.kv_len)))
    return out


def _at(text: str, **params: int) -> int:
    return evaluate(parse(text), Env(params=params, text=text, where="test"))


def test_points_sample_batch_one_and_larger_batches_apart() -> None:
    fit_batches = {p.batch for p in FIT_POINTS}
    assert fit_batches == {1, 2, 3}  # two batches past 1 fix a line that batch 1 may leave
    held = {(p.batch, p.phase) for p in HELD_OUT_POINTS}
    assert {(1, "prefill"), (1, "decode")} <= held
    assert any(b > max(fit_batches) for b, _ in held)
    assert max(p.seq_len for p in HELD_OUT_POINTS) > max(p.seq_len for p in FIT_POINTS)


def test_batch_one_off_the_line_gets_its_own_polynomial() -> None:
    # XGLM attention's shape: an expanded mask costs 4 * 8 * s^2 bytes more from batch 2 on
    def truth(b: int, s: int, kv: int) -> int:
        if kv:
            return 1000 + 40 * b * kv
        return 5000 + 16 * b * s + 6 * s * s + (32 * s * s * b if b > 1 else 0)

    shape = Shape(["batch", "seq_len", "kv_len"], ["b", "s", "k"])
    text = fit_regimes(shape, _data(shape, truth))
    assert text is not None and "${batch} == 1 ?" in text
    for b, s, kv in ((1, 7, 0), (4, 4, 0), (6, 13, 0), (1, 1, 9), (7, 1, 20)):
        assert _at(text, batch=b, seq_len=s, kv_len=kv) == truth(b, s, kv)


def test_batch_linear_costs_keep_one_polynomial_and_quadratic_batch_is_a_second_try() -> None:
    shape = Shape(["batch", "seq_len"], ["b", "s"])
    linear = fit_regimes(shape, _data(shape, lambda b, s, kv: 3 * b * s * s + 7 * s + 11))
    assert linear == "11 + 7 * ${seq_len} + 3 * ${batch} * ${seq_len} ** 2"

    # batch x batch (contrastive logits): not linear from batch 2 on with a batch-1 exception
    # that extrapolates, so the degree-1 fit is wrong at batch 4; the degree-2 fit is exact
    def square(b: int, s: int, kv: int) -> int:
        return 5 * b * b + 2 * b * s

    quad = fit_regimes(shape, _data(shape, square), batch_degree=2)
    assert quad is not None and _at(quad, batch=4, seq_len=7) == square(4, 7, 0)
    split = fit_regimes(shape, _data(shape, square))
    assert split is None or _at(split, batch=4, seq_len=7) != square(4, 7, 0)


def test_one_token_apart_from_several_without_a_cache_variable() -> None:
    # GitEmbeddings: position embeddings broadcast over the batch in prefill, not in decode
    def truth(b: int, s: int, kv: int) -> int:
        return 776 * b if kv else s * (520 + 256 * b)

    shape = Shape(["batch", "seq_len"], ["b", "s"])
    text = fit_regimes(shape, _data(shape, truth))
    assert text is not None and text.startswith("(${seq_len} == 1 ?")
    assert _at(text, batch=4, seq_len=9) == truth(4, 9, 0)
    assert _at(text, batch=6, seq_len=1) == truth(6, 1, 5)


def _covered(config_class: str, **overrides: object):
    config, samples = traced(config_class, **overrides)
    registry = Registry.default(include_user=False)
    report = cover_model(config, registry, store=False, transfer=False, samples=samples)
    return config, registry, report


def _exact_at_unseen(config, registry: Registry, report, shapes=UNSEEN) -> None:
    reg = with_entries(registry, report.entries)
    for b, s, phase, kv in shapes:
        recon = reconcile(trace_config(config, b, s, phase, kv), reg)
        bad = [(r.call_id, r.error, r.measured, r.predicted) for r in recon.calls
               if r.status != "exact"]
        assert not bad, ((b, s, phase, kv), bad[:3])
        assert recon.coverage == {"flops": 1.0, "bytes": 1.0}


def test_xglm_attention_batch_one_regime_is_exact_at_unseen_batches() -> None:
    config, registry, report = _covered("XGLMConfig")
    assert report.count("none") == 0, report.lines()
    attn = next(e for e in report.entries if e.full_class_name.endswith("XGLMAttention"))
    assert "${batch} == 1 ?" in attn.bytes_read
    _exact_at_unseen(config, registry, report)


def test_layers_that_differ_are_fitted_per_module_attribute() -> None:
    # VaultGemma alternates sliding and full attention: its decoder layers cost differently at
    # the same shape and have no attribute of their own telling them apart but their index
    config, registry, report = _covered("VaultGemmaConfig")
    assert report.count("none") == 0, report.lines()
    layer = next(e for e in report.entries
                 if e.full_class_name.endswith("VaultGemmaDecoderLayer"))
    variant = next(p for p in layer.parameters if p.name == "variant")
    assert "module.list_index == 0 ? 1" in variant.bind
    assert "${variant} == 1 ?" in layer.flops
    _exact_at_unseen(config, registry, report)


def test_short_convolution_prompts_sampled_from_its_cache_length() -> None:
    # LFM2's short convolution pads its input to conv_L_cache tokens: cost breaks at seq 7.
    # Prompts are sampled from 7 tokens on, the entries are exact at unseen longer shapes and
    # refuse a shorter prompt with the reason (decode stays in the domain).
    config, registry, report = _covered("Lfm2Config", conv_L_cache=7,
                                        num_hidden_layers=2,
                                        layer_types=["conv", "full_attention"])
    assert report.count("none") == 0, report.lines()
    _exact_at_unseen(config, registry, report, ((1, 11, "prefill", 0), (5, 9, "prefill", 0),
                                                (1, 1, "decode", 12), (5, 1, "decode", 8)))
    conv = next(e for e in report.entries if e.full_class_name.endswith("Lfm2ShortConv"))
    domain = next(p for p in conv.parameters if p.name == "in_domain")
    assert "at least 7 tokens" in domain.bind


def test_lfm2_layer_variant_by_attention_flag() -> None:
    # with a real LFM2's conv cache (3 tokens: prompts sampled from 3 on), the hybrid's decoder
    # layers (short conv / attention) are told apart by their is_attention_layer flag
    config, registry, report = _covered("Lfm2Config", conv_L_cache=3,
                                        num_hidden_layers=2,
                                        layer_types=["conv", "full_attention"])
    assert report.count("none") == 0, report.lines()
    layer = next(e for e in report.entries if e.full_class_name.endswith("Lfm2DecoderLayer"))
    variant = next(p for p in layer.parameters if p.name == "variant")
    assert "module.is_attention_layer == false ? 1" in variant.bind
    _exact_at_unseen(config, registry, report)


def test_lengths_past_a_sparse_attention_top_k_are_outside_the_domain() -> None:
    # AXK2 / Dots3 indexers keep min(length, index_topk) positions: piecewise past it
    shape = Shape(["batch", "seq_len", "kv_len"], ["b", "s", "k"])
    text = _domain_bind(shape, {"index_topk": 16, "num_experts_per_tok": 2})
    assert text is not None
    assert eval_bind(text, {}, {"batch": 2, "seq_len": 16, "kv_len": 0}) == 1
    assert eval_bind(text, {}, {"batch": 2, "seq_len": 1, "kv_len": 15}) == 1
    past = eval_bind(text, {}, {"batch": 2, "seq_len": 1, "kv_len": 16})
    assert isinstance(past, str) and "index_topk=16" in past
    assert "num_experts_per_tok" not in text  # an expert count is not a length
