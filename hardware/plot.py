"""`--plot FILE.png`: a roofline chart and the time by module class, in one PNG with two panels.

Left panel, the roofline (log-log): x = arithmetic intensity (FLOP/byte of the class's own
work), y = attained FLOP/s. The device's roofs at its peaks, min(peak, intensity x bandwidth),
are drawn for the matmul peak of the run's dtype (solid) and the vector peak (dashed, when
published); a device with fitted efficiency factors also shows its fitted roofs (dotted).

Each module class is a point whose y comes from the best time available (`point_source`):
- `measured`: the run was timed on a device of the kind estimated (`show_measured`, e.g. a cpu
  run against the calibrated local cpu): y = FLOPs / measured self time — how far below the
  roof the class really ran. The model's estimate is the small hollow marker joined to it.
  Self times of a traced run include the tracer's overhead (hooks, op counting); the title
  says so.
- `calibrated`: no comparable timing, but the device has fitted efficiency factors or per-op /
  per-call overheads: y = FLOPs / estimated time under those factors (below the peak roofs).
- `estimate`: neither: y = FLOPs / the roofline's own estimate, which lies on the roof by
  construction; the title says so, since such a plot shows only where each class would sit.
Point area ~ the class's share of the time. Classes that move bytes but do no FLOPs
(Embedding: a gather) cannot sit on log axes; they are named with their bytes in the legend.
Every class shown has its own colour (up to `TOP_CLASSES`; the rest are merged into "other").

Right panel: time by module class, one bar per class (estimate; beside it the measured self
time when shown), largest first; a log axis when the times span more than 100x.

`plot_figure` builds the matplotlib `Figure` (Agg canvas, no pyplot, no global state) and
`plot_points` the data behind it, so both can be checked without reading pixels.

Example:
    >>> plot_estimates(est, "gpt2_h100.png")
    PosixPath('gpt2_h100.png')
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from hardware.catalog import Efficiency
from hardware.report import human_time
from hardware.roofline import ClassTime, Peaks, TraceEstimate

TOP_CLASSES = 12
# 12 distinct colours: matplotlib's tab10 with mint for its gray, then teal and navy (none
# is the roofs' black or gray, or the lightgray of "other")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#aaffc3", "#469990", "#000075")
OTHER_COLOR = "lightgray"
Source = Literal["measured", "calibrated", "estimate"]


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _bytes(value: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


@dataclass(frozen=True)
class ClassPoint:
    """One class on the roofline: its own work, estimate and (when comparable) measured time."""

    class_name: str
    color: str
    flops: int            # flops + vector_flops of the class's own work
    bytes: int
    estimate_s: float
    measured_s: float | None
    source: Source

    @property
    def intensity(self) -> float | None:
        return self.flops / self.bytes if self.bytes else None

    @property
    def attained(self) -> float | None:
        """FLOP/s at the time of `source` (measured self time, else the estimate)."""
        seconds = self.measured_s if self.source == "measured" else self.estimate_s
        return self.flops / seconds if self.flops and seconds else None

    @property
    def estimated_attained(self) -> float | None:
        return self.flops / self.estimate_s if self.flops and self.estimate_s else None


def calibrated(est: TraceEstimate) -> bool:
    """Whether the estimate carries fitted factors or overheads (so it is not the bare roof)."""
    return (est.efficiency != Efficiency() or est.device.op_overhead_us > 0
            or est.device.call_overhead_us > 0)


def point_source(est: TraceEstimate, show_measured: bool) -> Source:
    """Where the points' y comes from (see the module docstring)."""
    if show_measured and any(g.measured_self_s for g in est.by_class()):
        return "measured"
    return "calibrated" if calibrated(est) else "estimate"


def class_colors(groups: list[ClassTime]) -> dict[str, str]:
    """A distinct colour per class for the `TOP_CLASSES` largest; the rest are 'other'."""
    return {g.class_name: PALETTE[i] for i, g in enumerate(groups[:TOP_CLASSES])}


def _shown(est: TraceEstimate, show_measured: bool) -> list[ClassTime]:
    """Classes with any estimated or (shown) measured time, largest estimate first."""
    return [g for g in est.by_class() if g.estimate.estimate_s > 0
            or (show_measured and g.measured_self_s)]


