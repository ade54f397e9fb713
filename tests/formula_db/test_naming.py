"""Formula keys: dotted names, classes, instances and functions map to the same namespaced key."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from formula_db.naming import dotted_name, is_key, key_for, public_name


class My_Layer(nn.Module):
    pass


@pytest.mark.parametrize("name, key", [
    ("torch.nn.Linear", "torch__nn__Linear"),
    ("torch.nn.functional.scaled_dot_product_attention",
     "torch__nn__functional__scaled__dot__product__attention"),
    ("transformers.models.llama.modeling_llama.LlamaRMSNorm",
     "transformers__models__llama__modeling__llama__LlamaRMSNorm"),
    ("my_pkg.My_Layer", "my__pkg__My__Layer"),
    ("a.b", "a__b"),
    ("a_b", "a__b"),               # not invertible on its own: entries keep full_class_name
    ("Linear", "Linear"),
])
def test_key_for_dotted_names(name, key):
    assert key_for(name) == key
    assert is_key(key)
    assert key_for(key) == key      # a key is its own key


def test_key_for_classes_and_instances():
    assert key_for(nn.Linear) == "torch__nn__Linear"
    assert key_for(nn.Linear(2, 3)) == "torch__nn__Linear"
    assert key_for(nn.Conv2d(1, 1, 3)) == "torch__nn__Conv2d"
    assert dotted_name(nn.modules.linear.Linear) == "torch.nn.Linear"   # public path preferred
    assert dotted_name(My_Layer) == f"{__name__}.My_Layer"
    assert key_for(My_Layer()) == key_for(f"{__name__}.My_Layer")
    assert key_for(My_Layer).endswith("__My__Layer")


def test_key_for_functions():
    # builtins live in torch._C; they are named by their public alias
    assert dotted_name(F.scaled_dot_product_attention) == \
        "torch.nn.functional.scaled_dot_product_attention"
    assert key_for(F.scaled_dot_product_attention) == \
        key_for("torch.nn.functional.scaled_dot_product_attention")
    assert key_for(F.softmax) == "torch__nn__functional__softmax"   # a Python function
    assert key_for(torch.matmul) == "torch__matmul"
    assert key_for(F.linear) == "torch__nn__functional__linear"


def test_public_name():
    assert public_name("torch.nn.modules.linear.Linear") == "torch.nn.Linear"
    assert public_name("torch.nn.modules.conv.Conv2d") == "torch.nn.Conv2d"
    assert public_name("my_pkg.Layer") == "my_pkg.Layer"


@pytest.mark.parametrize("text, expected", [
    ("torch__nn__Linear", True), ("Linear", True), ("torch.nn.Linear", False),
    ("a_b", False), ("_private", False), ("a__", False), ("", False),
])
def test_is_key(text, expected):
    assert is_key(text) is expected
