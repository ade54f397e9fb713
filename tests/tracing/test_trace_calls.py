"""trace() on hand-written modules: call tree, hand-derived counters, memory, hooks, uncovered
ops."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from formula_db.meta import TensorMeta, ValueSummary
from tracing import Counters, count_ops, trace
from tracing.records import METRICS

M, K, N = 4, 8, 16
F32 = 4


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(N, N)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(K, N)
        self.inner = Inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.inner(self.fc(x)))


def linear_cost(m: int, k: int, n: int) -> Counters:
    """aten.t (view, free) + aten.addmm(bias, x, W.t()): 2mnk FLOPs, bias add m*n vector FLOPs,
    reads bias + x + W, writes the m x n output."""
    return Counters(flops=2 * m * n * k, vector_flops=m * n,
                    bytes_read=(n + m * k + n * k) * F32, bytes_written=m * n * F32)


RELU = Counters(vector_flops=M * N, bytes_read=M * N * F32, bytes_written=M * N * F32)


def summed(*cs: Counters) -> Counters:
    total = Counters()
    for c in cs:
        total.add(c)
    return total


@pytest.fixture(scope="module")
def nested() -> tuple[Outer, object]:
    torch.manual_seed(0)
    model = Outer().eval()
    with torch.no_grad(), trace(model) as t:
        model(torch.randn(M, K))
    return model, t


def test_call_tree(nested: tuple[Outer, object]) -> None:
    _, t = nested
    got = [(c.call_id, c.parent_call_id, c.depth, c.module_path) for c in t.calls]
    assert got == [
        (0, None, 0, ""), (1, 0, 1, "fc"),
        (2, 0, 1, "inner"), (3, 2, 2, "inner.fc"), (4, 2, 2, "inner.act"),
        (5, 0, 1, "inner"), (6, 5, 2, "inner.fc"), (7, 5, 2, "inner.act"),
    ]
    assert [c.children for c in t.calls[:3]] == [[1, 2, 5], [], [3, 4]]
    assert [c.call_id for c in t.by_path("inner")] == [2, 5]
    assert [c.call_id for c in t.roots()] == [0]
    assert [c.call_id for c in t.children(t.calls[5])] == [6, 7]
    assert t.calls[1].class_name == "torch.nn.Linear"
    assert t.calls[1].formula_key == "torch__nn__Linear"
    assert t.calls[0].class_name.endswith(".Outer")
    assert t.calls[1].inputs == (TensorMeta((M, K), "float32", "cpu", 4),)
    assert t.calls[1].outputs == TensorMeta((M, N), "float32", "cpu", 4)
    assert t.calls[1].attributes == {"training": False, "in_features": K, "out_features": N,
                                     "has_weight": True, "has_bias": True, "list_index": None,
                                     "block_index": None,
                                         "weight_requires_grad": True, "inference_mode": False}
    # `list_index`: position in the parent container (a Sequential/ModuleList child's name)


def test_hand_derived_counters(nested: tuple[Outer, object]) -> None:
    _, t = nested
    outer_fc, inner_fc = linear_cost(M, K, N), linear_cost(M, N, N)
    assert t.calls[1].self_counters == outer_fc
    assert t.calls[3].self_counters == inner_fc
    assert t.calls[4].self_counters == RELU
    assert t.calls[2].self_counters == Counters()  # Inner itself runs no op
    assert t.calls[2].inclusive == summed(inner_fc, RELU)
    assert t.calls[0].inclusive == summed(outer_fc, inner_fc, RELU, inner_fc, RELU)
    assert t.totals.flops == 2 * M * N * K + 2 * (2 * M * N * N)
    assert {k: (v.count, v.flops) for k, v in t.calls[1].ops.items()} == {
        "aten.t": (1, 0), "aten.addmm": (1, 2 * M * N * K)}
    assert t.uncovered_ops == {}
    assert t.weight_bytes == ((K * N + N) + (N * N + N)) * F32
    assert t.buffer_bytes == 0


def test_inclusive_is_self_plus_children(nested: tuple[Outer, object]) -> None:
    _, t = nested
    for call in t.calls:
        expected = summed(call.self_counters, *(c.inclusive for c in t.children(call)))
        assert call.inclusive == expected


def test_ops_outside_modules_go_to_pseudo_root() -> None:
    model = nn.Linear(K, N)
    with torch.no_grad(), trace(model) as t:
        x = torch.ones(M, K)
        y = model(x) * 2
    assert t.outside_ops["aten.mul"].vector_flops == M * N
    assert "aten.ones" in t.outside_ops
    assert t.totals == summed(t.calls[0].inclusive, t.outside)
    assert y.shape == (M, N)


def test_activation_memory_linear() -> None:
    model = nn.Linear(K, N)
    x = torch.ones(M, K)
    with torch.no_grad(), trace(model) as t:
        y = model(x)
    assert t.calls[0].activation_bytes == M * N * F32
    assert t.calls[0].peak_activation_bytes == M * N * F32
    assert t.peak_activation_bytes == M * N * F32
    assert y.shape == (M, N)


class TempThenReduce(nn.Module):
    """Creates an M*K temporary, returns its row sums and a view of a kept tensor."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tmp = x * 2
        kept = x + 1
        return tmp.sum(-1), kept.view(-1), kept.t()


