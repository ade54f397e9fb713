"""Rendering time estimates and devices: rich tables for people, plain dicts for `--json`.

`time_summary(est)` is the `estimates` block of `lm-predictor analyze --json`: the device,
dtype, run total (compute, memory, overhead, bound, intensity, measured wall time when the run
was timed) and the time by module class (own work, children excluded, so classes add up).
`render_time(est, console)` prints the same as a table; `render_device` / `devices_table` show
the catalog.

Example:
    >>> time_summary(est)["total"]["bound"]
    'memory'
    >>> render_time(est, Console())
"""
from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from hardware.catalog import Device
from hardware.roofline import Estimate, TraceEstimate


def human_time(seconds: float | None) -> str:
    """'1.23 ms', '456 µs', '2.1 s', '0', '<1 ns'; '—' for None."""
    if seconds is None:
        return "—"
    if seconds == 0:
        return "0"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return "<1 ns"


def comparable(device: Device, run_device: str | None) -> bool:
    """Whether times measured on `run_device` (cpu, cuda:0, meta) can be compared with estimates
    for `device`: both a CPU, or both an accelerator; never for meta (nothing was timed)."""
    if not run_device or run_device.startswith("meta"):
        return False
    return (device.kind == "cpu") == (run_device.split(":")[0] == "cpu")


