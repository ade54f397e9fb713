"""Training-step traces: every backward op attributed to a module, totals equal to
FlopCounterMode's over the same step, meta == CPU, the attention backward chosen by a flag,
PyTorch's own flop-counter expectations for backward, activation checkpointing."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tracing import Trace, trace

from .models import Net, build, gpt2, llama

ZERO = {"flops": 0, "vector_flops": 0, "bytes_read": 0, "bytes_written": 0}


def net_step(model: nn.Module, device: str) -> None:
    ids = torch.arange(10, device=device).reshape(2, 5) % 50
    model(ids).float().pow(2).mean().backward()


def lm_step(model: nn.Module, device: str) -> None:
    ids = (torch.arange(16, device=device).reshape(2, 8) * 7) % 128
    model(input_ids=ids, labels=ids).loss.backward()


def traced(model: nn.Module, step: Callable[[nn.Module, str], None], device: str,
           **kwargs: Any) -> Trace:
    with trace(model, backward=True, **kwargs) as t:
        step(model, device)
    return t


def flop_counter_total(model: nn.Module, step: Callable[[nn.Module, str], None],
                       device: str) -> int:
    with FlopCounterMode(display=False) as mode:
        step(model, device)
    return mode.get_total_flops()


def per_call(t: Trace) -> list[tuple]:
    return [(c.module_path, c.phase, c.inclusive.as_dict(), c.backward_inclusive.as_dict(),
             {k: v.counters().as_dict() for k, v in c.backward_ops.items()
              if v.bytes_read or v.flops or v.vector_flops}) for c in t.calls]


def test_nested_module_attributes_every_backward_op() -> None:
    model = build(Net, "cpu")
    t = traced(model, net_step, "cpu")
    totals = t.step_totals()
    assert totals.unattributed.as_dict() == ZERO and not t.unattributed_ops
    assert totals.measured.flops == flop_counter_total(model, net_step, "cpu")
    # Linear backward: grad input (except where none is needed) + grad weight = 2x forward
    for path in ("blocks.0.fc", "blocks.1.out", "head"):
        call = t.by_path(path)[0]
        assert call.backward_self.flops == 2 * call.inclusive.flops > 0
        assert "aten.mm" in call.backward_ops
    assert "aten.native_layer_norm_backward" in t.by_path("blocks.0.ln")[0].backward_ops
    assert "aten.gelu_backward" in t.by_path("blocks.1.act")[0].backward_ops
    assert "aten.embedding_dense_backward" in t.by_path("emb")[0].backward_ops
    # the loss (computed after the model) is the only outside backward
    costly = {k for k, v in t.outside_backward_ops.items() if v.bytes_read or v.vector_flops}
    assert costly == {"aten.div", "aten.mul", "aten.pow"}  # mean and pow backward
    root = t.calls[0]
    assert root.backward_inclusive.flops + t.outside_backward.flops == totals.backward.flops


def test_nested_module_meta_equals_cpu() -> None:
    cpu, meta = (traced(build(Net, d), net_step, d) for d in ("cpu", "meta"))
    assert per_call(cpu) == per_call(meta)
    assert cpu.step_totals().as_dict() == meta.step_totals().as_dict()


@pytest.mark.parametrize("factory", [gpt2, llama], ids=["gpt2", "llama"])
def test_tiny_lm_step(factory: Callable[[], nn.Module]) -> None:
    pytest.importorskip("transformers")
    results = {}
    for device in ("cpu", "meta"):
        model = build(factory, device)
        model.eval()  # no attention dropout, so CPU's SDPA picks its flash kernel
        for kind in ("flash", "math"):
            t = traced(model, lm_step, device, attention_backward=kind)
            totals = t.step_totals()
            assert totals.unattributed.as_dict() == ZERO, (device, kind, t.unattributed_ops)
            assert t.attention_backward == kind
            results[device, kind] = (per_call(t), totals.as_dict())
        fcm = flop_counter_total(model, lm_step, device)
        # FlopCounterMode counts what the device ran: flash on CPU, the math decomposition on meta
        kind = "flash" if device == "cpu" else "math"
        assert results[device, kind][1]["measured"]["flops"] == fcm
    for kind in ("flash", "math"):
        assert results["cpu", kind] == results["meta", kind]
    flash, math = results["cpu", "flash"][1], results["cpu", "math"][1]
    assert flash["forward"] == math["forward"]
    assert flash["backward"]["flops"] > math["backward"]["flops"]


def test_attention_backward_is_attributed_to_the_attention_module() -> None:
    pytest.importorskip("transformers")
    t = traced(build(llama, "meta"), lm_step, "meta")
    attn = t.by_path("model.layers.0.self_attn")[0]
    assert attn.backward_ops["aten.scaled_dot_product_attention_backward"].count == 1
    assert t.attention_backward == "flash"  # the default on meta: what cpu/cuda run


class MmExpandBmm(nn.Module):
    """torch's test_flop_counter.py test_backward: mm -> unsqueeze/expand -> bmm -> sum."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = torch.mm(a, torch.randn(5, 6))
        a = a.unsqueeze(0).expand(7, 4, 6)
        return torch.bmm(a, torch.randn(7, 6, 7))


