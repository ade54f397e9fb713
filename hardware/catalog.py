"""The device catalog: cited hardware figures as data, validated with pydantic, plus user devices.

What it holds: for each device, dense matmul peaks per dtype (`matmul_tflops`), non-tensor
vector peaks (`vector_tflops`), memory bandwidth and capacity, interconnect bandwidth, optional
efficiency factors and per-op overhead (fitted or calibrated), and the sources of every figure.
The builtin catalog is `hardware/devices.json`; user devices live in `$LM_PREDICTOR_DEVICES`,
else `<user data dir>/lm-predictor/devices.json` (`lm-predictor hardware calibrate` writes
there) and override builtin devices of the same name.

Semantics:
- Units in files: TFLOPS (1e12/s), GB/s (1e9 B/s), GB (1e9 B, as vendors state capacity).
  `Device.matmul_peak(dtype)` etc. return FLOP/s and bytes/s.
- Dtypes are `fp64 fp32 tf32 bf16 fp16 fp8 int8 int4`; torch spellings (`float32`,
  `torch.bfloat16`, `half`) are normalised by `normalize_dtype`.
- Names match case-insensitively ignoring spaces, `-` and `_`, against names and `aliases`
  ("h100", "H100 SXM5" and "H100-SXM" are one device). Look-up order: user names, user aliases,
  builtin names, builtin aliases.
- Errors are `HardwareError`s worded as one line: a malformed file names the file and the
  field (`devices.my-cpu.memory_bandwidth_gbs: Input should be greater than 0`); an unknown
  device lists the known ones.

Limits: one device = one chip (multi-chip systems: use the per-chip entry and divide the work);
capacity in vendor GB is slightly conservative where the part has 2^30-byte gigabytes.

Example:
    >>> from hardware.catalog import load_catalog
    >>> h100 = load_catalog().get("h100 sxm5")
    >>> h100.name, h100.matmul_peak("bfloat16") / 1e12, h100.bandwidth / 1e9
    ('H100-SXM', 989.5, 3350.0)
"""
from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat,
                      ValidationError, field_validator)

from formula_db.files import LOCK_TIMEOUT_S, LockTimeout, locked, write_atomic
from formula_db.units import UnknownDTypeError, dtype_info
from hardware.errors import DevicesFileError, HardwareError

BUILTIN_PATH = Path(__file__).with_name("devices.json")
DEVICES_ENV = "LM_PREDICTOR_DEVICES"
SCHEMA_VERSION = 1
TERA = 1e12
GIGA = 1e9

DType = Literal["fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4"]
def normalize_dtype(dtype: object) -> str:
    """Catalog (short) spelling of a dtype: 'float32', 'torch.float32', 'fp32' -> 'fp32'."""
    try:
        return dtype_info(dtype).short
    except UnknownDTypeError as exc:
        raise HardwareError(str(exc)) from None


def name_key(text: str) -> str:
    """Matching key of a device name: lower case without spaces, '-', '_' and other marks."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


class Source(BaseModel):
    """Where figures come from: a datasheet, whitepaper, product page or a measurement."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1)
    url: str | None = None
    figures: str = ""  # which figures the source states, as it states them


class Efficiency(BaseModel):
    """Achieved fraction of each roof: time = work / (peak x efficiency). 1.0 = the peak."""

    model_config = ConfigDict(extra="forbid")
    matmul: PositiveFloat = 1.0
    vector: PositiveFloat = 1.0
    memory: PositiveFloat = 1.0