def _intensity(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def time_summary(est: TraceEstimate) -> dict[str, Any]:
    """JSON-ready summary: device, total, and per module class. `measured_s` is the run's root
    wall time on the device it ran on (None on meta); `rel_error` compares the two, which is
    meaningful only when the estimate is for that device (a calibrated local entry)."""
    total = est.total
    measured = est.measured_s
    classes = []
    for group in est.by_class():
        share = group.estimate.estimate_s / total.estimate_s if total.estimate_s else None
        classes.append({"class_name": group.class_name, "calls": group.calls,
                        **group.estimate.as_dict(), "share": share,
                        "measured_self_s": group.measured_self_s})
    return {"hardware": est.device.name, "display_name": est.device.display_name,
            "dtype": est.dtype,
            "efficiency": est.efficiency.model_dump(),
            "op_overhead_us": est.device.op_overhead_us,
            "total": {**total.as_dict(), "measured_s": measured,
                      "rel_error": (abs(total.estimate_s - measured) / measured
                                    if measured else None)},
            "outside_s": est.outside.estimate_s,
            "calls": len(est.calls),
            "by_class": classes}


def kernel_summary(ke: Any) -> dict[str, Any]:
    """The `estimates` JSON block for a `hardware.kernels.KernelEstimates`: `time_summary` of its
    trace estimate plus `kernels`, `logits` and the totals' flops, vector_flops and bytes
    (`estimates.kernels`, `estimates.total.flops`, `.bytes`, `.estimate_s`)."""
    out = time_summary(ke.trace_estimate)
    out["kernels"], out["logits"] = ke.kernels, ke.logits
    out["total"].update(ke.total.to_json())
    return out


def render_time(est: TraceEstimate, console: Console, top: int = 15,
                run_device: str | None = None, kernels: str | None = None) -> None:
    """Print the time estimate: a total line and a table by module class. Measured times (runs
    on a real device) are shown beside; the percentage only when `run_device` is the kind of
    device estimated (cpu for a cpu entry, else an accelerator)."""
    total = est.total
    measured = est.measured_s
    share = total.as_dict()["memory_bound_share"]
    line = (f"estimated time on {est.device.name} ({est.device.display_name}, {est.dtype}"
            + (f", {kernels} kernels" if kernels else "") + "): "
            f"{human_time(total.estimate_s)} — {total.bound}-bound"
            + (f" ({100 * share:.0f}% of the time in memory-bound calls)"
               if share is not None else "")
            + f"; compute {human_time(total.compute_s)}, memory {human_time(total.memory_s)}")
    if total.overhead_s:
        line += f", op overhead {human_time(total.overhead_s)}"
    if measured:
        line += f"; measured on {run_device or 'the run device'} {human_time(measured)}"
        if comparable(est.device, run_device):
            line += f" ({100 * (total.estimate_s - measured) / measured:+.0f}%)"
    console.print(line)
    table = Table(title="estimated time by module class (own work; children excluded)",
                  box=box.SIMPLE_HEAD)
    columns = ["class", "calls", "estimate", "share", "bound", "FLOP/B"]
    has_measured = any(g.measured_self_s is not None for g in est.by_class())
    if has_measured:
        columns.append("measured")
    for col in columns:
        table.add_column(col, justify="left" if col in ("class", "bound") else "right",
                         no_wrap=col != "class", min_width=16 if col == "class" else None)
    for group in est.by_class()[:top]:
        e: Estimate = group.estimate
        row = [group.class_name.rsplit(".", 1)[-1], str(group.calls), human_time(e.estimate_s),
               f"{100 * e.estimate_s / total.estimate_s:.1f}%" if total.estimate_s else "—",
               e.bound, _intensity(e.intensity)]
        if has_measured:
            row.append(human_time(group.measured_self_s))
        table.add_row(*row)
    console.print(table)


def device_summary(device: Device) -> dict[str, Any]:
    """The entry as JSON, with its name."""
    return {"name": device.name, **device.model_dump(mode="json")}


def devices_table(devices: list[Device], user_names: set[str] | None = None) -> Table:
    """One row per device: memory, bandwidth, dense matmul peaks, ridge point, layer."""
    table = Table(title="devices: dense matmul TFLOPS, memory GB, bandwidth GB/s")
    columns = ["name", "GB", "GB/s", "fp32", "tf32", "16-bit", "fp8", "int8", "ridge"]
    if user_names:
        columns.append("layer")
    for col in columns:
        table.add_column(col, justify="left" if col in ("name", "layer") else "right",
                         no_wrap=True)

    def tflops(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.3g}"

    for d in devices:
        mm = d.matmul_tflops
        half = mm.get("bf16") or mm.get("fp16")  # type: ignore[call-overload]
        ridge = next((mm[k] * 1e3 / d.memory_bandwidth_gbs  # type: ignore[index]
                      for k in ("bf16", "fp16", "fp32") if k in mm), None)
        row = [d.name, f"{d.memory_gb:g}", f"{d.memory_bandwidth_gbs:g}",
               *(tflops(mm.get(k)) for k in ("fp32", "tf32")),  # type: ignore[call-overload]
               tflops(half), *(tflops(mm.get(k)) for k in ("fp8", "int8")),  # type: ignore[call-overload]
               "—" if ridge is None else f"{ridge:.0f}"]
        if user_names:
            row.append("user" if d.name in user_names else "builtin")
        table.add_row(*row)
    table.caption = ("16-bit: bf16, else fp16; ridge: FLOP/byte where that (else fp32) matmul "
                     "roof meets the bandwidth")
    return table


def render_device(device: Device, console: Console) -> None:
    """Everything about one device, with its sources."""
    console.print(f"[bold]{device.name}[/bold] — {device.display_name} ({device.vendor}, "
                  f"{device.kind})")
    if device.aliases:
        console.print(f"aliases: {', '.join(device.aliases)}")
    console.print(f"memory {device.memory_gb:g} GB at {device.memory_bandwidth_gbs:g} GB/s"
                  + (f"; interconnect {device.interconnect or ''} {device.interconnect_gbs:g} GB/s"
                     if device.interconnect_gbs else ""))
    table = Table(title="peaks (TFLOPS; TOPS for int)")
    for col in ("dtype", "matmul (dense)", "vector", "ridge FLOP/B"):
        table.add_column(col, justify="left" if col == "dtype" else "right")
    for dtype in sorted(set(device.matmul_tflops) | set(device.vector_tflops)):
        mm = device.matmul_tflops.get(dtype)  # type: ignore[call-overload]
        vec = device.vector_tflops.get(dtype)  # type: ignore[call-overload]
        table.add_row(dtype, "—" if mm is None else f"{mm:g}", "—" if vec is None else f"{vec:g}",
                      "—" if mm is None else f"{mm * 1e3 / device.memory_bandwidth_gbs:.0f}")
    console.print(table)
    eff = device.efficiency
    if (eff.matmul, eff.vector, eff.memory) != (1.0, 1.0, 1.0) or device.op_overhead_us:
        console.print(f"efficiency: matmul {eff.matmul:.3g}, vector {eff.vector:.3g}, memory "
                      f"{eff.memory:.3g}; op overhead {device.op_overhead_us:.3g} µs")
    if device.notes:
        console.print(f"notes: {device.notes}")
    console.print("sources:")
    for source in device.sources:
        console.print(f"  - {source.title}" + (f" <{source.url}>" if source.url else "")
                      + (f": {source.figures}" if source.figures else ""), soft_wrap=True)