def test_pytorch_backward_expectation_mm_expand_bmm() -> None:
    module = MmExpandBmm()
    a = torch.randn(4, 5, requires_grad=True)
    with trace(module, backward=True) as t:
        module(a).sum().backward()
    totals = t.step_totals()
    assert totals.measured.flops == 5184  # torch's assertExpectedInline value
    assert totals.forward.flops == 2 * 4 * 5 * 6 + 2 * 7 * 4 * 6 * 7
    assert t.calls[0].backward_self.flops == totals.backward.flops == 5184 - totals.forward.flops


class Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize(("kind", "ratio"), [("math", 2.0), ("flash", 2.5)])
def test_sdpa_backward_ratio(device: str, kind: str, ratio: float) -> None:
    """torch's test_sdpa: backward is 2x the forward FLOPs for math, 2.5x for flash."""
    shapes = [(4, 8, 128, 64), (4, 8, 256, 64), (4, 8, 256, 64)]
    q, k, v = (torch.randn(s, device=device, requires_grad=True) for s in shapes)
    module = Attention()
    with trace(module, backward=True, attention_backward=kind) as t:
        module(q, k, v).sum().backward()
    call = t.calls[0]
    forward = 2 * 4 * 8 * 128 * 256 * 64 * 2
    assert call.inclusive.flops == forward
    assert call.backward_self.flops == ratio * forward
    assert t.step_totals().unattributed.as_dict() == ZERO


def test_attention_backward_flag_is_checked() -> None:
    with pytest.raises(ValueError, match="attention_backward must be one of flash, math"):
        with trace(Attention(), backward=True, attention_backward="fused"):
            pass


@pytest.mark.parametrize("mode", ["reentrant", "non_reentrant_full"])
def test_checkpointing_counts_the_recomputed_forward(mode: str) -> None:
    """Full recomputation: checkpointed step = plain step + one forward of the blocks."""
    factory = lambda: Net(checkpointing=True, reentrant=mode == "reentrant")  # noqa: E731
    plain_model, ckpt_model = build(Net, "cpu"), build(factory, "cpu")
    plain = traced(plain_model, net_step, "cpu")
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):
        ckpt = traced(ckpt_model, net_step, "cpu")
        fcm = flop_counter_total(ckpt_model, net_step, "cpu")
        meta = traced(build(factory, "meta"), net_step, "meta")
    blocks = [c for c in plain.calls if c.module_path in ("blocks.0", "blocks.1")]
    blocks_forward = sum(c.inclusive.flops for c in blocks)
    p, c = plain.step_totals(), ckpt.step_totals()
    assert c.unattributed.as_dict() == ZERO
    assert c.measured.flops == p.measured.flops + blocks_forward == fcm
    assert c.recompute.flops == blocks_forward > 0
    assert c.recompute.vector_flops == sum(b.inclusive.vector_flops for b in blocks)
    assert c.forward.flops == p.forward.flops and c.backward.flops == p.backward.flops
    recomputed = [x.module_path for x in ckpt.calls if x.phase == "recompute"]
    assert recomputed.count("blocks.0") == recomputed.count("blocks.1") == 1
    assert meta.step_totals().as_dict() == c.as_dict()