class Device(BaseModel):
    """One device (one chip). `name` is the catalog key, filled in when the file is read."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", exclude=True)
    display_name: str = Field(min_length=1)
    vendor: str = Field(min_length=1)
    kind: Literal["gpu", "tpu", "cpu", "soc", "npu", "accelerator"]
    aliases: list[str] = Field(default_factory=list)
    memory_gb: PositiveFloat
    memory_bandwidth_gbs: PositiveFloat
    matmul_tflops: dict[DType, PositiveFloat] = Field(min_length=1)
    vector_tflops: dict[DType, PositiveFloat] = Field(default_factory=dict)
    interconnect: str | None = None
    interconnect_gbs: PositiveFloat | None = None
    op_overhead_us: NonNegativeFloat = 0.0  # fixed cost per aten op (launch/dispatch); 0 = none
    call_overhead_us: NonNegativeFloat = 0.0  # fixed cost per module call (framework Python)
    # True: an op's compute and memory traffic overlap (time = max, GPUs); False: they add
    # (time = compute + memory; fitted for CPUs running eager ops one at a time)
    overlap: bool = True
    efficiency: Efficiency = Field(default_factory=Efficiency)
    # per kernel model ("eager", "fused"; see hardware.kernels), overriding `efficiency`
    kernel_efficiency: dict[Literal["eager", "fused"], Efficiency] = Field(default_factory=dict)
    sources: list[Source] = Field(min_length=1)
    notes: str = ""
    calibration: dict[str, Any] | None = None  # how a measured entry was measured

    @field_validator("aliases")
    @classmethod
    def _aliases_not_blank(cls, value: list[str]) -> list[str]:
        if any(not name_key(a) for a in value):
            raise ValueError("aliases must contain letters or digits")
        return value

    # --- figures in SI units ----------------------------------------------------------------

    @property
    def bandwidth(self) -> float:
        """Memory bandwidth in bytes/s."""
        return self.memory_bandwidth_gbs * GIGA

    @property
    def capacity_bytes(self) -> int:
        """Memory capacity in bytes (vendor GB = 1e9 bytes)."""
        return int(self.memory_gb * GIGA)

    def matmul_peak(self, dtype: object) -> float:
        """Dense matmul FLOP/s for `dtype`; HardwareError when the device lists none."""
        key = normalize_dtype(dtype)
        if key not in self.matmul_tflops:
            raise HardwareError(f"{self.name} lists no {key} matmul peak (it has "
                                f"{', '.join(self.matmul_tflops)}); analyze with another "
                                f"--dtype or add a user entry with that figure")
        return self.matmul_tflops[key] * TERA  # type: ignore[index]

    def vector_peak(self, dtype: object) -> float | None:
        """Non-tensor FLOP/s for `dtype`, else the fp32 vector rate, else None (unpublished:
        vector work is then treated as memory-bound)."""
        key = normalize_dtype(dtype)
        value = self.vector_tflops.get(key) or self.vector_tflops.get("fp32")  # type: ignore[call-overload]
        return None if value is None else value * TERA

    def names(self) -> list[str]:
        return [self.name, *self.aliases]

    def efficiency_for(self, kernels: str) -> Efficiency:
        """Efficiency factors for a kernel model (`kernel_efficiency`, else `efficiency`)."""
        return self.kernel_efficiency.get(kernels, self.efficiency)  # type: ignore[call-overload]


class DeviceFile(BaseModel):
    """A devices.json file: `{"schema_version": 1, "devices": {NAME: DEVICE}}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_version: Literal[1] = 1
    comment: str = Field("", alias="_comment")
    devices: dict[str, Device] = Field(default_factory=dict)

    @field_validator("devices")
    @classmethod
    def _names_are_unique(cls, devices: dict[str, Device]) -> dict[str, Device]:
        owner: dict[str, str] = {}
        for name, device in devices.items():
            if not name_key(name):
                raise ValueError(f"device name {name!r} must contain letters or digits")
            for alias in {name_key(a) for a in [name, *device.aliases]}:
                if alias in owner and owner[alias] != name:
                    raise ValueError(f"{name!r} and {owner[alias]!r} share the name {alias!r}")
                owner[alias] = name
        return devices


def user_devices_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The user devices file: `explicit`, else $LM_PREDICTOR_DEVICES, else the user data dir."""
    chosen = explicit or os.environ.get(DEVICES_ENV)
    if chosen:
        return Path(chosen).expanduser()
    return Path(platformdirs.user_data_dir("lm-predictor")) / "devices.json"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if "input" in err and err.get("type") not in ("missing", "extra_forbidden"):
        shown = repr(err["input"])
        msg += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
    return f"{loc}: {msg}" if loc else msg


def parse_devices(text: str, origin: str) -> DeviceFile:
    """Validate devices JSON text; errors are one line naming `origin` and the field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DevicesFileError(f"device file {origin} is not valid JSON (line {exc.lineno} column "
                            f"{exc.colno}: {exc.msg}); fix it or move it away") from None
    try:
        parsed = DeviceFile.model_validate(data)
    except ValidationError as exc:
        raise DevicesFileError(f"device file {origin} is malformed: {_first_error(exc)}; fix the "
                            f"entry or move the file away") from None
    for name, device in parsed.devices.items():
        device.name = name
    return parsed


def load_devices(path: Path, missing_ok: bool = True) -> DeviceFile:
    """Read and validate a devices file; a missing file is empty when `missing_ok`."""
    if not path.exists():
        if missing_ok:
            return DeviceFile()
        raise HardwareError(f"device file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DevicesFileError(f"cannot read device file {path}: {exc.strerror}") from None
    return parse_devices(text, str(path))


@dataclass
class Catalog:
    """Builtin devices with user devices layered on top."""

    builtin: dict[str, Device]
    user: dict[str, Device]
    user_path: Path | None = None

    def devices(self) -> list[Device]:
        """All devices, user entries replacing builtin ones of the same name, sorted by name."""
        merged = {name_key(d.name): d for d in self.builtin.values()}
        merged.update({name_key(d.name): d for d in self.user.values()})
        return sorted(merged.values(), key=lambda d: d.name.lower())

    def find(self, name: str) -> Device | None:
        key = name_key(name)
        for layer in (self.user, self.builtin):
            for device in layer.values():
                if name_key(device.name) == key:
                    return device
        for layer in (self.user, self.builtin):
            for device in layer.values():
                if key in {name_key(a) for a in device.aliases}:
                    return device
        return None

    def get(self, name: str) -> Device:
        """The device called `name` (or an alias); HardwareError listing the known ones."""
        device = self.find(name)
        if device is not None:
            return device
        known = [d.name for d in self.devices()]
        keys = {name_key(n): d.name for d in self.devices() for n in d.names()}
        close = {keys[k] for k in difflib.get_close_matches(name_key(name), list(keys), n=3,
                                                               cutoff=0.6)}
        close |= {d for k, d in keys.items() if name_key(name) and k.startswith(name_key(name))}
        hint = f"did you mean {', '.join(sorted(close))}? " if close else ""
        raise HardwareError(f"unknown hardware {name!r}; {hint}known: {', '.join(known)} "
                            f"(add your own with 'lm-predictor hardware calibrate' or in "
                            f"{self.user_path or user_devices_path()})")


def load_catalog(user_path: str | os.PathLike[str] | None = None) -> Catalog:
    """The builtin catalog plus the user devices file (see `user_devices_path`)."""
    builtin = load_devices(BUILTIN_PATH, missing_ok=False)
    path = user_devices_path(user_path)
    user = load_devices(path)
    return Catalog(builtin.devices, user.devices, path)


def device_json(device: Device) -> dict[str, Any]:
    """The entry as written in a devices file (no name: it is the key)."""
    return device.model_dump(mode="json", exclude_defaults=False)


def save_user_device(device: Device, path: str | os.PathLike[str] | None = None,
                     timeout_s: float = LOCK_TIMEOUT_S) -> Path:
    """Add or replace `device` in the user devices file, atomically, under a file lock.

    The file is re-read under the lock (concurrent writers both land); a malformed file is
    refused, never overwritten. Returns the file's path."""
    target = user_devices_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with locked(target, timeout_s):
            current = load_devices(target)
            entries = {name: device_json(d) for name, d in current.devices.items()}
            entries[device.name] = device_json(device)
            text = json.dumps({"schema_version": SCHEMA_VERSION, "devices": entries}, indent=2)
            parse_devices(text, str(target))  # never write what we could not read back
            write_atomic(target, text + "\n")
    except LockTimeout as exc:
        raise DevicesFileError(str(exc)) from None
    return target
