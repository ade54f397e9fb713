"""`lm-predictor predict` and `formula` on a full-size preset: trace-free values equal a fresh
trace of the real config on meta, sweeps are stored as predicted-only runs, closed forms agree."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sympy

from formula_db.symbolic import symbol
from lm_predictor.cli import main
from lm_predictor.models import load_preset
from lm_predictor.store import Store
from lm_predictor.testing import trace_config

MODEL = "meta-llama/Llama-3.1-8B"


def test_predict_sweep_matches_fresh_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "p.duckdb"
    assert main(["predict", "--model-id", MODEL, "--batch-size", "1,3", "--seq-len", "5,7",
                 "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(p["batch_size"], p["seq_len"]) for p in out["points"]] == [(1, 5), (1, 7), (3, 5), (3, 7)]
    config = load_preset(MODEL)
    for point in (out["points"][0], out["points"][3]):
        # --dtype defaults to the config's torch_dtype: bfloat16 for Llama-3.1-8B
        measured = trace_config(config, point["batch_size"], point["seq_len"],
                                dtype="bfloat16").totals.as_dict()
        assert {m: point[m] for m in measured} == measured
    rows = Store(db).query("SELECT kind, count(*) FROM runs JOIN predictions USING (run_id) "
                           "GROUP BY kind")[1]
    assert rows == [("predicted", 4)]


def test_decode_prediction_matches_a_decode_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model-id", MODEL, "--phase", "decode", "--kv-len", "9",
                 "--batch-size", "3", "--no-store", "--json"]) == 0
    point = json.loads(capsys.readouterr().out)["points"][0]
    measured = trace_config(load_preset(MODEL), 3, 1, "decode", 9,
                            dtype="bfloat16").totals.as_dict()
    assert {m: point[m] for m in measured} == measured


def test_formula_closed_form_evaluates_to_the_prediction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formula", "--model-id", MODEL, "--metric", "flops"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("flops = ")
    assert main(["predict", "--model-id", MODEL, "--batch-size", "3", "--seq-len", "11",
                 "--phase", "prefill", "--no-store", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)["points"][0]["flops"]
    # rebuild the printed closed form's value through the API (sympy object, not parsed text)
    from lm_predictor.predict.predictor import Predictor

    expr = Predictor.for_model(MODEL, dtype="bfloat16").closed_form("flops")
    assert str(expr) == text.removeprefix("flops = ")
    value = expr.subs({symbol("batch"): 3, symbol("seq_len"): 11, symbol("kv_len"): 0})
    assert isinstance(value, sympy.Integer) and int(value) == want


def test_predict_bad_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model-id", MODEL, "--phase", "decode", "--no-store"]) == 2
    assert "--kv-len" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--model-id", MODEL, "--batch-size", "one"])
    capsys.readouterr()
    assert main(["predict", "--model-id", "bert-base-uncased", "--no-store"]) == 0  # has formulas
    capsys.readouterr()


def test_predict_with_hardware_is_memory_bound_in_decode(capsys: pytest.CaptureFixture[str]) -> None:
    from hardware.catalog import load_catalog

    assert main(["predict", "--model-id", MODEL, "--phase", "decode", "--kv-len", "4096",
                 "--batch-size", "1", "--dtype", "bfloat16", "--hardware", "H100-SXM",
                 "--kernels", "eager",
                 "--no-store", "--json"]) == 0
    point = json.loads(capsys.readouterr().out)["points"][0]
    assert point["bound"] == "memory"
    device = load_catalog().get("H100-SXM")
    # batch-1 decode: moving the weights and the cache dominates (hand roofline at 3.35 TB/s)
    assert device.memory_bandwidth_gbs == 3350
    memory_s = (point["bytes_read"] + point["bytes_written"]) / 3350e9
    assert point["time_s"] == pytest.approx(memory_s, rel=0.05)
    assert point["ms_per_token"] == pytest.approx(point["time_s"] * 1e3)


def test_predict_with_hardware_checks_that_the_point_fits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Llama-3.1-8B in bf16 caches 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes =
    131072 bytes per token; its 8,030,261,248 published parameters weigh 16.06 GB. Batch 32 at
    128k tokens needs 32 x 131072 x 131072 B = 550 GB of KV cache: no fit on an 80 GB H100,
    so no time is printed for it."""
    monkeypatch.setenv("LM_PREDICTOR_CACHE", str(tmp_path / "cache"))
    per_token = 32 * 8 * 128 * 2 * 2
    assert per_token == 131072
    args = ["predict", "--model-id", MODEL, "--phase", "decode", "--kv-len", "1024,131071",
            "--batch-size", "1,32", "--dtype", "bfloat16", "--hardware", "H100-SXM",
            "--no-store"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    points = {(p["batch_size"], p["kv_len"]): p for p in out["points"]}
    assert "throughput" in out["notes"]["ms_per_token"]
    for (batch, kv), p in points.items():
        assert p["weights_bytes"] == 8_030_261_248 * 2
        assert p["kv_cache_bytes"] == batch * (kv + 1) * per_token
        assert p["capacity_bytes"] == 80 * 10**9
        assert p["memory_bytes"] == (p["weights_bytes"] + p["kv_cache_bytes"]
                                     + max(0, p["activation_bytes"] - p["kv_cache_bytes"]))
        assert p["ms_per_step"] == pytest.approx(p["time_s"] * 1e3)
    big = points[(32, 131071)]
    assert big["kv_cache_bytes"] == 549_755_813_888 and big["fits"] is False
    assert big["memory"].startswith("550 GB KV cache + 16.1 GB weights") and "> 80 GB" in big[
        "memory"]
    assert points[(1, 1024)]["fits"] is True and points[(32, 1024)]["fits"] is True
    # the table at 80 columns: no time for the point that does not fit, and why
    monkeypatch.setenv("COLUMNS", "80")
    from lm_predictor.predict import footprint as fp_module

    def no_rebuild(*_a: object, **_k: object) -> None:
        raise AssertionError("the footprint must come from the cache the first call wrote")
    monkeypatch.setattr(fp_module, "measure_footprint", no_rebuild)
    assert main(args) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.split()[:3] == ["32", "1", "131071"])
    assert row.split()[-4:] == ["—", "—", "no", "fit"]
    assert "does not fit H100-SXM: 550 GB KV cache + 16.1 GB weights" in " ".join(text.split())
    assert all(len(line) <= 80 for line in text.splitlines())
    # a model whose footprint cannot be measured still gets its times, and says so
    assert main([*args[:-3], "--hardware", "H100-SXM", "--dtype", "float16", "--no-store",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert "memory fit not checked" in captured.err
    unsized = json.loads(captured.out)["points"]
    assert all(p["fits"] is None and p["time_s"] > 0 for p in unsized)


def test_predict_fused_kernels_equal_analyze_fused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`predict --kernels fused` (a meta trace per point) gives the same fused estimate as
    `analyze --kernels fused` at that point; eager predict uses the formula totals."""
    from lm_predictor.models import tiny_config

    path = tmp_path / "config.json"
    tiny_config(load_preset(MODEL)).to_json_file(str(path))
    common = ["--model-id", str(path), "--phase", "decode", "--kv-len", "16", "--batch-size",
              "2", "--hardware", "H100-SXM", "--json"]
    assert main(["predict", *common, "--no-store"]) == 0  # fused is the default on a GPU
    point = json.loads(capsys.readouterr().out)["points"][0]
    assert point["kernels"] == "fused"
    assert main(["analyze", *common, "--no-store", "--kernels", "fused"]) == 0
    est = json.loads(capsys.readouterr().out)["estimates"]
    assert est["kernels"] == "fused"
    assert point["time_s"] == pytest.approx(est["total"]["estimate_s"], rel=1e-9)
    assert main(["predict", *common, "--no-store", "--kernels", "eager"]) == 0
    eager = json.loads(capsys.readouterr().out)["points"][0]
    assert eager["kernels"] == "eager" and eager["time_s"] > point["time_s"]