def test_activation_memory_temporaries_and_views() -> None:
    model = TempThenReduce()
    x = torch.ones(M, K)  # created before the trace: never an activation
    with trace(model) as t:
        outs = model(x)
    call = t.calls[0]
    assert call.activation_bytes == M * F32 + M * K * F32  # sum output + kept (views counted once)
    assert call.peak_activation_bytes == 2 * M * K * F32 + M * F32  # tmp, kept, sum alive together
    assert len(outs) == 3


def test_activation_memory_nested_calls(nested: tuple[Outer, object]) -> None:
    _, t = nested
    out = M * N * F32
    # Inner: the fc output dies after act returns; only act's output is left.
    assert [c.activation_bytes for c in t.by_path("inner")] == [out, out]
    # inside Inner, fc output and relu output are alive together
    assert [c.peak_activation_bytes for c in t.by_path("inner")] == [2 * out, 2 * out]
    assert t.calls[0].activation_bytes == out


def test_wall_time_cpu_and_meta() -> None:
    model = nn.Linear(K, N)
    with trace(model) as t:
        model(torch.ones(M, K))
    assert t.device == "cpu" and t.calls[0].wall_time_s is not None and t.calls[0].wall_time_s >= 0
    with trace(model, device_timing=False) as t:
        model(torch.ones(M, K))
    assert t.calls[0].wall_time_s is None
    with torch.device("meta"):
        meta_model = nn.Linear(K, N)
    with trace(meta_model) as t:
        meta_model(torch.ones(M, K, device="meta"))
    assert t.device == "meta" and t.calls[0].wall_time_s is None
    assert t.calls[0].inclusive.flops == 2 * M * N * K


class Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(K, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"boom {self.fc(x).shape}")


def test_hooks_and_modes_removed_after_exception() -> None:
    model = Boom()
    with pytest.raises(ValueError, match="boom"):
        with trace(model) as t:
            model(torch.ones(M, K))
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._forward_hooks_always_called and not m._forward_hooks_with_kwargs
    assert torch._C._len_torch_dispatch_stack() == 0
    assert torch._C._len_torch_function_stack() == 0
    assert [c.module_path for c in t.calls] == ["", "fc"]
    assert t.calls[0].inclusive.flops == 2 * M * N * K
    model.fc = nn.Identity()  # runs normally, no hook left behind
    with pytest.raises(ValueError):
        model(torch.ones(M, K))


class Scans(nn.Module):
    """Ops deliberately outside tracing.optable (special functions, mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.special.i0e(x)
        b = torch.special.i0e(a)
        return torch.mode(b, dim=-1).values


def test_uncovered_ops_reported_with_bytes() -> None:
    x = torch.randn(M, K)
    with torch.no_grad(), trace(Scans()) as t:
        Scans()(x)  # a module not registered with the trace: its ops go outside
    assert t.uncovered_ops == {"aten.special_i0e": 2, "aten.mode": 1}
    model = Scans()
    with torch.no_grad(), trace(model) as t:
        model(x)
    assert t.uncovered_ops == {"aten.special_i0e": 2, "aten.mode": 1}
    i0e = t.calls[0].ops["aten.special_i0e"]
    assert (i0e.count, i0e.flops, i0e.vector_flops) == (2, 0, 0)
    assert (i0e.bytes_read, i0e.bytes_written) == (2 * M * K * F32, 2 * M * K * F32)
    mode = t.calls[0].ops["aten.mode"]
    assert mode.bytes_written == M * F32 + M * 8  # values + int64 indices


def test_attributes_and_config() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    with trace(conv) as t:
        conv(torch.ones(1, 3, 8, 8))
    attrs = t.calls[0].attributes
    assert attrs["kernel_size"] == (3, 3) and attrs["stride"] == (2, 2)
    assert attrs["padding"] == (1, 1) and attrs["dilation"] == (1, 1)
    assert attrs["in_channels"] == 3 and attrs["padding_mode"] == "zeros" and attrs["groups"] == 1
    assert attrs["has_bias"] is True and not any(k.startswith("_") for k in attrs)

    class Config:
        def to_dict(self) -> dict:
            return {"hidden": 64, "act": "gelu", "eps": 1e-5, "tied": True, "pad": None,
                    "layers": [1, 2], "sub": {"a": 1}}

    class WithConfig(nn.Linear):
        config = Config()

    model = WithConfig(K, N)
    with trace(model) as t:
        model(torch.ones(M, K), )
    assert t.config == {"hidden": 64, "act": "gelu", "eps": 1e-5, "tied": True, "pad": None}


def test_kwargs_described_and_repeated_module() -> None:
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor, *, factor: float) -> torch.Tensor:
            return x * factor

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = Scale()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.s(self.s(x, factor=2.0), factor=3.0)

    model = Twice()
    with trace(model) as t:
        model(torch.ones(M, K))
    calls = t.by_path("s")
    assert [c.kwargs for c in calls] == [{"factor": ValueSummary("float", 2.0)},
                                         {"factor": ValueSummary("float", 3.0)}]
    assert [c.self_counters.vector_flops for c in calls] == [M * K, M * K]


def test_count_ops_plain_function() -> None:
    a, b = torch.ones(3, M, K), torch.ones(3, K, N)
    counters, ops, out = count_ops(torch.bmm, a, b)
    assert out.shape == (3, M, N)
    assert counters.flops == 2 * 3 * M * N * K
    assert counters.bytes_read == (a.numel() + b.numel()) * F32
    assert counters.bytes_written == 3 * M * N * F32
    assert set(ops) == {"aten.bmm"}
    assert set(counters.as_dict()) == set(METRICS)
