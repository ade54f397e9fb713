"""Reconciliation on a hand-written nested module: exact call tree, statuses, sum-of-children
prediction for a class without a formula, uncovered parts and coverage, all hand-derived."""
from __future__ import annotations

import torch
import torch.nn as nn

from formula_db.registry import Registry
from lm_predictor.reconcile import reconcile, relative_error
from tracing import trace

REG = Registry.default(include_user=False)
B, D, H = 3, 5, 7  # odd sizes
F4 = 4  # float32 bytes


class Inner(nn.Module):
    """No formula: Linear + an own op (x * 2) that no formula explains."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * 2


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()
        self.act = nn.ReLU()
        self.head = nn.Linear(H, D, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.inner(x)))


def run(device: str):
    with torch.device(device):
        model = Outer().eval()
        x = torch.randn(B, D)
    with torch.no_grad(), trace(model) as t:
        model(x)
    return t, reconcile(t, REG)


def test_call_tree_statuses_and_sum_of_children() -> None:
    t, recon = run("cpu")
    assert [(c.module_path, c.parent_call_id, c.depth) for c in t.calls] == [
        ("", None, 0), ("inner", 0, 1), ("inner.fc", 1, 2), ("act", 0, 1), ("head", 0, 1)]
    status = {t.calls[r.call_id].module_path: r.status for r in recon.calls}
    assert status == {"": "no_formula", "inner": "no_formula", "inner.fc": "exact",
                      "act": "exact", "head": "exact"}
    inner = recon.calls[1]
    # Inner's own op: mul by 2 on a (B, H) tensor: 1 vector FLOP per element, reads and writes B*H
    assert inner.uncovered == {"flops": 0, "vector_flops": B * H, "bytes_read": F4 * B * H,
                               "bytes_written": F4 * B * H, "activation_bytes": F4 * B * H}
    fc_flops = 2 * B * D * H
    assert inner.predicted["flops"] == fc_flops == inner.measured["flops"]
    assert inner.predicted["vector_flops"] == B * H + B * H  # bias add (addmm) + own mul
    root = recon.calls[0]
    total_flops = fc_flops + 2 * B * H * D
    assert root.predicted["flops"] == root.measured["flops"] == total_flops
    assert recon.measured_totals["flops"] == total_flops


def test_coverage_is_the_explained_share() -> None:
    t, recon = run("cpu")
    assert recon.coverage["flops"] == 1.0  # all matmuls sit in Linear calls
    total = t.totals
    unexplained = 2 * F4 * B * H  # Inner's own mul: read + write
    assert recon.coverage["bytes"] == (total.bytes_read + total.bytes_written - unexplained) / (
        total.bytes_read + total.bytes_written)
    assert {k.rsplit(".", 1)[-1]: v for k, v in recon.uncovered_classes.items()} == {
        "Inner": 1, "Outer": 1}


def test_meta_equals_cpu() -> None:
    _, cpu = run("cpu")
    _, meta = run("meta")
    assert [(c.status, c.measured, c.predicted) for c in cpu.calls] == \
        [(c.status, c.measured, c.predicted) for c in meta.calls]


def test_mismatch_and_tolerance() -> None:
    t, _ = run("cpu")
    recon = reconcile(t, REG, rtol=0.5)
    assert all(c.status in ("exact", "no_formula") for c in recon.calls)
    assert relative_error(110, 100) == 0.1
    assert relative_error(0, 0) == 0.0
    assert relative_error(5, 0) is None


def test_a_broken_bind_is_a_mismatch_with_the_reason(tmp_path) -> None:
    from formula_db.registry import Layer
    from formula_db.schema import FormulaDatabase, FormulaEntry

    bad = FormulaEntry.model_validate({
        "full_class_name": "torch.nn.ReLU",
        "parameters": [{"name": "n", "type": "int", "description": "", "bind": "module.nope"}],
        "flops": "0", "vector_flops": "${n}", "bytes_read": "0", "bytes_written": "0",
        "activation_bytes": "0"})
    reg = Registry(REG.layers + [Layer("user", None, FormulaDatabase(entries={bad.key: bad}))])
    t, _ = run("cpu")
    recon = reconcile(t, reg)
    act = recon.calls[3]
    assert act.status == "mismatch"
    assert "nope" in act.error
