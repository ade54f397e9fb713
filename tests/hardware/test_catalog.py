"""The device catalog: builtin schema and sources, name matching, user devices and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardware.catalog import (BUILTIN_PATH, Device, HardwareError, load_catalog,
                              normalize_dtype, save_user_device)
from lm_predictor.cli import main

REQUIRED = {"A100-40GB-SXM", "A100-80GB-SXM", "H100-SXM", "H100-PCIe", "H200", "L4", "L40S",
            "A10G", "T4", "RTX-4090", "MI300X", "TPU-v5e", "M2-Ultra"}


def user_entry(**changes: object) -> dict:
    entry = {"display_name": "My box", "vendor": "ACME", "kind": "cpu", "memory_gb": 64,
             "memory_bandwidth_gbs": 50, "matmul_tflops": {"fp32": 1.5},
             "vector_tflops": {"fp32": 0.2}, "sources": [{"title": "measured"}]}
    entry.update(changes)
    return entry


def write_user(path: Path, devices: dict) -> None:
    path.write_text(json.dumps({"schema_version": 1, "devices": devices}))


def test_builtin_catalog_has_the_required_devices_with_sources() -> None:
    catalog = load_catalog()
    names = {d.name for d in catalog.devices()}
    assert REQUIRED <= names
    for device in catalog.devices():
        assert device.sources and all(s.title for s in device.sources)
        assert any(s.url and s.url.startswith("https://") for s in device.sources), device.name
        assert device.bandwidth > 0 and device.capacity_bytes > 0
        assert all(v > 0 for v in device.matmul_tflops.values())
        # dense tensor peaks are at least the fp32 rate where both exist
        if "bf16" in device.matmul_tflops and "fp32" in device.matmul_tflops:
            assert device.matmul_tflops["bf16"] >= device.matmul_tflops["fp32"]


def test_builtin_figures_match_the_datasheets() -> None:
    catalog = load_catalog()
    h100 = catalog.get("H100-SXM")
    assert h100.matmul_peak("bfloat16") == pytest.approx(989.5e12)  # 1,979 sparse / 2
    assert h100.bandwidth == pytest.approx(3.35e12)
    assert catalog.get("A100-80GB-SXM").matmul_peak("fp16") == pytest.approx(312e12)
    assert catalog.get("H200").capacity_bytes == 141 * 10**9
    assert catalog.get("MI300X").matmul_peak("fp8") == pytest.approx(2614.9e12)
    assert catalog.get("TPU-v5e").vector_peak("bf16") is None  # unpublished
    # the builtin file parses standalone and names no device twice
    assert len(json.loads(BUILTIN_PATH.read_text())["devices"]) == len(catalog.builtin)


@pytest.mark.parametrize("name", ["H100-SXM", "h100", "H100 SXM5", "h100_sxm", "H100-SXM5-80GB"])
def test_names_match_case_insensitively_with_aliases(name: str) -> None:
    assert load_catalog().get(name).name == "H100-SXM"


def test_unknown_device_lists_the_known_ones() -> None:
    with pytest.raises(HardwareError) as info:
        load_catalog().get("X9000")
    message = str(info.value)
    assert "\n" not in message and "unknown hardware 'X9000'" in message
    assert all(name in message for name in REQUIRED)


def test_unknown_device_on_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "show", "h1000"]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean H100-SXM" in err and "known:" in err


def test_dtype_spellings_and_missing_dtype() -> None:
    assert [normalize_dtype(d) for d in ("float32", "torch.bfloat16", "half", "fp8")] == [
        "fp32", "bf16", "fp16", "fp8"]
    with pytest.raises(HardwareError, match="unknown dtype 'float7'"):
        normalize_dtype("float7")
    with pytest.raises(HardwareError, match="T4 lists no bf16 matmul peak .*fp32, fp16, int8"):
        load_catalog().get("T4").matmul_peak("bfloat16")


def test_user_device_adds_and_overrides(user_devices: Path) -> None:
    write_user(user_devices, {"my-box": user_entry(aliases=["workstation"]),
                              "T4": user_entry(display_name="my T4", kind="gpu")})
    catalog = load_catalog()
    assert catalog.get("Workstation").name == "my-box"
    assert catalog.get("t4").display_name == "my T4"
    assert catalog.get("my box").matmul_peak("float32") == pytest.approx(1.5e12)
    assert sum(d.name == "T4" for d in catalog.devices()) == 1


@pytest.mark.parametrize("devices, field", [
    ({"bad": user_entry(memory_bandwidth_gbs=-1)}, "devices.bad.memory_bandwidth_gbs"),
    ({"bad": user_entry(matmul_tflops={"fp33": 1})}, "devices.bad.matmul_tflops.fp33"),
    ({"bad": user_entry(sources=[])}, "devices.bad.sources"),
    ({"bad": user_entry(speed=3)}, "devices.bad.speed"),
    ({"bad": {k: v for k, v in user_entry().items() if k != "memory_gb"}}, "devices.bad.memory_gb"),
    ({"a": user_entry(aliases=["same"]), "b": user_entry(aliases=["Same"])}, "share the name"),
])
def test_malformed_user_entry_names_file_and_field(user_devices: Path, devices: dict,
                                                   field: str) -> None:
    write_user(user_devices, devices)
    with pytest.raises(HardwareError) as info:
        load_catalog()
    message = str(info.value)
    assert "\n" not in message and str(user_devices) in message and field in message


def test_corrupt_user_file_is_one_line_error(user_devices: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    user_devices.write_text('{"devices": {')
    assert main(["hardware", "list"]) == 7
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(user_devices) in err and "not valid JSON" in err


def test_save_user_device_round_trips_and_refuses_to_clobber(user_devices: Path) -> None:
    device = Device.model_validate(user_entry())
    device.name = "lab-gpu"
    save_user_device(device)
    other = device.model_copy(update={"display_name": "second"})
    other.name = "lab-gpu-2"
    save_user_device(other)
    catalog = load_catalog()
    assert {"lab-gpu", "lab-gpu-2"} <= {d.name for d in catalog.devices()}
    assert catalog.get("lab-gpu").model_dump() == device.model_dump()
    user_devices.write_text("not json")
    with pytest.raises(HardwareError, match="not valid JSON"):
        save_user_device(device)
    assert user_devices.read_text() == "not json"


def test_list_and_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "list", "--json"]) == 0
    names = {d["name"] for d in json.loads(capsys.readouterr().out)}
    assert REQUIRED <= names
    assert main(["hardware", "show", "mi300x", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "MI300X" and shown["sources"][0]["url"].startswith("https://www.amd")
    assert main(["hardware", "show", "tpu v5e"]) == 0
    assert "cloud.google.com/tpu/docs/v5e" in capsys.readouterr().out
