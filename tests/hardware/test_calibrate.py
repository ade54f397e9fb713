"""Calibration on CPU (quick sizes) produces a usable, loadable user device entry."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardware.calibrate import calibrate, to_device
from hardware.catalog import load_catalog
from hardware.roofline import estimate_totals
from lm_predictor.cli import main


def test_quick_calibration_gives_positive_roofs() -> None:
    result = calibrate("cpu", quick=True, dtypes=("fp32",))
    assert result.matmul["fp32"] > 0 and result.vector["fp32"] > 0
    assert result.bandwidth > 0 and result.op_overhead_s > 0
    assert {m.kind for m in result.measurements} == {"matmul", "vector", "copy", "add",
                                                     "overhead"}
    device = to_device(result, "quick-cpu")
    assert device.kind == "cpu" and device.sources[0].title.startswith("measured by")
    assert device.matmul_peak("float32") == pytest.approx(result.matmul["fp32"])
    assert estimate_totals(10**9, 0, 10**6, 0, device, "fp32").estimate_s > 0


def test_calibrate_command_saves_a_loadable_entry(user_devices: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "calibrate", "--quick", "--name", "ci-cpu", "--json",
                 "--threads", "1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "ci-cpu" and set(shown["matmul_tflops"]) == {"fp32", "bf16"}
    assert shown["calibration"]["threads"] == 1
    device = load_catalog().get("CI CPU")
    assert device.memory_bandwidth_gbs > 0 and device.op_overhead_us > 0
    assert all(v > 0 for v in (*device.matmul_tflops.values(), *device.vector_tflops.values()))
    assert json.loads(user_devices.read_text())["devices"]["ci-cpu"]["kind"] == "cpu"


def test_calibrate_rejects_unsupported_dtypes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "calibrate", "--quick", "--dtypes", "int8", "--no-save"]) == 5
    assert "calibrate measures fp32, bf16 and fp16, not int8" in capsys.readouterr().err
