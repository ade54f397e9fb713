"""`lm-predictor analyze` end to end on tiny configs: totals against FlopCounterMode, meta equals
CPU, a decode step against a KV cache, the DuckDB round trip and views, bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lm_predictor.cli import main
from lm_predictor.models.inputs import build_inputs
from lm_predictor.models import build_model, load_preset, tiny_config
from lm_predictor.store import Store


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama") / "config.json"
    tiny_config(load_preset("meta-llama/Llama-3.1-8B")).to_json_file(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpt2") / "config.json"
    tiny_config(load_preset("gpt2")).to_json_file(str(path))
    return path


def analyze_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["analyze", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def flop_counter_total(config_path: Path, batch: int, seq: int, phase: str = "prefill",
                       kv_len: int = 0) -> int:
    from lm_predictor.models import read_config_file

    config = read_config_file(config_path)
    model = build_model(config, device="meta")
    inputs = build_inputs(model, config, batch_size=batch, seq_len=seq, phase=phase,
                          kv_len=kv_len, device="meta", attention_mask=False)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    return counter.get_total_flops()


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_analyze_totals_match_flop_counter(fixture: str, request: pytest.FixtureRequest,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = request.getfixturevalue(fixture)
    out = analyze_json(capsys, "--model-id", str(config), "--batch-size", "3", "--seq-len", "7",
                       "--db", str(tmp_path / "runs.duckdb"))
    assert out["totals"]["measured"]["flops"] == flop_counter_total(config, 3, 7)
    for metric in ("flops", "vector_flops", "bytes_read", "bytes_written"):
        assert out["totals"]["predicted"][metric] == out["totals"]["measured"][metric]
    assert out["totals"]["measured"]["peak_activation_bytes"] > 0
    assert 0 < out["coverage"]["flops"] <= 1
    assert out["run_id"]


def test_decode_step_attends_to_the_cache(tiny_llama: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    kv = 9
    out = analyze_json(capsys, "--model_id", str(tiny_llama), "--batch_size", "3", "--phase",
                       "decode", "--kv_len", str(kv), "--db", str(tmp_path / "d.duckdb"))
    assert out["run"]["seq_len"] == 1 and out["run"]["kv_len"] == kv
    assert out["totals"]["measured"]["flops"] == flop_counter_total(tiny_llama, 3, 1, "decode", kv)
    con_rows = Store(tmp_path / "d.duckdb").query(
        "SELECT inputs FROM calls WHERE class_name LIKE '%LlamaAttention' LIMIT 1")[1]
    assert con_rows, "attention calls are stored"
    # attention over kv + 1 keys: the SDPA op's key length shows in its matmul FLOPs
    hidden, heads, layers = 64, 4, 2
    head_dim = hidden // heads
    sdpa_flops = Store(tmp_path / "d.duckdb").query(
        "SELECT sum(flops) FROM ops WHERE op = 'aten.scaled_dot_product_attention'")[1][0][0]
    assert sdpa_flops == layers * 2 * (2 * 3 * heads * 1 * (kv + 1) * head_dim)


def test_meta_equals_cpu(tiny_gpt2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = analyze_json(capsys, "--model-id", str(tiny_gpt2), "--batch-size", "1", "--seq-len",
                        "5", "--no-store")
    cpu = analyze_json(capsys, "--model-id", str(tiny_gpt2), "--batch-size", "1", "--seq-len",
                       "5", "--no-store", "--device", "cpu")
    assert meta["totals"] == cpu["totals"]
    assert meta["run_id"] is None


def test_store_round_trip_and_views(tiny_llama: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "v.duckdb")
    first = analyze_json(capsys, "--model-id", str(tiny_llama), "--batch-size", "1", "--seq-len",
                         "3", "--db", db)
    second = analyze_json(capsys, "--model-id", str(tiny_llama), "--batch-size", "5", "--seq-len",
                          "9", "--db", db)
    assert main(["sql", "SELECT formula_key, calls, max_rel_error_flops FROM formula_accuracy "
                 "WHERE formula_key = 'torch__nn__Linear'", "--db", db, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # tiny llama: 7 Linear per layer x 2 layers + lm_head = 15 per run, two runs
    assert rows == [{"formula_key": "torch__nn__Linear", "calls": 30, "max_rel_error_flops": 0.0}]
    assert main(["runs", "--db", db, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert {r["run_id"] for r in runs} == {first["run_id"], second["run_id"]}
    assert main(["sql", "SELECT measured_flops FROM run_totals WHERE run_id = '"
                 + second["run_id"] + "'", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["measured_flops"] == \
        second["totals"]["measured"]["flops"]


def test_report_renders(tiny_gpt2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--model-id", str(tiny_gpt2), "--seq-len", "4", "--no-store"]) == 0
    out = capsys.readouterr().out
    assert "by module class" in out and "covered" in out and "Linear" in out


def test_bad_inputs_get_one_line_errors(tmp_path: Path, tiny_gpt2: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--model-id", "nobody/no-such-model", "--no-store"]) == 5
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "gpt2" in err  # lists the presets
    assert main(["analyze", "--model-id", "gpt2", "--phase", "decode", "--no-store"]) == 2
    assert "--kv-len" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--model-id", "gpt2", "--batch-size", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(b"this is not a duckdb file" * 10)
    before = corrupt.read_bytes()
    assert main(["analyze", "--model-id", str(tiny_gpt2), "--seq-len", "3", "--db",
                 str(corrupt)]) == 7
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "corrupt.duckdb" in err
    assert corrupt.read_bytes() == before


def test_forward_failure_stores_nothing(tiny_gpt2: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import lm_predictor.run as run_module

    real_build = run_module.build_model

    def failing_build(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def boom(*a, **k):
            raise RuntimeError("boom inside forward")

        model.forward = boom
        return model

    db = tmp_path / "f.duckdb"
    assert main(["analyze", "--model-id", str(tiny_gpt2), "--seq-len", "3", "--db", str(db)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(run_module, "build_model", failing_build)
    code = main(["analyze", "--model-id", str(tiny_gpt2), "--seq-len", "3", "--db", str(db)])
    err = capsys.readouterr().err.strip()
    assert code == 5 and "\n" not in err and "boom inside forward" in err
    assert "nothing was stored" in err
    assert Store(db).query("SELECT count(*) FROM runs")[1][0][0] == 1  # the earlier run only


def test_fvcore_cross_check(tiny_gpt2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    batch, seq, hidden, heads = 2, 5, 64, 4
    out = analyze_json(capsys, "--model-id", str(tiny_gpt2), "--batch-size", str(batch),
                       "--seq-len", str(seq), "--device", "cpu", "--counter", "fvcore",
                       "--no-store")
    assert out["run"]["counter"] == "dispatch+fvcore"
    rows = {r["module_path"]: r for r in out["fvcore"]}
    projections = [r for p, r in rows.items() if p.endswith(("c_attn", "c_proj", "c_fc"))]
    assert projections and all(r["fvcore_flops"] == r["dispatch_flops"] for r in projections)
    # fvcore has no SDPA handle: it misses exactly the score and value matmuls
    attn = rows["transformer.h.0.attn"]
    sdpa = 2 * (2 * batch * heads * seq * seq * (hidden // heads))
    assert attn["dispatch_flops"] - attn["fvcore_flops"] == sdpa
    assert main(["analyze", "--model-id", str(tiny_gpt2), "--counter", "fvcore",
                 "--no-store"]) == 5
    assert "--device cpu" in capsys.readouterr().err