def test_checkpointing_early_stop_counts_what_is_recomputed() -> None:
    """torch's default non-reentrant checkpoint stops recomputing once the saved tensors backward
    needs exist (here: before each block's last Linear); the trace counts exactly those calls."""
    plain = traced(build(Net, "cpu"), net_step, "cpu")
    ckpt_model = build(lambda: Net(checkpointing=True), "cpu")
    ckpt = traced(ckpt_model, net_step, "cpu")
    recomputed = {x.module_path for x in ckpt.calls if x.phase == "recompute"}
    assert {"blocks.0.fc", "blocks.1.fc"} <= recomputed
    # ln, fc, act, drop are re-run; the stop comes while `out` saves its input, before its mm
    fcs = [c for c in plain.calls if c.module_path in ("blocks.0.fc", "blocks.1.fc")]
    c = ckpt.step_totals()
    assert c.recompute.flops == sum(x.inclusive.flops for x in fcs) > 0
    assert c.measured.flops == plain.step_totals().measured.flops + c.recompute.flops
    assert c.measured.flops == flop_counter_total(ckpt_model, net_step, "cpu")


def test_trace_training_step_with_hf_checkpointing() -> None:
    """The helper `analyze --phase train` runs: labels default to input_ids; transformers'
    activation checkpointing adds exactly one forward of the decoder layers (early stop off);
    meta == CPU; the model is restored."""
    pytest.importorskip("transformers")
    from tracing.train import TrainingStepError, trace_training_step

    results = {}
    for device in ("cpu", "meta"):
        model = build(llama, device)
        model.eval()
        ids = (torch.arange(16, device=device).reshape(2, 8) * 7) % 128
        plain = trace_training_step(model, {"input_ids": ids})
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):
            ckpt = trace_training_step(model, {"input_ids": ids}, checkpointing=True)
        assert not model.training and not model.is_activation_checkpointing
        assert all(p.grad is None for p in model.parameters())
        p, c = plain.step_totals(), ckpt.step_totals()
        assert p.unattributed.flops == c.unattributed.flops == 0
        layers = sum(x.inclusive.flops for x in plain.calls
                     if x.module_path in ("model.layers.0", "model.layers.1"))
        assert c.recompute.flops == layers > 0
        assert c.measured.flops == p.measured.flops + layers
        # FLOPs equal; bytes differ: checkpointed layers skip the KV-cache writes that a plain
        # transformers forward (use_cache on by default) makes
        assert c.forward.flops == p.forward.flops and c.backward.flops == p.backward.flops
        assert "model.layers.1.self_attn" in {x.module_path for x in ckpt.calls
                                              if x.phase == "recompute"}
        assert ckpt.saved_activation_bytes < plain.saved_activation_bytes
        results[device] = (p.as_dict(), c.as_dict(), plain.saved_activation_bytes,
                           ckpt.saved_activation_bytes)
    assert results["cpu"] == results["meta"]
    with pytest.raises(TrainingStepError, match="does not support activation checkpointing"):
        trace_training_step(build(Net, "meta"), {"ids": ids}, checkpointing=True,
                            loss_fn=lambda out: out.float().pow(2).mean())


def test_autocast_on_meta_is_refused() -> None:
    """torch.autocast leaves meta tensors in full precision: a meta training step under it is
    refused with the fix instead of silently counting float32."""
    from tracing.train import TrainingStepError, trace_training_step

    model = Net().to("meta")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TrainingStepError,
                                                                     match="autocast"):
        trace_training_step(model, {"ids": torch.zeros(2, 8, dtype=torch.long, device="meta")},
                            loss_fn=lambda out: out.sum())
