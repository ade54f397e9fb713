"""Every report reads at 80 columns: no class name split across lines, units in the headers, one
number style, covered and exact worded apart, mismatches grouped, classes without a formula not
shown as predicted; JSON/CSV rows of `analyze` with self figures computed by hand; the
`calls_self` view against a hand computation; `runs` filters; `module` with a bare class name."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn

from formula_db.registry import Registry
from formula_db.schema import FormulaEntry
from formula_db.store import save_entry
from lm_predictor.cli import main
from lm_predictor.cli.check import render_check
from lm_predictor.fmt import pct, si
from lm_predictor.reconcile import reconcile
from lm_predictor.report import call_rows, csv_rows, render, summary
from lm_predictor.results import RunMeta
from lm_predictor.store import SCHEMA_VERSION, Store
from tracing import trace

WIDTH = 80
N_BLOCKS = 10
DIM, ROWS = 8, 3


class ToyBlock(nn.Module):
    """A class with no formula: LayerNorm, Linear, residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.fc = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x)) + x


class ToyNetworkWithALongClassName(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ToyBlock() for _ in range(N_BLOCKS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def wrong_layernorm() -> FormulaEntry:
    """torch.nn.LayerNorm with bytes_read doubled (a deliberately broken user override)."""
    entry = Registry.default(include_user=False).get("torch.nn.LayerNorm")
    data = entry.model_dump(mode="json")
    data["bytes_read"] = f"2 * ({data['bytes_read']})"
    data["validation"] = {"status": "pending", "source": "user"}
    return FormulaEntry.model_validate(data)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    formulas = tmp_path_factory.mktemp("formulas") / "user.json"
    save_entry(formulas, wrong_layernorm())
    model = ToyNetworkWithALongClassName().to("meta")
    with torch.inference_mode(), trace(model) as t:
        model(torch.empty(ROWS, DIM, device="meta"))
    recon = reconcile(t, Registry.default(formulas))
    meta = RunMeta(model_id="toy", config_hash="x", phase="prefill", batch_size=1, seq_len=ROWS,
                   kv_len=0, dtype="float32", device="meta")
    return {"trace": t, "recon": recon, "meta": meta, "model": model}


def rendered(fn: Any, width: int = WIDTH) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    fn(console)
    return console.export_text()


def assert_readable(text: str, class_names: list[str], width: int = WIDTH) -> None:
    """No line wider than the console; every class name whole on some line and never cut."""
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    for name in class_names:
        assert name in words, f"{name} is split or missing"
        # no prefix of the name stands alone at a line's end (the mark of a split)
        for cut in range(3, len(name)):
            assert not any(line.rstrip().endswith(" " + name[:cut]) or
                           line.rstrip().endswith("│" + name[:cut]) for line in lines), name


def test_number_style() -> None:
    assert [si(v) for v in (0, 999, 1000, 1_981_284_352, 512e6, 2**70, None)] == \
        ["0", "999", "1 k", "1.98 G", "512 M", "1.18 Z", "—"]
    assert si(512_000_000, "B") == "512 MB" and si(1500, "FLOP") == "1.5 kFLOP"
    assert [pct(v) for v in (0.0, 0.241, 1.0, None)] == ["0%", "24.1%", "100%", "∞"]


def test_analyze_report_at_80_columns(toy: dict[str, Any]) -> None:
    t, recon = toy["trace"], toy["recon"]
    text = rendered(lambda c: render(toy["meta"], t, recon, c, parameters=880))
    assert_readable(text, ["ToyNetworkWithALongClassName", "ToyBlock", "LayerNorm", "Linear"])
    lines = text.splitlines()
    # summary line first: parameters, FLOP and MACs, exact calls
    head = " ".join(lines[:3])
    total_flops = 2 * ROWS * DIM * DIM * N_BLOCKS  # LayerNorm and the adds are vector_flops
    assert "880 parameters" in head and si(total_flops, "FLOP") in head
    assert si(total_flops // 2, "MAC") in head
    assert f"exact on every metric for {N_BLOCKS} of {1 + 3 * N_BLOCKS}" in head
    # units in headers
    for unit_header in ("unit", "error %", "FLOP", "meas.", "pred.", "status", "err %",
                        "worst %"):
        assert unit_header in text
    assert " MAC " in text and "count" in text
    # covered and exact worded apart: formulas cover everything, but LayerNorm is not exact
    flat = " ".join(text.split())
    assert "covered (a formula evaluates): 100% of FLOP" in flat
    assert f"exact (equal on every metric): {N_BLOCKS} of {2 * N_BLOCKS} calls" in flat
    # one group row for ten identical LayerNorm mismatches
    group_rows = [line for line in lines if line.strip().startswith("LayerNorm ")
                  and "bytes_read" in line]
    assert len(group_rows) == 1 and f" {N_BLOCKS} " in group_rows[0] and "100%" in group_rows[0]
    # classes without a formula: '—' as prediction, and the way to write one
    block_row = next(line for line in lines if line.strip().startswith("ToyBlock "))
    assert block_row.count("—") == 2 and block_row.rstrip().endswith("no formula")
    layernorm_row = next(line for line in lines if line.strip().startswith("LayerNorm ")
                         and "mismatch" in line)
    norm_bytes = sum(c.inclusive.bytes_read + c.inclusive.bytes_written for c in t.calls
                     if c.class_name.endswith("LayerNorm"))
    assert " ".join(layernorm_row.split()[4:6]) == si(norm_bytes)  # measured B of the 10 calls
    assert layernorm_row.rstrip().endswith("mismatch") or "mismatch 100%" in layernorm_row
    assert "lm-predictor agent CLASS" in flat and "--fill-gaps" in flat
    # the legend: FLOP is half a MAC, element-wise work is vector_flops
    assert "multiply-accumulate is 2 FLOP" in flat and "vector_flops" in flat
    assert "1 GB = 1e9 B" in flat


def test_analyze_report_at_160_columns_shows_paths(toy: dict[str, Any]) -> None:
    text = rendered(lambda c: render(toy["meta"], toy["trace"], toy["recon"], c), 160)
    assert_readable(text, ["ToyNetworkWithALongClassName", "ToyBlock", "LayerNorm"], 160)
    assert "blocks.0.norm" in text or re.search(r"blocks\.\d\.norm", text)


def test_json_rows_inclusive_and_self(toy: dict[str, Any]) -> None:
    t, recon = toy["trace"], toy["recon"]
    out = json.loads(json.dumps(summary("r1", toy["meta"], t, recon, parameters=880, db="x")))
    assert out["parameters"] == 880
    linear_flops = 2 * ROWS * DIM * DIM
    assert out["macs"] == N_BLOCKS * linear_flops // 2
    by_class = {r["class_name"].rsplit(".", 1)[-1]: r for r in out["by_class"]}
    assert by_class["Linear"]["calls"] == N_BLOCKS
    assert by_class["Linear"]["measured"]["flops"] == N_BLOCKS * linear_flops
    assert by_class["Linear"]["predicted"]["flops"] == N_BLOCKS * linear_flops
    assert by_class["ToyBlock"]["predicted"] is None  # no formula: not shown as a prediction
    assert by_class["LayerNorm"]["statuses"] == {"mismatch": N_BLOCKS}
    (group,) = [g for g in out["mismatch_groups"] if g["metric"] == "bytes_read"]
    assert group["calls"] == N_BLOCKS and group["max_rel_error"] == 1.0
    rows = {r["module_path"]: r for r in out["by_module"]}
    assert len(out["by_module"]) == 1 + 3 * N_BLOCKS
    block = rows["blocks.0"]
    # the block's own work is the residual add: ROWS * DIM element-wise adds, no matmul FLOPs
    assert block["self_measured"]["flops"] == 0
    assert block["self_measured"]["vector_flops"] == ROWS * DIM
    assert block["measured"]["flops"] == linear_flops
    assert block["predicted"] is None and block["sum_of_children"]["flops"] == linear_flops
    fc = rows["blocks.0.fc"]
    assert fc["self_measured"]["flops"] == fc["measured"]["flops"] == linear_flops
    assert fc["self_predicted"]["flops"] == linear_flops
    root = rows[""]
    assert root["self_measured"]["flops"] == 0
    assert root["measured"]["flops"] == N_BLOCKS * linear_flops


def test_csv_rows(toy: dict[str, Any]) -> None:
    header, rows = csv_rows(toy["trace"], toy["recon"])
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    parsed = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(parsed) == 1 + 3 * N_BLOCKS
    fc = next(r for r in parsed if r["module_path"] == "blocks.3.fc")
    assert int(fc["self_measured_flops"]) == int(fc["measured_flops"]) == 2 * ROWS * DIM * DIM
    assert fc["status"] == "exact"


def test_calls_self_view_by_hand(toy: dict[str, Any], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "runs.duckdb")
    run_id = store.write_run(toy["meta"], toy["trace"], toy["recon"])
    _, rows = store.query("SELECT module_path, measured_flops, self_measured_flops, "
                          "measured_vector_flops, self_measured_vector_flops, "
                          "self_predicted_flops, status FROM calls_self WHERE run_id = ?",
                          [run_id])
    view = {r[0]: r[1:] for r in rows}
    by_path = {c.module_path: c for c in toy["trace"].calls}
    results = {r.call_id: r for r in toy["recon"].calls}
    for path, call in by_path.items():
        children = toy["trace"].children(call)
        flops = call.inclusive.flops - sum(c.inclusive.flops for c in children)
        vector = call.inclusive.vector_flops - sum(c.inclusive.vector_flops for c in children)
        measured, self_flops, measured_vec, self_vec, self_pred, status = view[path]
        assert (measured, self_flops, measured_vec, self_vec) == \
            (call.inclusive.flops, flops, call.inclusive.vector_flops, vector), path
        # own ops of the call, from the ops table, agree
        assert self_flops == call.self_counters.flops and self_vec == call.self_counters.vector_flops
        own_pred = results[call.call_id].predicted["flops"] - sum(
            results[c.call_id].predicted["flops"] for c in children)
        assert self_pred == own_pred
    # the question the view answers: which class is most expensive by its own work?
    _, top = store.query("SELECT class_name, sum(self_measured_flops) FROM calls_self "
                         "WHERE run_id = ? GROUP BY 1 ORDER BY 2 DESC LIMIT 1", [run_id])
    assert top[0][0].endswith("Linear") and top[0][1] == N_BLOCKS * 2 * ROWS * DIM * DIM
    _, status = store.query("SELECT status FROM run_status WHERE run_id = ?", [run_id])
    assert status == [("mismatch",)]


def test_runs_filters_and_status(toy: dict[str, Any], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    db = tmp_path / "runs.duckdb"
    store = Store(db)
    traced = store.write_run(toy["meta"], toy["trace"], toy["recon"])
    exact_recon = reconcile(toy["trace"], Registry.default(include_user=False))
    other = RunMeta(**{**toy["meta"].__dict__, "model_id": "other-model"})
    exact = store.write_run(other, toy["trace"], exact_recon)
    predicted = store.write_predicted_run(other, [{"flops": 7}])
    capsys.readouterr()

    def listed(*args: str) -> list[str]:
        assert main(["runs", "--db", str(db), "--json", *args]) == 0
        captured = capsys.readouterr()
        assert f"read {db}" in captured.err
        return [r["run_id"] for r in json.loads(captured.out)]

    assert set(listed()) == {traced, exact, predicted}
    assert set(listed("--model", "OTHER")) == {exact, predicted}
    assert listed("--kind", "predicted") == [predicted]
    assert listed("--status", "mismatch") == [traced]
    # toy blocks have no formula and add their own ops: coverage < 1 -> partial
    assert listed("--status", "partial") == [exact]
    assert listed("--model", "toy", "--kind", "traced") == [traced]
    assert main(["runs", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert_readable(text, [])
    assert "FLOP" in text and "status" in text and traced in text and "mismatch" in text
    assert main(["runs", "--db", str(db), "--csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["status"] for r in parsed} == {"mismatch", "partial", "predicted"}


def test_sql_table_at_80_columns(toy: dict[str, Any], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    db = tmp_path / "runs.duckdb"
    Store(db).write_run(toy["meta"], toy["trace"], toy["recon"])
    capsys.readouterr()
    assert main(["sql", "SELECT class_name, sum(self_measured_flops) AS self_flops FROM "
                 "calls_self GROUP BY 1 ORDER BY 2 DESC", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert all(len(line) <= WIDTH for line in text.splitlines())
    assert "self_flops" in text


def test_check_report_groups_and_hides_passing_rows() -> None:
    groups = [("transformers__x__LlamaRMSNorm", "transformers.x.LlamaRMSNorm", "bytes_read", 10,
               0.241, "model.layers.0.input_layernorm"),
              ("torch__nn__Linear", "torch.nn.Linear", "flops", 15, 1.0, "lm_head")]
    text = rendered(lambda c: render_check(c, "tiny", 3, 12, 10, 300, ["a", "b"], groups, [], [],
                                           [], "4.0"))
    assert_readable(text, ["LlamaRMSNorm", "Linear"])
    assert text.splitlines()[0].startswith("FAIL: suite 'tiny', 3 runs")
    rows = [line for line in text.splitlines() if "LlamaRMSNorm" in line]
    assert len(rows) == 1 and " 10 " in rows[0] and "24.1%" in rows[0]
    assert "worst %" in text
    passing = rendered(lambda c: render_check(c, "tiny", 3, 12, 12, 300, [], [], [], [], [],
                                              "4.0"))
    assert " ".join(passing.split()) == (
        "PASS: suite 'tiny', 3 runs, 300 calls of 12 formulas; 12 formulas exact on every "
        "metric and call, 0 failing, 0 regressions")


def test_module_list_and_bare_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    monkeypatch.setenv("LM_PREDICTOR_FORMULAS", str(tmp_path / "none.json"))
    assert main(["module", "--list"]) == 0
    text = capsys.readouterr().out
    assert_readable(text, ["LlamaRMSNorm", "DeepseekV3RotaryEmbedding", "Linear"])
    assert "name" in text and "status" in text
    # a bare class name finds the entry, as `agent` does
    assert main(["module", "LlamaRMSNorm", "--json", "--no-agent"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["full_class_name"] == "transformers.models.llama.modeling_llama.LlamaRMSNorm"
    assert main(["module", "scaled_dot_product_attention", "--no-agent", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["full_class_name"] == \
        "torch.nn.functional.scaled_dot_product_attention"
    assert main(["module", "NoSuchClassAnywhere", "--no-agent"]) == 3


def test_bare_name_matching_several_keys_lists_them() -> None:
    from lm_predictor.cli.module import bare_matches

    keys = ["a__b__Norm", "c__d__Norm", "e__Other", "f__SubNorm"]
    assert bare_matches(keys, "Norm") == ["a__b__Norm", "c__d__Norm"]
    assert bare_matches(keys, "Other") == ["e__Other"]
    assert bare_matches(keys, "a.b.Norm") == []


def test_predict_table_at_80_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    monkeypatch.setenv("LM_PREDICTOR_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "runs.duckdb"
    assert main(["predict", "--model-id", "gpt2", "--batch-size", "1,8", "--seq-len", "128",
                 "--hardware", "H100-SXM", "--db", str(db)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert all(len(line) <= WIDTH for line in text.splitlines())
    for header in ("FLOP", "B", "ms per", "tokens", "per s", "bound"):
        assert header in text
    assert "stored predicted run" in captured.err and str(db) in " ".join(captured.err.split())


def test_schema_3_database_gains_the_views(toy: dict[str, Any], tmp_path: Path) -> None:
    """Schema 4 adds only views: a schema-3 file migrates and then answers calls_self."""
    db = tmp_path / "old.duckdb"
    store = Store(db)
    run_id = store.write_run(toy["meta"], toy["trace"], toy["recon"])
    store.query("DROP VIEW calls_self", read_only=False)
    store.query("DROP VIEW run_status", read_only=False)
    store.query("UPDATE meta SET value = '3' WHERE key = 'schema_version'", read_only=False)
    assert Store(db).migrate() == (3, SCHEMA_VERSION)
    _, rows = Store(db).query("SELECT count(*) FROM calls_self WHERE run_id = ?", [run_id])
    assert rows == [(len(toy["trace"].calls),)]
