"""The agent from the command line on a tiny Llama (meta device), with scripted CLI sessions:
`module` on a miss, `agent`, `analyze --fill-gaps`, the credential checks and `agent_runs`.

The builtin layer is reduced to torch.nn (fixture `isolated`), so Llama's own classes have no
formula. `RMSNORM` is LlamaRMSNorm's entry, checked against the aten counter on float32 input:
pow, mean, add, rsqrt and two muls (x * rsqrt(var + eps), then weight * h).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from formula_db.schema import FormulaEntry
from formula_db.store import load_database, save_entry
from lm_predictor import agent as agent_cmd
from lm_predictor.cli import main
from lm_predictor.models import load_preset, tiny_config
from lm_predictor.store import Store

from .scripted import Call, Say

RMS = "transformers.models.llama.modeling_llama.LlamaRMSNorm"
RMS_KEY = "transformers__models__llama__modeling__llama__LlamaRMSNorm"
RMSNORM: dict[str, Any] = {
    "full_class_name": RMS,
    "parameters": [
        {"name": "rows", "type": "int", "description": "rows",
         "bind": "numel(input[0]) // input[0].shape[-1]"},
        {"name": "h", "type": "int", "description": "hidden size", "bind": "input[0].shape[-1]"},
        {"name": "s", "type": "int", "description": "bytes per element",
         "bind": "itemsize(output)"}],
    "flops": "0",
    "vector_flops": "4 * ${rows} * ${h} + 2 * ${rows}",
    "bytes_read": "4 * ${rows} * ${h} * ${s} + 3 * ${rows} * ${s} + ${h} * ${s}",
    "bytes_written": "3 * ${rows} * ${h} * ${s} + 3 * ${rows} * ${s}",
    "activation_bytes": "${rows} * ${h} * ${s}",
}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tiny-llama") / "config.json"
    tiny_config(load_preset("meta-llama/Llama-3.1-8B")).to_json_file(str(path))
    return str(path)


def rmsnorm_or_give_up(task: Any) -> list[Any]:
    if task.full_class_name == RMS:
        return [Call("reconcile", {"entry_json": json.dumps(RMSNORM)}), Say("reconciled")]
    return [Say("I cannot write this one.")]


def agent_runs(db: Path) -> list[tuple[Any, ...]]:
    return Store(db).query("SELECT full_class_name, outcome, cost_usd, num_turns, input_tokens, "
                           "output_tokens, submissions, transcript_path, duration_s "
                           "FROM agent_runs ORDER BY started_at")[1]


def test_module_miss_runs_the_agent_then_hits_the_cache(isolated: Path, tiny_llama: str,
                                                        scripted: Any,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert main(["analyze", "--no-cover", "--dtype", "float32", "--model-id", tiny_llama, "--seq-len", "8", "--json"]) == 0
    capsys.readouterr()  # a stored run that calls LlamaRMSNorm
    factory = scripted(rmsnorm_or_give_up)
    code = main(["module", RMS])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [t.full_class_name for t in factory.tasks] == [RMS]
    assert "running the formula agent" in err and "cached" in err
    assert RMS_KEY in out and "source agent" in out
    assert "transformers/models/llama/modeling_llama.py" in out
    task = factory.tasks[0]
    assert len(task.calls) == 2  # two shapes; identical layers merged
    assert {c.inputs[0].shape for c in task.calls} == {(1, 8, 64), (2, 5, 64)}
    assert all(c.count > 1 for c in task.calls)
    (row,) = agent_runs(isolated / "runs.duckdb")
    assert row[:7] == (RMS, "cached", pytest.approx(0.0123), 2, 1200, 340, 1)
    assert Path(row[7]).exists() and row[8] > 0
    # a cache hit: no second agent run
    code = main(["module", RMS])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and len(factory.tasks) == 1


def test_analyze_fill_gaps_runs_deepest_first_and_reconciles_again(
        isolated: Path, tiny_llama: str, scripted: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    factory = scripted(rmsnorm_or_give_up)
    code = main(["analyze", "--no-cover", "--dtype", "float32", "--model-id", tiny_llama, "--seq-len", "8", "--fill-gaps",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    order = [t.full_class_name for t in factory.tasks]
    trace = agent_cmd.trace_model(tiny_llama, ((1, 8),))[0]
    depth = {name: max(c.depth for c in trace.calls if c.class_name == name) for name in order}
    assert [depth[n] for n in order] == sorted((depth[n] for n in order), reverse=True)
    assert order[-1].endswith("LlamaForCausalLM") and RMS in order
    # parents see the child's new formula
    layer = next(t for t in factory.tasks if t.full_class_name.endswith("LlamaDecoderLayer"))
    norms = [c for c in layer.calls[0].children if c.class_name == RMS]
    assert norms and all(c.has_formula for c in norms)
    # the re-reconciled run: RMSNorm is covered, the other classes stay sums of children
    assert RMS not in summary["uncovered_classes"]
    assert any(name.endswith("LlamaMLP") for name in summary["uncovered_classes"])
    assert summary["totals"]["predicted"]["flops"] == summary["totals"]["measured"]["flops"]
    assert "formula agent, " + RMS + ": cached" in " ".join(err.split())
    rows = agent_runs(isolated / "runs.duckdb")
    assert [r[0] for r in rows] == order
    assert [r[1] for r in rows].count("cached") == 1
    assert RMS_KEY in load_database(isolated / "formulas.json").entries


def test_without_credentials(isolated: Path, tiny_llama: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["module", "somewhere.Missing"])
    _, err = capsys.readouterr()
    assert code == 3
    assert "formula agent not run" in err and "ANTHROPIC_API_KEY" in err
    assert "no formula for 'somewhere.Missing'" in err
    code = main(["agent", "LlamaRMSNorm", "--model-id", tiny_llama])
    _, err = capsys.readouterr()
    assert code == 6 and "ANTHROPIC_API_KEY" in err and err.count("\n") == 1
    code = main(["analyze", "--no-cover", "--dtype", "float32", "--model-id", tiny_llama, "--seq-len", "8", "--fill-gaps",
                 "--no-store", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["uncovered_classes"]
    assert "formula agent not run" in err and "sum of their children" in " ".join(err.split())
    assert not (isolated / "formulas.json").exists()


def test_agent_command_force_and_not_reconciled(isolated: Path, tiny_llama: str, scripted: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    user_db = isolated / "formulas.json"
    cached = FormulaEntry.model_validate({**RMSNORM, "validation": {
        "status": "validated", "source": "agent", "date": "2026-01-02"}})
    save_entry(user_db, cached)
    before = user_db.read_bytes()
    factory = scripted(lambda task: [Call("reconcile", {"entry_json": json.dumps(
        {**RMSNORM, "vector_flops": "4 * ${rows} * ${h}"})}), Say("close enough?")])
    code = main(["agent", "LlamaRMSNorm", "--model-id", tiny_llama])
    _, err = capsys.readouterr()
    assert code == 5 and "already has a formula" in err and "source agent" in err
    assert "--force" in err and factory.tasks == []
    transcripts = isolated / "transcripts"
    code = main(["agent", "LlamaRMSNorm", "--model-id", tiny_llama, "--force",
                 "--transcripts", str(transcripts), "--max-turns", "5"])
    out, err = capsys.readouterr()
    assert code == 3, err
    assert [t.full_class_name for t in factory.tasks] == [RMS]
    assert "not_reconciled" in out and "nothing was cached" in out
    assert "vector_flops predicted" in out and str(transcripts) in out
    assert len(list(transcripts.glob("*.jsonl"))) == 1
    assert user_db.read_bytes() == before
    (row,) = agent_runs(isolated / "runs.duckdb")
    assert row[1] == "not_reconciled" and row[6] == 1
