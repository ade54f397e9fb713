"""Every builtin entry's `flops` equals torch.utils.flop_counter's count on real CPU tensors,
at three or more shapes each (odd sizes included), with parameters bound from the real call."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from formula_db.bind import call_roots
from formula_db.registry import BUILTIN_PATH, Layer, Registry
from formula_db.store import load_database

# module_db.json alone (the torch.nn builtins; architecture entries in zoo/ are tested elsewhere)
REG = Registry([Layer("builtin", BUILTIN_PATH, load_database(BUILTIN_PATH, missing_ok=False))])


def flop_counter(fn: Callable[[], Any]) -> tuple[int, Any]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def module_case(module: nn.Module, *args: torch.Tensor, **kwargs: Any) -> tuple[str, Any, int]:
    """(key, bind roots, flop_counter FLOPs) of one real module call."""
    module.eval()
    seen: dict[str, Any] = {}

    def hook(mod: nn.Module, a: tuple, kw: dict, out: Any) -> None:
        seen["roots"] = call_roots(mod, a, kw, out)

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        flops, _ = flop_counter(lambda: module(*args, **kwargs))
    finally:
        handle.remove()
    return REG.get(module).key, seen["roots"], flops


def function_case(name: str, fn: Callable, *args: Any, **kwargs: Any) -> tuple[str, Any, int]:
    flops, out = flop_counter(lambda: fn(*args, **kwargs))
    return REG.get(name).key, call_roots(None, args, kwargs, out), flops


r = torch.randn
CASES: dict[str, list[Callable[[], tuple[str, Any, int]]]] = {
    "Linear": [lambda: module_case(nn.Linear(5, 7), r(3, 2, 5)),
               lambda: module_case(nn.Linear(13, 3, bias=False), r(9, 13)),
               lambda: module_case(nn.Linear(1, 17), r(2, 3, 5, 1))],
    "Conv1d": [lambda: module_case(nn.Conv1d(3, 6, 3, stride=2, padding=1), r(2, 3, 11)),
               lambda: module_case(nn.Conv1d(4, 8, 5, groups=4, dilation=2, bias=False), r(3, 4, 17)),
               lambda: module_case(nn.Conv1d(3, 5, 3, padding="same"), r(3, 9)),
               lambda: module_case(nn.Conv1d(2, 3, 4, padding="valid"), r(1, 2, 7))],
    "Conv2d": [lambda: module_case(nn.Conv2d(4, 6, 3, groups=2, padding=1, dilation=2), r(2, 4, 9, 7)),
               lambda: module_case(nn.Conv2d(3, 5, (3, 5), stride=(2, 3), padding=(1, 2)), r(1, 3, 13, 11)),
               lambda: module_case(nn.Conv2d(1, 3, 1, bias=False), r(5, 1, 3, 3))],
    "Conv3d": [lambda: module_case(nn.Conv3d(2, 4, 3, padding=1), r(1, 2, 5, 5, 5)),
               lambda: module_case(nn.Conv3d(3, 3, (1, 3, 3), stride=2, groups=3), r(2, 3, 3, 9, 7)),
               lambda: module_case(nn.Conv3d(2, 5, 2, dilation=2, bias=False), r(3, 2, 7, 5, 9))],
    "ConvTranspose2d": [lambda: module_case(nn.ConvTranspose2d(4, 6, 3, stride=2), r(2, 4, 5, 5)),
                        lambda: module_case(nn.ConvTranspose2d(3, 5, (3, 1), padding=1, bias=False), r(1, 3, 7, 9)),
                        lambda: module_case(nn.ConvTranspose2d(4, 4, 3, stride=2, output_padding=1, groups=2), r(3, 4, 3, 5))],
    "Embedding": [lambda: module_case(nn.Embedding(11, 5), torch.randint(0, 11, (3, 4))),
                  lambda: module_case(nn.Embedding(7, 3), torch.randint(0, 7, (9,))),
                  lambda: module_case(nn.Embedding(13, 9), torch.randint(0, 13, (1, 5, 3)))],
    "LayerNorm": [lambda: module_case(nn.LayerNorm(5), r(3, 4, 5)),
                  lambda: module_case(nn.LayerNorm((3, 7), elementwise_affine=False), r(2, 3, 7)),
                  lambda: module_case(nn.LayerNorm(9, bias=False), r(11, 9))],
    "RMSNorm": [lambda: module_case(nn.RMSNorm(5), r(3, 4, 5)),
                lambda: module_case(nn.RMSNorm(7, elementwise_affine=False), r(9, 7)),
                lambda: module_case(nn.RMSNorm((3, 5)), r(1, 3, 5))],
    "GroupNorm": [lambda: module_case(nn.GroupNorm(2, 4), r(3, 4, 5)),
                  lambda: module_case(nn.GroupNorm(3, 9, affine=False), r(1, 9, 7, 3)),
                  lambda: module_case(nn.GroupNorm(1, 5), r(7, 5))],
    "BatchNorm2d": [lambda: module_case(nn.BatchNorm2d(4), r(3, 4, 5, 5)),
                    lambda: module_case(nn.BatchNorm2d(3, affine=False), r(1, 3, 7, 9)),
                    lambda: module_case(nn.BatchNorm2d(5), r(9, 5, 1, 3))],
    "Dropout": [lambda: module_case(nn.Dropout(0.1), r(3, 4)),
                lambda: module_case(nn.Dropout(0.5), r(5, 7, 9)),
                lambda: module_case(nn.Dropout(0.0), r(1))],
    "pointwise": [lambda m=m, shape=shape: module_case(m, r(*shape))
                  for m in (nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Tanh(), nn.Sigmoid(), nn.Softmax(-1))
                  for shape in ((3, 4), (5, 7, 9), (1,))],
    "MultiheadAttention": [
        lambda: module_case(nn.MultiheadAttention(8, 2, batch_first=True), r(2, 3, 8), r(2, 5, 8), r(2, 5, 8)),
        lambda: module_case(nn.MultiheadAttention(12, 3, kdim=5, vdim=7), r(7, 3, 12), r(9, 3, 5), r(9, 3, 7)),
        lambda: module_case(nn.MultiheadAttention(6, 3, bias=False, batch_first=True), r(1, 5, 6), r(1, 5, 6), r(1, 5, 6))],
    "scaled_dot_product_attention": [
        lambda: function_case("torch.nn.functional.scaled_dot_product_attention", F.scaled_dot_product_attention, r(2, 3, 5, 4), r(2, 3, 7, 4), r(2, 3, 7, 6)),
        lambda: function_case("torch.nn.functional.scaled_dot_product_attention", F.scaled_dot_product_attention, r(1, 3, 9, 8), r(1, 3, 9, 8), r(1, 3, 9, 8), is_causal=True),
        lambda: function_case("torch.nn.functional.scaled_dot_product_attention", F.scaled_dot_product_attention, r(3, 7, 5), r(3, 11, 5), r(3, 11, 3))],
    "linear": [lambda: function_case("torch.nn.functional.linear", F.linear, r(3, 2, 5), r(7, 5), r(7)),
               lambda: function_case("torch.nn.functional.linear", F.linear, r(9, 13), r(3, 13)),
               lambda: function_case("torch.nn.functional.linear", F.linear, r(5, 1, 3), r(11, 3), bias=r(11))],
    "matmul": [lambda: function_case("torch.matmul", torch.matmul, r(2, 3, 4, 5), r(5, 7)),
               lambda: function_case("torch.matmul", torch.matmul, r(9, 5), r(3, 5, 7)),
               lambda: function_case("torch.matmul", torch.matmul, r(5), r(5, 3)),
               lambda: function_case("torch.matmul", torch.matmul, r(3, 1, 7, 5), r(4, 5, 9))],
    "bmm": [lambda: function_case("torch.bmm", torch.bmm, r(2, 3, 4), r(2, 4, 5)),
            lambda: function_case("torch.bmm", torch.bmm, r(7, 1, 9), r(7, 9, 3)),
            lambda: function_case("torch.bmm", torch.bmm, r(1, 11, 13), r(1, 13, 5))],
}


@pytest.mark.parametrize("case", [(name, i) for name, fns in CASES.items() for i in range(len(fns))],
                         ids=lambda c: f"{c[0]}-{c[1]}")
def test_builtin_flops_equal_flop_counter(case: tuple[str, int]) -> None:
    name, i = case
    key, roots, expected = CASES[name][i]()
    params = REG.bind(key, roots)
    assert REG.evaluate(key, "flops", params) == expected


def test_every_builtin_is_covered_and_validated() -> None:
    tested = set()
    for fns in CASES.values():
        for fn in fns:
            tested.add(fn()[0])
    builtin = set(REG.keys())
    assert builtin == tested, f"untested builtin entries: {builtin - tested}"
    for key in builtin:
        assert REG.get(key).validation.status == "validated"
        assert REG.get(key).validation.source == "builtin"


def test_registry_is_sound() -> None:
    assert REG.check() == []


def test_every_builtin_file_validates_eagerly() -> None:
    """The registry reads builtin files lazily (`load_trusted`); here every entry of every
    builtin file is validated at once, and the lazy view yields the same entries."""
    from formula_db.paths import builtin_paths
    from formula_db.store import load_trusted

    for path in builtin_paths():
        eager = load_database(path, missing_ok=False)
        lazy = load_trusted(path)
        assert sorted(eager.entries) == sorted(lazy.entries)
        for key, entry in eager.entries.items():
            assert lazy.entries[key].model_dump() == entry.model_dump()


def test_a_damaged_lazy_entry_fails_on_first_use(tmp_path) -> None:
    import json

    import pytest

    from formula_db.errors import DatabaseError
    from formula_db.registry import Layer, Registry
    from formula_db.store import load_trusted

    data = json.loads(BUILTIN_PATH.read_text())
    key = "torch__nn__Linear"
    data["entries"][key]["flops"] = "2 * ${rows"
    path = tmp_path / "module_db.json"
    path.write_text(json.dumps(data))
    reg = Registry([Layer("builtin", path, load_trusted(path))])
    assert reg.resolve_key("torch.nn.ReLU") is not None
    with pytest.raises(DatabaseError, match=key):
        reg.get(key)
