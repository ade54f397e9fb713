"""Transfer: a real architecture pair adopted exactly, a near miss refused."""
from __future__ import annotations

from formula_db.registry import Registry
from formula_db.schema import FormulaEntry
from lm_predictor.derive import Point, instances, verify, with_entries
from lm_predictor.reconcile import reconcile
from lm_predictor.testing import trace_config
from lm_predictor.transfer import Transferrer, camel_prefix

OLMO = "transformers.models.olmo.modeling_olmo"
LLAMA_ATTN = "transformers__models__llama__modeling__llama__LlamaAttention"
DSV3_MLP = "transformers__models__deepseek__v3__modeling__deepseek__v3__DeepseekV3MLP"


def _classes(samples) -> list[str]:
    return sorted({c.class_name for c in samples[0].trace.calls})


def test_prefix_is_cut_at_a_word_boundary() -> None:
    assert camel_prefix(["LlamaAttention", "LlamaMLP", "LlamaModel"]) == "Llama"
    assert camel_prefix(["Qwen2MoeAttention", "Qwen2MoeModel"]) == "Qwen2Moe"
    assert camel_prefix(["GPT2Attention", "GPT2Block"]) == "GPT2"


def test_olmo_attention_adopts_an_existing_attention_exactly(olmo) -> None:
    config, samples = olmo
    registry = Registry.default(include_user=False)
    key = "transformers__models__olmo__modeling__olmo__OlmoAttention"
    result = Transferrer(samples, registry, _classes(samples)).transfer(key, f"{OLMO}.OlmoAttention")
    assert result.entry is not None, result.tried
    assert result.entry.key == key
    assert result.entry.validation.source == "transferred"
    assert result.entry.validation.transferred_from == result.source_key
    assert result.source_key.endswith("Attention") and "olmo" not in result.source_key
    # at least three prefill and three decode shapes were checked
    assert len({s.point for s in samples if s.point.kv_len == 0}) >= 3
    assert len({s.point for s in samples if s.point.kv_len > 0}) >= 3
    # independent check: a fresh trace at a shape never sampled reconciles exactly
    reg = with_entries(registry, [result.entry])
    for b, s, phase, kv in ((2, 13, "prefill", 0), (5, 1, "decode", 19)):
        t = trace_config(config, b, s, phase, kv)
        recon = reconcile(t, reg)
        attn = [r for r in recon.calls if r.formula_key == key]
        assert len(attn) == config.num_hidden_layers
        assert all(r.status == "exact" for r in attn), [r.predicted for r in attn]


def test_family_rewrite_points_nested_calls_at_the_new_architecture(olmo) -> None:
    _, samples = olmo
    registry = Registry.default(include_user=False)
    tr = Transferrer(samples, registry, _classes(samples))
    source = registry.get("transformers.models.llama.modeling_llama.LlamaDecoderLayer")
    entry = tr.rewrite(source, f"{OLMO}.OlmoDecoderLayer")
    assert "transformers__models__olmo__modeling__olmo__OlmoAttention" in entry.module_depends
    assert "transformers__models__olmo__modeling__olmo__OlmoMLP" in entry.module_depends
    # Olmo has no OlmoRMSNorm (it normalises with OlmoLayerNorm): that call keeps Llama's key,
    # so the adopted layer would be wrong and verification must refuse it
    assert [k for k in entry.module_depends if "llama" in k] == [
        "transformers__models__llama__modeling__llama__LlamaRMSNorm"]
    calls = [(s, c) for s in samples
             for c in instances(s.trace, entry.key).values()]
    assert verify(entry, registry, calls) is not None


def _near_miss(entry: FormulaEntry) -> FormulaEntry:
    """The entry with a term that is 0 for up to 6 rows (batch x seq) and 64 beyond."""
    data = entry.model_dump(mode="json")
    data["bytes_read"] = f"{data['bytes_read']} + (${{rows}} > 6 ? 64 : 0)"
    return FormulaEntry.model_validate(data)