def plot_points(est: TraceEstimate, show_measured: bool = True) -> list[ClassPoint]:
    """One point per class with its own work (largest first), coloured as in both panels."""
    groups = _shown(est, show_measured)
    colors = class_colors(groups)
    source = point_source(est, show_measured)
    out = []
    for g in groups:
        work = g.estimate.work
        measured = g.measured_self_s if show_measured else None
        own = source if source != "measured" or measured else (
            "calibrated" if calibrated(est) else "estimate")
        out.append(ClassPoint(g.class_name, colors.get(g.class_name, OTHER_COLOR),
                              work.flops + work.vector_flops, work.bytes, g.estimate.estimate_s,
                              measured, own))
    return out


def plot_figure(est: TraceEstimate, show_measured: bool = True) -> Figure:
    """The two-panel figure (see the module docstring)."""
    fig = Figure(figsize=(15, 7.4), layout="constrained")
    FigureCanvasAgg(fig)
    roof_ax, bar_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    points = plot_points(est, show_measured)
    _roofline(est, roof_ax, points)
    _breakdown(est, bar_ax, points, show_measured)
    measured = est.measured_s if show_measured else None
    fig.suptitle(f"{est.device.name} ({est.device.display_name}), {est.dtype}: estimated "
                 f"{human_time(est.total.estimate_s)}, {est.total.bound}-bound"
                 + (f"; measured {human_time(measured)}" if measured else ""))
    return fig


