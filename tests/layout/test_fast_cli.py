"""Commands that do not trace import neither torch, transformers nor sympy (checked in a fresh
subprocess, where `sys.modules` starts empty), and bad paths are refused before any heavy import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "sympy")
PROBE = """
import json, sys
from lm_predictor.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def run_cli(args: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run the CLI in a fresh interpreter; its exit code and the heavy modules it imported."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=env["HOME"],
                          env=env, capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    out = {k: v for k, v in os.environ.items() if not k.startswith(("LM_PREDICTOR_", "HF_"))}
    out.update(HOME=str(home), PYTHONPATH=str(ROOT), LM_PREDICTOR_CACHE=str(home / "cache"),
               LM_PREDICTOR_DB=str(home / "runs.duckdb"),
               LM_PREDICTOR_FORMULAS=str(home / "formulas.json"),
               LM_PREDICTOR_DEVICES=str(home / "devices.json"))
    return out


@pytest.mark.parametrize("args", [
    ["--help"],
    ["analyze", "--help"],
    ["module", "torch.nn.Linear"],
    ["module", "torch.nn.Linear", "--eval", "rows=8", "in_features=4", "out_features=2"],
    ["hardware", "list"],
    ["hardware", "show", "H100-SXM"],
    ["runs"],
    ["sql", "SELECT 1"],
    ["analyze", "--model-id", "./missing/model"],
    ["predict", "--model-id", "./missing/model"],
])
def test_light_commands_import_nothing_heavy(args: list[str], env: dict[str, str]) -> None:
    result = run_cli(args, env)
    assert result["heavy"] == [], f"{args} imported {result['heavy']}"
    if "missing" in " ".join(args):
        assert result["code"] == 5  # bad input, answered before any heavy import


def test_preset_predict_is_light_once_its_predictor_is_cached(env: dict[str, str]) -> None:
    args = ["predict", "--model-id", "gpt2", "--batch-size", "2", "--seq-len", "64", "--json"]
    first = run_cli(args, env)  # a cold cache builds the predictor with transformers and sympy
    assert first["code"] == 0
    again = run_cli(args, env)
    assert again == {"code": 0, "heavy": []}
    sweep = run_cli(["predict", "--model-id", "gpt2", "--batch-size", "1,4", "--seq-len",
                     "16,32", "--no-store"], env)
    assert sweep == {"code": 0, "heavy": []}  # the cached closed forms serve any shape


def test_cached_prediction_equals_the_fresh_one(env: dict[str, str], tmp_path: Path) -> None:
    """The cached route returns exactly what the transformers route computes."""
    fresh_env = dict(env, LM_PREDICTOR_CACHE=str(tmp_path / "fresh"))
    code = ("import json, sys\nfrom lm_predictor.predict.points import predict_points\n"
            "p = predict_points('gpt2', [(3, 17, 0), (1, 5, 0)])\n"
            "print(json.dumps({'route': p.route, 'rows': p.rows}))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], env=fresh_env, cwd=env["HOME"],
                                      capture_output=True, text=True, timeout=300,
                                      check=True).stdout) for _ in range(2)]
    assert [r["route"] for r in runs] == ["config", "cache"]
    assert runs[0]["rows"] == runs[1]["rows"]
