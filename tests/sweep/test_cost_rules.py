"""Cost rules for routing and other formerly uncovered ops (tracing.optable), against hand counts.

Conventions (see tracing/optable.py): scans, selection (sort, topk, ...) and counting (histc,
bincount, nonzero) cost 1 vector FLOP per input element; scatter-style accumulation 1 per
scattered element; bytes are every tensor read and written, as for any op.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tracing import Counters, count_ops, trace

T, E, K = 5, 8, 2  # tokens, experts, experts per token
F32, I64 = 4, 8


def on(device: str, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(device)


def idx(device: str, values: list[list[int]] | list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long).to(device)


CASES: dict[str, tuple[Callable[[str], Any], set[str], Counters]] = {
    # name: (function of the device, aten ops run, hand-derived counters)
    "cumsum": (lambda d: torch.cumsum(on(d, T, E), -1), {"aten.cumsum"},
               Counters(vector_flops=T * E, bytes_read=T * E * F32, bytes_written=T * E * F32)),
    "sort": (lambda d: torch.sort(on(d, T, E), -1), {"aten.sort"},
             Counters(vector_flops=T * E, bytes_read=T * E * F32,
                      bytes_written=T * E * (F32 + I64))),
    "argsort": (lambda d: torch.argsort(on(d, T * K)), {"aten.sort"},
                Counters(vector_flops=T * K, bytes_read=T * K * F32,
                         bytes_written=T * K * (F32 + I64))),
    "topk": (lambda d: torch.topk(on(d, T, E), K, dim=-1), {"aten.topk"},
             Counters(vector_flops=T * E, bytes_read=T * E * F32,
                      bytes_written=T * K * (F32 + I64))),
    "histc": (lambda d: torch.histc(on(d, T * K), bins=E, min=0, max=E - 1), {"aten.histc"},
              Counters(vector_flops=T * K, bytes_read=T * K * F32, bytes_written=E * F32)),
    "scatter_add": (lambda d: torch.zeros(T, E, device=d).scatter_add(
        1, idx(d, [[0, 3]] * T), on(d, T, K)), {"aten.zeros", "aten.scatter_add"},
        Counters(vector_flops=T * K, bytes_read=T * E * F32 + T * K * (I64 + F32),
                 bytes_written=2 * T * E * F32)),
    "scatter_reduce_mean": (lambda d: torch.zeros(T, E, device=d).scatter_reduce(
        1, idx(d, [[0, 3]] * T), on(d, T, K), "mean"), {"aten.zeros", "aten.scatter_reduce"},
        Counters(vector_flops=T * K + T * E, bytes_read=T * E * F32 + T * K * (I64 + F32),
                 bytes_written=2 * T * E * F32)),
    "plain_scatter": (lambda d: torch.zeros(T, E, device=d).scatter(
        1, idx(d, [[0, 3]] * T), on(d, T, K)), {"aten.zeros", "aten.scatter"},
        Counters(vector_flops=0, bytes_read=T * E * F32 + T * K * (I64 + F32),
                 bytes_written=2 * T * E * F32)),
    "index_add": (lambda d: torch.zeros(E, 4, device=d).index_add(
        0, idx(d, [1, 1, 6]), on(d, 3, 4)), {"aten.zeros", "aten.index_add"},
        Counters(vector_flops=3 * 4, bytes_read=E * 4 * F32 + 3 * I64 + 3 * 4 * F32,
                 bytes_written=2 * E * 4 * F32)),
    "index_put_accumulate": (lambda d: torch.zeros(E, 4, device=d).index_put(
        (idx(d, [1, 1, 6]),), on(d, 3, 4), accumulate=True), {"aten.zeros", "aten.index_put"},
        Counters(vector_flops=3 * 4, bytes_read=E * 4 * F32 + 3 * I64 + 3 * 4 * F32,
                 bytes_written=2 * E * 4 * F32)),
    "var": (lambda d: torch.var(on(d, T, E), -1), {"aten.var"},
            Counters(vector_flops=4 * T * E + T, bytes_read=T * E * F32, bytes_written=T * F32)),
    "std": (lambda d: torch.std(on(d, T, E), -1), {"aten.std"},
            Counters(vector_flops=4 * T * E + 2 * T, bytes_read=T * E * F32,
                     bytes_written=T * F32)),
    "logsumexp": (lambda d: torch.logsumexp(on(d, T, E), -1), {"aten.logsumexp"},
                  Counters(vector_flops=4 * T * E + 2 * T, bytes_read=T * E * F32,
                           bytes_written=T * F32)),
    "max_pool2d": (lambda d: F.max_pool2d(on(d, 2, 3, 8, 8), 2), {"aten.max_pool2d_with_indices"},
                   Counters(vector_flops=2 * 3 * 4 * 4 * 4, bytes_read=2 * 3 * 8 * 8 * F32,
                            bytes_written=2 * 3 * 4 * 4 * (F32 + I64))),
    "vector_norm": (lambda d: torch.linalg.vector_norm(on(d, T, E), dim=-1),
                    {"aten.linalg_vector_norm"},
                    Counters(vector_flops=2 * T * E + T, bytes_read=T * E * F32,
                             bytes_written=T * F32)),
}


INPUT_OPS = {"aten.randn", "aten.lift_fresh", "aten._to_copy", "aten.lift_fresh_copy",
             "aten.copy_", "aten.empty"}  # how the cases build their inputs


def count_case(fn: Callable[[str], Any], device: str) -> tuple[Counters, set[str]]:
    """Count `fn(device)` without the ops that only build its random and literal inputs
    (`INPUT_OPS`); the zeros a case scatters into stay counted."""
    total, ops, _ = count_ops(fn, device)
    for name in INPUT_OPS & set(ops):
        stat = ops.pop(name)
        total = Counters(total.flops - stat.flops, total.vector_flops - stat.vector_flops,
                         total.bytes_read - stat.bytes_read,
                         total.bytes_written - stat.bytes_written)
    return total, set(ops)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_matches_hand_count(name: str) -> None:
    fn, want_ops, want = CASES[name]
    assert count_case(fn, "cpu") == (want, want_ops)


@pytest.mark.parametrize("name", sorted(CASES))
def test_meta_equals_cpu(name: str) -> None:
    fn = CASES[name][0]
    assert count_case(fn, "meta") == count_case(fn, "cpu")


def test_bincount_and_nonzero_count_input_elements() -> None:
    ids = torch.tensor([0, 2, 2, 5, 1])
    total, ops, out = count_ops(torch.bincount, ids)
    assert set(ops) == {"aten.bincount"}
    assert total == Counters(vector_flops=5, bytes_read=5 * I64, bytes_written=6 * I64)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    total, ops, out = count_ops(torch.nonzero, mask)
    assert total == Counters(vector_flops=6, bytes_read=6, bytes_written=3 * 2 * I64)


class Router(torch.nn.Module):
    """Mixtral-style routing and the grouped-mm bookkeeping of transformers' MoE experts."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        _, experts = torch.topk(probs, K, dim=-1)
        flat = experts.reshape(-1)
        order = torch.argsort(flat)
        counts = torch.histc(flat.float(), bins=E, min=0, max=E - 1)
        offsets = torch.cumsum(counts, dim=0)
        return offsets + order[:E].float()


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_moe_routing_fully_covered_and_counted(device: str) -> None:
    logits = (torch.randn(T, E) if device == "cpu" else torch.empty(T, E, device="meta"))
    model = Router()
    with torch.inference_mode(), trace(model) as t:
        model(logits)
    assert t.uncovered_ops == {}
    ops = t.calls[0].ops
    rows = T * K
    want = {"aten._softmax": 5 * T * E, "aten.topk": T * E, "aten.sort": rows,
            "aten.histc": rows, "aten.cumsum": E}
    assert {k: ops[k].vector_flops for k in want} == want
    # _to_copy (float casts) and the add make up the rest: 1 per output element of the add
    assert t.totals.vector_flops == sum(want.values()) + E
