"""The Python API on a hand-written module, against hand-computed figures: the trace summaries
(`repr`, `total()`, `get_total_flops()`, `by_module()`, `by_class()`, `by_operator()`, `tree()`,
`by_path`), forward and training step, and `analyze(nn.Module, ...)` (reconciled, stored,
padded masks refused), and the README's "From Python" example.

The module: Net = block (Inner: fc1 = Linear(8, 4), act = ReLU) then fc2 = Linear(4, 3), on x of
(2, 8) float32 (4 B per element). Hand-computed from the counting rules (DESIGN.md, "Tracing"):
- fc1: addmm FLOPs 2*2*8*4 = 128; vector 2*4 = 8 (bias add); read x 64 + weight 128 + bias 16
  = 208 B; written 2*4*4 = 32 B.
- act: relu vector 8; read 32 B, written 32 B.
- fc2: FLOPs 2*2*4*3 = 48; vector 6; read 32 + 48 + 12 = 92 B; written 24 B.
- block = fc1 + act: 128 FLOP, 16 vector, 240 B read, 64 B written; Net: 176, 22, 332, 88.
- activation peak: fc1's output (32 B) alive while relu writes its own (32 B): 64 B.
- backward of sum(Net(x)) (x needs no gradient): fc2 grad input 2*2*3*4 = 48 and grad weight
  2*3*2*4 = 48; fc1 grad weight only, 2*4*2*8 = 128: 224 FLOP.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

import lm_predictor
from lm_predictor.errors import ModelError
from lm_predictor.run import module_hash
from tracing import trace

METRICS = ("flops", "vector_flops", "bytes_read", "bytes_written")


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc1(x))


class Net(nn.Module):
    def __init__(self, checkpointed: bool = False) -> None:
        super().__init__()
        self.block = Inner()
        self.fc2 = nn.Linear(4, 3)
        self.checkpointed = checkpointed

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = checkpoint(self.block, x, use_reentrant=False) if self.checkpointed else self.block(x)
        return self.fc2(h)


def name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


FC1 = dict(flops=128, vector_flops=8, bytes_read=208, bytes_written=32)
ACT = dict(flops=0, vector_flops=8, bytes_read=32, bytes_written=32)
FC2 = dict(flops=48, vector_flops=6, bytes_read=92, bytes_written=24)
BLOCK = {m: FC1[m] + ACT[m] for m in METRICS}
NET = {m: BLOCK[m] + FC2[m] for m in METRICS}
BACKWARD_FLOPS = {"block.fc1": 128, "block.act": 0, "fc2": 96}


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.ones(2, 8)


@pytest.fixture(scope="module")
def forward(x: torch.Tensor):  # noqa: ANN201 - a Trace
    model = Net()
    with torch.inference_mode(), trace(model) as t:
        model(x)
    return t


@pytest.fixture(scope="module")
def step(x: torch.Tensor):  # noqa: ANN201 - a training-step Trace
    model = Net()
    with trace(model, backward=True) as t:
        model(x).sum().backward()
    return t


def test_repr_is_one_short_line(forward, step) -> None:
    assert repr(forward) == "Trace(Net, 5 calls, 176 FLOP, 420 B moved, peak 64 B)"
    assert repr(step).startswith("Trace(Net training step, 5 calls, 400 FLOP, ")
    assert repr(forward.by_path["block.fc1"][0]) == "CallRecord(#2 'block.fc1' Linear, 128 FLOP, " \
                                                    "240 B moved)"


def test_total_and_get_total_flops(forward, x: torch.Tensor) -> None:
    assert forward.total() == {**NET, "peak_activation_bytes": 64}
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        Net()(x)
    assert forward.get_total_flops() == counter.get_total_flops() == 176


def test_by_module_is_inclusive_per_path(forward) -> None:
    assert forward.by_module() == {
        "": {"calls": 1, **NET}, "block": {"calls": 1, **BLOCK},
        "block.fc1": {"calls": 1, **FC1}, "block.act": {"calls": 1, **ACT},
        "fc2": {"calls": 1, **FC2}}


def test_by_class_self_and_inclusive(forward) -> None:
    zero = dict.fromkeys(METRICS, 0)
    linear = {m: FC1[m] + FC2[m] for m in METRICS}
    self_of = lambda d: {f"self_{m}": v for m, v in d.items()}  # noqa: E731
    assert forward.by_class() == {
        name(Net): {"calls": 1, **NET, **self_of(zero)},
        name(Inner): {"calls": 1, **BLOCK, **self_of(zero)},
        "torch.nn.Linear": {"calls": 2, **linear, **self_of(linear)},
        "torch.nn.ReLU": {"calls": 1, **ACT, **self_of(ACT)}}


def test_by_operator_whole_trace(forward) -> None:
    ops = forward.by_operator()
    assert list(ops) == ["aten.addmm", "aten.relu", "aten.t"]  # most FLOPs, then most bytes
    assert ops["aten.addmm"] == {"count": 2, **{m: FC1[m] + FC2[m] for m in METRICS}}
    assert ops["aten.relu"] == {"count": 1, **ACT}
    assert ops["aten.t"] == {"count": 2, **dict.fromkeys(METRICS, 0)}  # a view moves nothing


def test_tree_rows_and_depth(forward) -> None:
    lines = forward.tree().splitlines()
    assert lines[0] == "Net, 5 calls, 176 FLOP, 420 B moved, peak 64 B"
    assert lines[1].split() == "module class calls FLOP % FLOP vector FLOP moved B".split()
    rows = {line.split()[0]: line for line in lines[2:7]}
    # module, class, calls, FLOP, % FLOP, vector FLOP, bytes moved
    assert rows["(model)"].split() == ["(model)", "Net", "1", "176", "100.0", "22", "420"]
    assert rows["block"].split() == ["block", "Inner", "1", "128", "72.7", "16", "304"]
    assert rows["fc1"].split() == ["fc1", "Linear", "1", "128", "72.7", "8", "240"]
    assert rows["act"].split() == ["act", "ReLU", "1", "0", "0.0", "8", "64"]
    assert rows["fc2"].split() == ["fc2", "Linear", "1", "48", "27.3", "6", "116"]
    assert rows["block"].startswith("  block") and rows["fc1"].startswith("    fc1")
    assert lines[7].split() == ["total", "5", "176", "100.0", "22", "420"]
    assert all(len(line) <= 80 for line in lines)
    shallow = [line.split()[0] for line in forward.tree(depth=1).splitlines()[2:5]]
    assert shallow == ["(model)", "block", "fc2"]


def test_by_path_is_a_mapping(forward) -> None:
    assert list(forward.by_path) == ["", "block", "block.fc1", "block.act", "fc2"]
    assert forward.by_path["block.fc1"][0].inclusive.flops == 128
    assert forward.by_path("block.fc1") == forward.by_path["block.fc1"]
    assert forward.by_path("nowhere") == []
    with pytest.raises(KeyError, match="block.fc1"):
        forward.by_path["fc1"]


def test_module_called_twice_sums_its_calls() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(self.lin(x))

    model = Twice()
    with torch.inference_mode(), trace(model) as t:
        model(torch.ones(3, 4))
    assert t.by_module()["lin"]["calls"] == 2
    assert t.by_module()["lin"]["flops"] == 2 * (2 * 3 * 4 * 4)
    assert len(t.by_path["lin"]) == 2


def test_training_step_splits_forward_and_backward(step, x: torch.Tensor) -> None:
    total = step.total()
    assert total["forward_flops"] == 176 and total["backward_flops"] == 224
    assert total["flops"] == 400
    for m in METRICS:
        assert total[m] == total[f"forward_{m}"] + total[f"backward_{m}"]
    with FlopCounterMode(display=False) as counter:
        Net()(x).sum().backward()
    assert step.get_total_flops() == counter.get_total_flops() == 400
    modules = step.by_module()
    for path, flops in BACKWARD_FLOPS.items():
        assert modules[path]["backward_flops"] == flops
        assert modules[path]["flops"] == modules[path]["forward_flops"] + flops
    assert modules[""]["backward_flops"] == 224 and modules["block"]["backward_flops"] == 128
    linear = step.by_class()["torch.nn.Linear"]
    assert linear["backward_flops"] == linear["self_backward_flops"] == 224
    assert linear["self_forward_flops"] == 176
    ops = step.by_operator()
    assert sum(op["flops"] for op in ops.values()) == 400
    assert sum(op["backward_flops"] for op in ops.values()) == 224
    tree = step.tree().splitlines()
    assert tree[1].split()[-2:] == ["bwd", "FLOP"]
    assert all(len(line) <= 80 for line in tree)
    assert next(r for r in tree if r.startswith("(model)")).split()[-1] == "224"


def test_checkpointed_recompute_counts_in_ancestors(x: torch.Tensor) -> None:
    model = Net(checkpointed=True)
    with trace(model, backward=True) as t:
        model(x).sum().backward()
    total = t.total()
    assert total["recompute_flops"] == 128  # block's forward again, during backward
    assert total["flops"] == 176 + 128 + 224
    with FlopCounterMode(display=False) as counter:
        Net(checkpointed=True)(x).sum().backward()
    assert t.get_total_flops() == counter.get_total_flops()
    modules = t.by_module()
    assert modules["block"]["calls"] == 2 and modules["block"]["recompute_flops"] == 128
    assert modules[""]["recompute_flops"] == 128 and modules[""]["flops"] == 528
    assert modules["fc2"].get("recompute_flops") == 0


# --- analyze(nn.Module) ------------------------------------------------------------------------


def test_analyze_module_reconciles_and_stores(x: torch.Tensor, tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    model = Net()
    result = lm_predictor.analyze(model, args=(x,), db=db)
    by_call = {result.trace.calls[r.call_id].module_path: r for r in result.recon.calls}
    for path in ("block.fc1", "block.act", "fc2"):  # builtin Linear / ReLU formulas
        assert by_call[path].status == "exact", path
    assert by_call[""].status == by_call["block"].status == "no_formula"
    for m in METRICS:
        assert result.recon.measured_totals[m] == NET[m]
        assert result.recon.predicted_totals[m] == NET[m]
    assert result.recon.coverage == {"flops": 1.0, "bytes": 1.0}
    assert result.meta.model_id == "Net" and result.meta.config_hash == module_hash(model)
    assert (result.meta.batch_size, result.meta.seq_len, result.meta.dtype,
            result.meta.device) == (2, 1, "float32", "cpu")
    assert result.parameters == 8 * 4 + 4 + 4 * 3 + 3
    con = lm_predictor.connect(db)
    try:
        rows = con.execute("SELECT run_id, model_id, config_hash, measured_flops, predicted_flops "
                       "FROM runs").fetchall()
        calls = con.execute("SELECT count(*) FROM calls").fetchall()[0][0]
    finally:
        con.close()
    assert rows == [(result.run_id, "Net", module_hash(model), 176, 176)]
    assert calls == 5
    by_name = lm_predictor.analyze(model, inputs={"x": x}, db=None)
    assert by_name.recon.measured_totals == result.recon.measured_totals


def test_module_hash_follows_shapes() -> None:
    assert module_hash(Net()) == module_hash(Net())  # other weights, same shapes
    other = Net()
    other.fc2 = nn.Linear(4, 5)
    assert module_hash(other) != module_hash(Net())


def test_analyze_module_training_step(x: torch.Tensor) -> None:
    result = lm_predictor.analyze(Net(), inputs={"x": x}, phase="train",
                                  loss_fn=lambda out: out.sum(), db=None)
    assert result.trace.total()["backward_flops"] == 224
    backward = {result.trace.calls[r.call_id].module_path: r.backward for r in result.recon.calls}
    assert backward["block.fc1"].status == backward["fc2"].status == "exact"
    with pytest.raises(ModelError, match="loss_fn"):
        lm_predictor.analyze(Net(), inputs={"x": x}, phase="train", db=None)


def test_analyze_hf_module_equals_model_id(tmp_path: Path) -> None:
    from lm_predictor.models import build_model, load_preset, tiny_config

    config = tiny_config(load_preset("gpt2"))
    path = tmp_path / "config.json"
    config.to_json_file(str(path))
    by_id = lm_predictor.analyze(str(path), batch_size=2, seq_len=7, db=None, cover=False)
    model = build_model(config, device="meta")
    ids = torch.zeros(2, 7, dtype=torch.long, device="meta")
    mine = lm_predictor.analyze(model, inputs={"input_ids": ids}, db=None, cover=False)
    assert mine.recon.measured_totals == by_id.recon.measured_totals
    assert mine.meta.config_hash == by_id.meta.config_hash
    assert (mine.meta.model_id, mine.meta.batch_size, mine.meta.seq_len,
            mine.meta.device) == ("GPT2LMHeadModel", 2, 7, "meta")


def test_padded_attention_mask_is_refused(x: torch.Tensor) -> None:
    padded = torch.tensor([[1, 1, 0], [1, 1, 1]])
    with pytest.raises(ModelError, match="padded batches are not modelled") as info:
        lm_predictor.analyze(Net(), inputs={"x": x, "attention_mask": padded}, db=None)
    assert "\n" not in str(info.value) and "rtol" in str(info.value)
    tolerated = lm_predictor.analyze(Net(), inputs={"x": x, "attention_mask": padded},
                                     rtol=0.1, db=None)
    assert "padded" in tolerated.note
    unpadded = lm_predictor.analyze(Net(), inputs={"x": x, "attention_mask": torch.ones(2, 3)},
                                    db=None)
    assert unpadded.note == ""


def test_analyze_argument_errors(x: torch.Tensor) -> None:
    with pytest.raises(ModelError, match="example inputs"):
        lm_predictor.analyze(Net(), db=None)
    with pytest.raises(ModelError, match="model id"):
        lm_predictor.analyze("gpt2", args=(x,), db=None)
    with pytest.raises(ModelError, match="torch.nn.Module"):
        lm_predictor.analyze(42, args=(x,), db=None)


def test_readme_from_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The README's "From Python" block runs as written up to the model-id calls (run by
    tests/test_analyze.py and the README command test), and its commented figures hold."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"### From Python\n\n```python\n(.*?)```", readme, re.S).group(1)
    head = block.split("\nresult = ")[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LM_PREDICTOR_DB", str(tmp_path / "runs.duckdb"))
    monkeypatch.setenv("LM_PREDICTOR_FORMULAS", str(tmp_path / "formulas.json"))
    namespace: dict = {}
    exec(compile(head, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    t = namespace["t"]
    printed = capsys.readouterr().out
    shown = re.search(r"print\(t\)\s+# (.*)", head).group(1)
    assert repr(t) == shown and printed.startswith(shown)
    assert t.get_total_flops() == 2 * 2 * 8 * 4 + 2 * 2 * 4 * 2 == 160
    assert t.total()["bytes_read"] == 312 and t.total()["vector_flops"] == 20
    assert namespace["mine"].run_id is not None
