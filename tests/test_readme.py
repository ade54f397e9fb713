"""Every `lm-predictor` command of README.md runs as written (exit code 0).

The commands are extracted from the README's ```bash blocks (continuation lines joined,
comments and `uv run` dropped, a `> FILE` redirect honoured) and run in README order, in
process (`lm_predictor.cli.main`), in a temporary directory with temporary run, check, cache,
formula and device files, no hub token and no agent credentials. `./my-model/config.json` is a
tiny GPT-2 config written there. Only the commands in `SKIPPED` are not run, each with its
reason (a GPU, the network, credentials, or more than 20 s).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Iterator

import pytest

from lm_predictor.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

SKIPPED: dict[str, str] = {
    "check --suite zoo --baseline last":
        "traces 15 architectures at 5 shapes each (over a minute); tests/test_check.py runs "
        "the same command on a small suite",
    "check --suite transformers --workers 2":
        "sweeps every installed model type (about 7 minutes on 2 cores; a benchmark, "
        "benchmarks/transformers_suite.py); tests/sweep runs the same sweep on a handful of types",
    "agent MyBlock --model-id ./my-model/config.json":
        "runs the formula agent: needs Claude credentials and the network",
    "agent MyBlock --model-id ./my-model --force --budget-usd 1 --max-turns 20":
        "runs the formula agent: needs Claude credentials and the network",
    "analyze --model-id ./my-model/config.json --fill-gaps":
        "runs the formula agent for uncovered classes: needs Claude credentials and the network",
}


def readme_commands() -> list[tuple[list[str], str | None]]:
    """(argv after 'lm-predictor', redirect target or None) of every README command."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens[:2] == ["uv", "run"]:
                tokens = tokens[2:]
            if not tokens or tokens[0] != "lm-predictor":
                continue
            argv, target = tokens[1:], None
            if ">" in argv:
                at = argv.index(">")
                argv, target = argv[:at], argv[at + 1]
            out.append((argv, target))
    return out


COMMANDS = readme_commands()


def test_readme_has_commands_and_no_stale_skips() -> None:
    written = {shlex.join(argv) for argv, _ in COMMANDS}
    assert len(COMMANDS) >= 20
    assert set(SKIPPED) <= written, set(SKIPPED) - written


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from lm_predictor.models import load_preset, tiny_config

    root = tmp_path_factory.mktemp("readme")
    (root / "my-model").mkdir()
    tiny_config(load_preset("gpt2")).to_json_file(str(root / "my-model" / "config.json"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name, value in (("LM_PREDICTOR_DB", "runs.duckdb"),
                            ("LM_PREDICTOR_CHECK_DB", "check.duckdb"),
                            ("LM_PREDICTOR_CACHE", "cache"),
                            ("LM_PREDICTOR_FORMULAS", "formulas.json"),
                            ("LM_PREDICTOR_DEVICES", "devices.json")):
            mp.setenv(name, str(root / value))
        for name in ("HF_TOKEN", "ANTHROPIC_API_KEY"):
            mp.delenv(name, raising=False)
        yield root


@pytest.mark.parametrize("argv,target", COMMANDS,
                         ids=[shlex.join(argv)[:60] for argv, _ in COMMANDS])
def test_readme_command_runs(argv: list[str], target: str | None, workdir: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    command = shlex.join(argv)
    if command in SKIPPED:
        pytest.skip(SKIPPED[command])
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, f"lm-predictor {command} exited {code}: {captured.err.strip()[-500:]}"
    if target:
        (workdir / target).write_text(captured.out)
        assert captured.out.strip(), f"{command} printed nothing to redirect"
    if "--plot" in argv:
        assert (workdir / argv[argv.index("--plot") + 1]).stat().st_size > 0
