"""Registry look-up (every way of naming an entry), layering, and parameter binds on real calls."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from formula_db.bind import bind_parameters, call_roots, make_roots
from formula_db.errors import FormulaError, UnknownKeyError
from formula_db.meta import TensorMeta, ValueSummary
from formula_db.registry import Layer, Registry
from formula_db.schema import FormulaDatabase


@pytest.fixture
def linear_entry(make_entry, P):
    return make_entry(
        "torch.nn.Linear",
        [P("rows", bind="numel(input[0]) // input[0].shape[-1]"),
         P("in_features", bind="module.in_features"),
         P("out_features", bind="module.out_features"),
         P("has_bias", type="bool", bind="module.has_bias")],
        flops="2 * ${rows} * ${in_features} * ${out_features}",
        vector_flops="${has_bias} ? ${rows} * ${out_features} : 0")


# -- look-up -------------------------------------------------------------------------------------
def test_every_name_finds_the_same_entry(linear_entry):
    reg = Registry.from_entries([linear_entry])
    names = [nn.Linear, nn.Linear(4, 8), "torch.nn.Linear", "torch__nn__Linear",
             "torch.nn.modules.linear.Linear", nn.modules.linear.Linear]
    for name in names:
        assert reg.resolve_key(name) == "torch__nn__Linear", name
        assert reg.find(name) is linear_entry
        assert reg.get(name) is linear_entry
        assert name in reg
    assert reg.evaluate(nn.Linear(4, 8), "flops",
                        {"rows": 3, "in_features": 4, "out_features": 8, "has_bias": True}) == 192


def test_misses(linear_entry):
    reg = Registry.from_entries([linear_entry])
    for name in (nn.Conv2d, "torch.nn.Conv2d", "torch__nn__Conv2d", "torch.nn.modules.conv.Conv2d",
                 "torch.nn.Linearx"):
        assert reg.find(name) is None and name not in reg
    with pytest.raises(UnknownKeyError, match="no formula for 'torch.nn.Conv2d'"):
        reg.get(nn.Conv2d(1, 1, 1))


def test_resolution_through_full_class_name(make_entry):
    # a_b and a.b share the key a__b; the registry resolves names through full_class_name
    entry = make_entry("pkg.my_op", ["x"], flops="${x}")
    reg = Registry.from_entries([entry])
    assert reg.keys() == ["pkg__my__op"]
    assert reg.resolve_key("pkg.my_op") == "pkg__my__op"
    assert reg.resolve_key("pkg__my__op") == "pkg__my__op"


def test_user_layer_overrides_builtin(make_entry):
    builtin_lin = make_entry("torch.nn.Linear", ["a"], flops="${a} * 2",
                             validation={"source": "builtin", "status": "validated"})
    only_builtin = make_entry("lay.Only", [], flops="7")
    user_lin = make_entry("torch.nn.Linear", ["a"], flops="${a} * 3")
    builtin = Layer("builtin", None, FormulaDatabase(entries={e.key: e for e in
                                                              (builtin_lin, only_builtin)}))
    user = Layer("user", None, FormulaDatabase(entries={user_lin.key: user_lin}))
    reg = Registry([builtin, user])
    assert reg.get(nn.Linear) is user_lin
    assert reg.source_of("torch__nn__Linear") == "user"
    assert reg.source_of("lay__Only") == "builtin"
    assert reg.evaluate("torch.nn.Linear", "flops", {"a": 5}) == 15
    assert reg.keys() == ["lay__Only", "torch__nn__Linear"]
    flipped = Registry([user, builtin])
    assert flipped.evaluate("torch.nn.Linear", "flops", {"a": 5}) == 10


def test_check_is_empty_for_a_sound_registry(linear_entry, make_entry):
    caller = make_entry("reg.Caller", ["r"], flops="{torch__nn__Linear}(${r}, 2, 3, true)",
                        module_depends=["torch__nn__Linear"])
    reg = Registry.from_entries([linear_entry, caller])
    assert reg.check() == [] and reg.find_cycle() is None
    reg.raise_on_problems()
    assert reg.evaluate("reg.Caller", "flops", {"r": 5}) == 60
    assert reg.evaluate("reg.Caller", "vector_flops", {"r": 5}) == 0


# -- binds ---------------------------------------------------------------------------------------
def test_bind_linear_call(linear_entry):
    layer = nn.Linear(16, 32)
    x = torch.zeros(2, 5, 16)
    roots = call_roots(layer, (x,), {}, layer(x))
    assert roots["module"]["in_features"] == 16 and roots["module"]["has_bias"] is True
    assert roots["input"][0] == TensorMeta((2, 5, 16), "float32", "cpu", 4)
    values = bind_parameters(linear_entry, roots)
    assert values == {"rows": 10, "in_features": 16, "out_features": 32, "has_bias": True}
    reg = Registry.from_entries([linear_entry])
    assert reg.bind(layer, roots) == values
    assert reg.evaluate(layer, "flops", values) == 2 * 10 * 16 * 32
    assert reg.evaluate(layer, "vector_flops", values) == 320
    no_bias = nn.Linear(16, 32, bias=False)
    values = reg.bind(no_bias, call_roots(no_bias, (x,), {}, no_bias(x)))
    assert values["has_bias"] is False
    assert reg.evaluate(no_bias, "vector_flops", values) == 0
    assert reg.bind(layer, roots, overrides={"rows": 7})["rows"] == 7


def test_bind_conv2d_call(make_entry, P):
    entry = make_entry(
        "torch.nn.Conv2d",
        [P("batch", bind="input[0].shape[0]"),
         P("c_in", bind="input[0].shape[-3]"),
         P("c_out", bind="module.out_channels"),
         P("kh", bind="module.kernel_size[0]"),
         P("kw", bind="module.kernel_size[-1]"),
         P("groups", bind="module.groups"),
         P("out_elems", bind="numel(output)"),
         P("elem", bind="itemsize(output)"),
         P("out_bytes", bind="nbytes(output)"),
         P("ndim", bind="output.ndim"),
         P("dtype", type="str", bind="output.dtype"),
         P("padding_mode", type="str", bind="module.padding_mode"),
         P("macs", bind="${out_elems} * ${c_in} // ${groups} * ${kh} * ${kw}")],
        flops="2 * ${macs}", bytes_written="${out_elems} * ${elem}")
    conv = nn.Conv2d(4, 6, kernel_size=(3, 5), padding=1, groups=2).to(torch.float64)
    x = torch.zeros(2, 4, 10, 12, dtype=torch.float64)
    out = conv(x)
    assert tuple(out.shape) == (2, 6, 10, 10)      # 12 + 2 - 5 + 1 = 10 wide
    values = bind_parameters(entry, call_roots(conv, (x,), {}, out))
    assert values == {"batch": 2, "c_in": 4, "c_out": 6, "kh": 3, "kw": 5, "groups": 2,
                      "out_elems": 1200, "elem": 8, "out_bytes": 9600, "ndim": 4,
                      "dtype": "float64", "padding_mode": "zeros",
                      "macs": 1200 * 2 * 15}
    reg = Registry.from_entries([entry])
    assert reg.evaluate(conv, "flops", values) == 72000
    assert reg.evaluate(conv, "bytes_written", values) == 9600


def test_bind_kwargs_and_config(make_entry, P):
    entry = make_entry(
        "reg.Attn",
        [P("heads", bind="config.num_attention_heads"),
         P("head_dim", bind="config.hidden_size // ${heads}"),
         P("causal", type="bool", bind="kwargs.is_causal"),
         P("scale", type="float", bind="kwargs['scale']"),
         P("has_mask", type="bool", bind="not is_none(kwargs.attn_mask)"),
         P("seq", bind="size(input[0], -2)"),
         P("feat", bind="input[0].shape[-1]"),
         P("n_inputs", bind="len(input)"),
         P("first_is_tensor", type="bool", bind="is_tensor(input[0])"),
         P("second_value", bind="input[1]"),
         P("window", default=64)],
        flops="${causal} ? ${seq} * ${seq} * ${head_dim} : 2 * ${seq} * ${seq} * ${head_dim}")
    q = torch.zeros(1, 8, 7, 16)
    roots = call_roots(None, (q, 3), {"is_causal": True, "scale": 0.25, "attn_mask": None},
                       q, config={"num_attention_heads": 8, "hidden_size": 128,
                                  "rope_scaling": {"type": "linear"}})
    assert roots["module"] == {} and "rope_scaling" not in roots["config"]
    assert roots["kwargs"]["is_causal"] == ValueSummary("bool", True)
    values = bind_parameters(entry, roots)
    assert values == {"heads": 8, "head_dim": 16, "causal": True, "scale": 0.25,
                      "has_mask": False, "seq": 7, "feat": 16, "n_inputs": 2, "first_is_tensor": True,
                      "second_value": 3, "window": 64}
    assert Registry.from_entries([entry]).evaluate("reg.Attn", "flops", values) == 7 * 7 * 16


def test_bind_from_stored_metadata(linear_entry):
    # make_roots takes already-described data (e.g. a stored trace record), no live tensors
    roots = make_roots({"in_features": 4096, "out_features": 11008, "has_bias": False},
                       (TensorMeta((8, 2048, 4096), "bfloat16", "meta", 2),), {},
                       TensorMeta((8, 2048, 11008), "bfloat16", "meta", 2))
    assert bind_parameters(linear_entry, roots) == {
        "rows": 16384, "in_features": 4096, "out_features": 11008, "has_bias": False}


def test_bind_errors(make_entry, P, linear_entry):
    roots = call_roots(nn.Linear(2, 3), (torch.zeros(1, 2),), {}, torch.zeros(1, 3))
    cases = [
        (P("a", bind="input[3]"), "index 3 out of range for length 1"),
        (P("a", bind="input[0][0]"), "index a tensor's .shape, not the tensor"),
        (P("a", bind="module.nope"), "no attribute 'nope' here; available: has_bias, has_weight, in_features, out_features"),
        (P("a", bind="numel(module)"), "numel(): numel() expects a tensor, got dict"),
        (P("a", bind="input[0].dtype"), "bind gave 'float32', not a int"),
        (P("a"), "parameter 'a' has no bind and no default"),
    ]
    for param, message in cases:
        entry = make_entry("reg.Bad", [param])
        with pytest.raises(FormulaError) as info:
            bind_parameters(entry, roots)
        assert message in str(info.value)
        assert "reg__Bad.parameters.a.bind" in str(info.value)
