"""Vector-FLOP and byte conventions of tracing.optable / tracing.costs, op by op."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tracing import Counters, count_ops
from tracing.optable import RULES, VECTOR_OPS

M, K, N = 4, 8, 16
F32 = 4
X_BYTES = M * K * F32


def x() -> torch.Tensor:
    return torch.randn(M, K)


def test_table_is_consistent() -> None:
    assert set(VECTOR_OPS.values()) <= set(RULES)
    assert all(name.startswith("aten.") for name in VECTOR_OPS)
    # deliberately uncovered (the uncovered-op tests rely on it)
    assert "aten.special_i0e" not in VECTOR_OPS and "aten.mode" not in VECTOR_OPS


def test_pointwise_one_flop_per_output_element() -> None:
    a, b = x(), torch.randn(1, K)
    c, ops, _ = count_ops(torch.add, a, b)  # broadcast: output M*K, reads both inputs
    assert c == Counters(vector_flops=M * K, bytes_read=X_BYTES + K * F32, bytes_written=X_BYTES)
    c, _, _ = count_ops(F.gelu, a)
    assert c == Counters(vector_flops=M * K, bytes_read=X_BYTES, bytes_written=X_BYTES)


def test_reduction_counts_input_elements() -> None:
    c, _, _ = count_ops(torch.sum, x(), -1)
    assert c == Counters(vector_flops=M * K, bytes_read=X_BYTES, bytes_written=M * F32)


def test_softmax_five_per_element() -> None:
    c, ops, _ = count_ops(torch.softmax, x(), -1)
    assert set(ops) == {"aten._softmax"}
    assert c == Counters(vector_flops=5 * M * K, bytes_read=X_BYTES, bytes_written=X_BYTES)


def test_layer_norm_five_plus_affine() -> None:
    w, b = torch.ones(K), torch.zeros(K)
    with torch.no_grad():
        plain, _, _ = count_ops(F.layer_norm, x(), (K,))
        affine, _, _ = count_ops(F.layer_norm, x(), (K,), w, b)
    assert plain.vector_flops == 5 * M * K
    assert affine.vector_flops == 7 * M * K
    # reads x (+ w, b); writes out + mean + rstd (M each)
    assert affine.bytes_read == X_BYTES + 2 * K * F32
    assert affine.bytes_written == X_BYTES + 2 * M * F32


def test_batch_norm_eval_uses_given_stats() -> None:
    bn = torch.nn.BatchNorm1d(K).eval()
    with torch.no_grad():
        c, _, _ = count_ops(bn, x())
    assert c.vector_flops == (2 + 2) * M * K  # subtract/scale + weight/bias


def test_linear_bias_add_is_vector_flops() -> None:
    w, b = torch.randn(N, K), torch.randn(N)
    with torch.no_grad():
        with_bias, ops, _ = count_ops(F.linear, x(), w, b)
        without, ops_nb, _ = count_ops(F.linear, x(), w)
    assert set(ops) == {"aten.t", "aten.addmm"} and set(ops_nb) == {"aten.t", "aten.mm"}
    assert with_bias.flops == without.flops == 2 * M * N * K
    assert (with_bias.vector_flops, without.vector_flops) == (M * N, 0)


def test_conv_bias_epilogue() -> None:
    conv = torch.nn.Conv2d(3, 8, 3)
    with torch.no_grad():
        c, _, out = count_ops(conv, torch.randn(2, 3, 8, 8))
    assert c.flops == 2 * out.numel() * 3 * 3 * 3
    assert c.vector_flops == out.numel()


def test_views_move_no_bytes() -> None:
    a = x()
    for fn in (lambda: a.view(-1), lambda: a.t(), lambda: a.expand(2, M, K), lambda: a[1:],
               lambda: a.unsqueeze(0), lambda: a.split(2), lambda: a.detach(),
               lambda: a.reshape(K, M)):
        c, ops, _ = count_ops(fn)
        assert c == Counters(), ops


def test_in_place_and_copy_bytes() -> None:
    a, b = x(), x()
    c, ops, _ = count_ops(a.add_, 1.0)
    assert set(ops) == {"aten.add_"}
    assert c == Counters(vector_flops=M * K, bytes_read=X_BYTES, bytes_written=X_BYTES)
    c, ops, _ = count_ops(a.copy_, b)  # copy_ does not read its destination
    assert c == Counters(bytes_read=X_BYTES, bytes_written=X_BYTES)
    c, ops, _ = count_ops(torch.empty, M, K)
    assert c == Counters() and set(ops) == {"aten.empty"}
    c, ops, _ = count_ops(torch.zeros, M, K)
    assert c == Counters(bytes_written=X_BYTES)


def test_cat_reads_every_tensor_of_a_list() -> None:
    c, _, _ = count_ops(torch.cat, [x(), x(), x()])
    assert c == Counters(bytes_read=3 * X_BYTES, bytes_written=3 * X_BYTES)
