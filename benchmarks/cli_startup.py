"""Cold start of the CLI: wall time of fresh `lm-predictor` processes next to `import torch`.

Each command runs in a new interpreter (`python -m lm_predictor.cli.app ...`, what the
`lm-predictor` script runs) `--repeats` times, interleaved with `python -c "import torch"`, and
the median of each is reported with its ratio to the torch import measured in the same run.
Bytecode caching is on (PYTHONDONTWRITEBYTECODE is dropped), as on a user's machine. The
predictor cache and the run database live in a temporary folder; one untimed `predict` fills the
predictor cache first (a first-ever predict of a model builds it with transformers and sympy).

Target (issue 9): every command under 0.15x the torch import.

    uv run python benchmarks/cli_startup.py --repeats 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "module torch.nn.Linear": ["module", "torch.nn.Linear"],
    "hardware list": ["hardware", "list"],
    "predict (preset, one point)": ["predict", "--model-id", "meta-llama/Llama-3.1-8B",
                                    "--batch-size", "1", "--seq-len", "2048"],
    "analyze --model-id ./missing": ["analyze", "--model-id", "./missing"],
}


def timed(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LM_PREDICTOR_") and k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=str(ROOT), LM_PREDICTOR_CACHE=str(Path(tmp) / "cache"),
                   LM_PREDICTOR_DB=str(Path(tmp) / "runs.duckdb"),
                   LM_PREDICTOR_FORMULAS=str(Path(tmp) / "formulas.json"),
                   LM_PREDICTOR_DEVICES=str(Path(tmp) / "devices.json"), COLUMNS="100")
        cli = [sys.executable, "-m", "lm_predictor.cli.app"]
        timed(cli + COMMANDS["predict (preset, one point)"], env, tmp)  # fill the cache
        times: dict[str, list[float]] = {name: [] for name in ["import torch", *COMMANDS]}
        for _ in range(args.repeats):
            times["import torch"].append(timed([sys.executable, "-c", "import torch"], env, tmp))
            for name, argv in COMMANDS.items():
                times[name].append(timed(cli + argv, env, tmp))
    torch_s = statistics.median(times["import torch"])
    print(f"median of {args.repeats} fresh processes each, {os.cpu_count()} CPUs")
    print(f"{'command':36} {'median s':>9} {'x torch':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:36} {median:9.3f} {median / torch_s:8.3f}")


if __name__ == "__main__":
    main()