def test_near_miss_is_refused(olmo) -> None:
    _, samples = olmo
    builtin = Registry.default(include_user=False)
    doctored = _near_miss(builtin.get(DSV3_MLP))
    registry = with_entries(builtin, [doctored])
    key = "transformers__models__olmo__modeling__olmo__OlmoMLP"
    tr = Transferrer(samples, registry, _classes(samples))
    candidate = tr.rewrite(doctored, f"{OLMO}.OlmoMLP")
    calls = [(s, c) for s in samples for c in instances(s.trace, key).values()]
    small = [(s, c) for s, c in calls if s.point == Point(1, 2)]
    assert small and verify(candidate, registry, small) is None  # right at one shape
    problem = verify(candidate, registry, calls)  # wrong at another
    assert problem is not None and "bytes_read" in problem
    # the undoctored entry is adopted; the near miss never is
    assert Transferrer(samples, builtin, _classes(samples)).transfer(
        key, f"{OLMO}.OlmoMLP").entry is not None
    # with the near miss as the only MLP entry of another architecture, nothing is adopted
    only = Registry.from_entries(
        [builtin.get(k) for k in builtin.keys()
         if not (k.startswith("transformers__models__") and k.endswith("MLP"))] + [doctored])
    result = Transferrer(samples, only, _classes(samples)).transfer(key, f"{OLMO}.OlmoMLP")
    assert result.entry is None
    reasons = dict(result.tried)
    assert list(reasons) == [DSV3_MLP] and "bytes_read" in reasons[DSV3_MLP]


def test_seed_oss_is_covered_by_transfer_then_derivation() -> None:
    """SeedOss: its leaves (attention, MLP, RMSNorm, rotary) transfer from another architecture
    and generalise to another config; classes whose candidates do not fit the adopted family are
    derived; every call is exact."""
    from lm_predictor.coverage import cover_model
    from lm_predictor.testing import assert_reconciles

    from .conftest import traced

    config, samples = traced("SeedOssConfig")
    registry = Registry.default(include_user=False)
    report = cover_model(config, registry, store=False, samples=samples, backward=False)
    assert len(report.outcomes) >= 7, report.lines()
    assert {o.source for o in report.outcomes} <= {"transferred", "derived"}, report.lines()
    leaves = {o.class_name.rsplit(".", 1)[-1]: o for o in report.outcomes
              if o.class_name.endswith(("Attention", "MLP", "RMSNorm", "RotaryEmbedding"))}
    assert len(leaves) == 4 and all(o.source == "transferred" for o in leaves.values())
    assert all("seed" not in (o.transferred_from or "seed") for o in leaves.values())
    assert report.after.fully_exact
    # transferred entries bind the config like the originals: another config is exact too
    bigger = type(config)(**{**config.to_dict(), "hidden_size": 96, "intermediate_size": 80,
                             "num_hidden_layers": 3, "num_attention_heads": 6,
                             "num_key_value_heads": 2, "head_dim": 16})
    leaf_entries = [e for e in report.entries if e.full_class_name.rsplit(".", 1)[-1] in leaves]
    assert_reconciles(bigger, [(2, 7), (3, 1, "decode", 11)],
                      registry=with_entries(registry, leaf_entries), require_formulas=False)


def test_a_transfer_is_rechecked_on_a_config_that_runs_another_code_path(tmp_path) -> None:
    """SmolLM3 transfers whole from Llama at 2 layers; at 4 layers layer 3 skips rotary, the
    transferred attention is no longer exact there, and cover_model derives it instead, per
    value of the layers' `use_rope` flag."""
    import transformers

    from lm_predictor.coverage import cover_model
    from lm_predictor.derive import sample_traces

    from .conftest import traced

    config, samples = traced("SmolLM3Config")
    path = tmp_path / "formulas.json"
    first = cover_model(config, Registry.default(path), user_path=path, samples=samples,
                        backward=False)
    assert first.count("transferred") == len(first.outcomes) and first.after.fully_exact
    data = config.to_dict()
    for k in ("layer_types", "no_rope_layers"):
        data.pop(k, None)
    data["num_hidden_layers"] = 4
    deeper = transformers.SmolLM3Config(**data)
    assert deeper.no_rope_layers[3] == 0  # layer 3 has no rotary embedding
    second = cover_model(deeper, Registry.default(path), user_path=path,
                         samples=sample_traces(deeper), backward=False)
    attn = next(o for o in second.outcomes if o.class_name.endswith("SmolLM3Attention"))
    assert attn.source != "transferred"
    # derivation tells the rotary and no-rotary layers apart by a module attribute
    entry = next(e for e in second.entries if e.full_class_name.endswith("SmolLM3Attention"))
    variant = next(p for p in entry.parameters if p.name == "variant")
    assert variant.bind.startswith("module.use_rope == 0 ? 1")
    assert attn.source == "derived" and second.after.fully_exact