def plot_estimates(est: TraceEstimate, path: str | os.PathLike[str],
                   show_measured: bool = True) -> Path:
    """Write the two-panel PNG for `est` to `path` and return the path. `show_measured=False`
    leaves out measured times (when they come from another device than the one estimated)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    plot_figure(est, show_measured).savefig(target, dpi=110)
    return target


_SOURCE_TEXT = {
    "measured": "points: measured attained FLOP/s (FLOPs / measured self time); "
                "hollow: the model's estimate\n(times of the traced run: the tracer's hooks "
                "and op counting are included)",
    "calibrated": "points: calibrated estimate (fitted efficiency factors and overheads); "
                  "no measured times for this device",
    "estimate": "points: the model's own estimate, on the roof by construction "
                "(no measured times and no fitted factors for this device)",
}


def _roofline(est: TraceEstimate, ax: Axes, points: list[ClassPoint]) -> None:
    raw = Peaks.of(est.device, est.dtype, Efficiency())
    fitted = Peaks.of(est.device, est.dtype, est.efficiency)
    on_axes = [p for p in points if p.flops and p.bytes]
    off_axes = [p for p in points if not p.flops and p.bytes]
    ys = [y for p in on_axes for y in (p.attained, p.estimated_attained) if y]
    xs = [p.intensity for p in on_axes if p.intensity] or [1.0]
    ridge = raw.matmul / raw.bandwidth
    lo, hi = min(min(xs), ridge) / 10, max(max(xs), ridge) * 10
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]

    def roof(peak: float, bandwidth: float) -> list[float]:
        return [min(peak, x * bandwidth) for x in grid]

    ax.plot(grid, roof(raw.matmul, raw.bandwidth), color="black", lw=2,
            label=f"matmul roof {raw.matmul / 1e12:.4g} TFLOP/s, {raw.bandwidth / 1e9:.4g} GB/s")
    if raw.vector:
        ax.plot(grid, roof(raw.vector, raw.bandwidth), color="gray", lw=1.5, ls="--",
                label=f"vector roof {raw.vector / 1e12:.4g} TFLOP/s")
    if est.efficiency != Efficiency():
        e = est.efficiency
        ax.plot(grid, roof(fitted.matmul, fitted.bandwidth), color="black", lw=1, ls=":",
                label=f"fitted roofs (x{e.matmul:.2g} matmul, x{e.vector:.2g} vector, "
                      f"x{e.memory:.2g} memory)")
        if fitted.vector:
            ax.plot(grid, roof(fitted.vector, fitted.bandwidth), color="gray", lw=1, ls=":")
    total = sum(p.measured_s or 0.0 for p in points) if points and points[0].source == \
        "measured" else est.total.estimate_s
    total = total or 1.0
    for p in on_axes:
        seconds = p.measured_s if p.source == "measured" else p.estimate_s
        share = (seconds or 0.0) / total
        y = p.attained
        if y is None:
            continue
        ax.scatter([p.intensity], [y], s=30 + 1500 * share, color=p.color, alpha=0.8,
                   edgecolors="black", linewidths=0.5, zorder=3,
                   label=f"{_short(p.class_name)} ({100 * share:.0f}%)")
        if p.source == "measured" and p.estimated_attained:
            ax.scatter([p.intensity], [p.estimated_attained], s=36, facecolors="none",
                       edgecolors=p.color, linewidths=1.5, zorder=3)
            ax.plot([p.intensity] * 2, [y, p.estimated_attained], color=p.color, lw=0.8,
                    alpha=0.6)
    handles, labels = ax.get_legend_handles_labels()
    for p in off_axes:  # bytes but no FLOPs: named with their bytes
        handles.append(Line2D([], [], ls="none", marker="x", color=p.color, markersize=7))
        labels.append(f"{_short(p.class_name)}: 0 FLOP, {_bytes(p.bytes)} moved "
                      f"(off the log axes)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ys:
        top = max(raw.matmul, max(ys))
        ax.set_ylim(min(min(ys), top) / 5, top * 3)
    ax.set_xlabel("arithmetic intensity (FLOP/byte, own work of the class)")
    ax.set_ylabel("attained FLOP/s (matmul + vector)")
    ax.grid(True, which="both", alpha=0.3)
    legend = ax.legend(handles, labels, fontsize=7, loc="upper center", ncol=2,
                       bbox_to_anchor=(0.5, -0.12))  # below the axes: never over a point
    for handle in legend.legend_handles:  # markers at one size in the legend
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([40])
    source = points[0].source if points else "estimate"
    if any(p.source == "measured" for p in points):
        source = "measured"
    idle = [_short(p.class_name) for p in points if not p.flops and not p.bytes]
    title = f"roofline by module class (point area ~ time)\n{_SOURCE_TEXT[source]}"
    if idle:
        title += f"\nno work of their own (only call overhead): {', '.join(idle[:6])}"
    ax.set_title(title, fontsize=9)


def _breakdown(est: TraceEstimate, ax: Axes, points: list[ClassPoint],
               show_measured: bool) -> None:
    shown, rest = points[:TOP_CLASSES], points[TOP_CLASSES:]
    names = [_short(p.class_name) for p in shown]
    colors = [p.color for p in shown]
    estimates = [p.estimate_s for p in shown]
    measured = [p.measured_s for p in shown]
    if rest or est.outside.estimate_s:
        names.append("other" if rest else "outside any module")
        colors.append(OTHER_COLOR)
        estimates.append(sum(p.estimate_s for p in rest) + est.outside.estimate_s)
        measured.append(sum(p.measured_s or 0.0 for p in rest) or None)
    with_measured = show_measured and any(measured)
    values = [v for v in estimates + (measured if with_measured else []) if v]
    longest = max(values, default=1.0)
    scale, unit = ((1.0, "s") if longest >= 1 else (1e3, "ms") if longest >= 1e-3
                   else (1e6, "µs"))
    rows = list(range(len(names)))
    height = 0.4 if with_measured else 0.75
    offset = height / 2 if with_measured else 0.0
    ax.barh([r - offset for r in rows], [v * scale for v in estimates], height=height,
            color=colors, edgecolor="black", linewidth=0.4,
            label="estimate" + (" (roofline)" if with_measured else ""))
    if with_measured:
        ax.barh([r + offset for r in rows], [(v or 0.0) * scale for v in measured],
                height=height, color=colors, edgecolor="black", linewidth=0.4, hatch="//",
                alpha=0.6, label="measured self time (hatched)")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(rows, names, fontsize=8)
    ax.invert_yaxis()
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"time ({unit})" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_title("time by module class (own work; children excluded)", fontsize=9)
