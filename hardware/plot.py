"""`--plot FILE.png`: a roofline chart and a stacked time breakdown, in one PNG with two panels.

Left panel, the roofline (log-log): x = arithmetic intensity (FLOP/byte), y = FLOP/s. The
device's roofs are drawn as min(peak, intensity x bandwidth), for the matmul peak of the run's
dtype (solid) and the vector peak (dashed, when published); efficiency factors are applied, so a
fitted device shows its achievable roofs. Each module class is a point at its own work's
intensity and attained rate (FLOPs / estimated seconds), its area proportional to its estimated
time; classes without FLOPs or bytes cannot sit on log axes and are listed in the caption. When
the run was timed on a device of the kind estimated (`show_measured`), hollow markers show the
rate at the measured self time.

Right panel: one horizontal bar per source (estimate; measured self time when shown), stacked
by module class, largest classes first, the rest merged into "other".

Rendering uses matplotlib's Agg canvas directly (no pyplot, no display, no global state).

Example:
    >>> plot_estimates(est, "gpt2_h100.png")
    PosixPath('gpt2_h100.png')
"""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hardware.report import human_time
from hardware.roofline import Peaks, TraceEstimate

TOP_CLASSES = 8


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def plot_estimates(est: TraceEstimate, path: str | os.PathLike[str],
                   show_measured: bool = True) -> Path:
    """Write the two-panel PNG for `est` to `path` and return the path. `show_measured=False`
    leaves out measured times (when they come from another device than the one estimated)."""
    target = Path(path)
    fig = Figure(figsize=(14, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    roof_ax, bar_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    colors = {g.class_name: f"C{i % 10}" for i, g in enumerate(est.by_class()[:TOP_CLASSES])}
    _roofline(est, roof_ax, colors, show_measured)
    _breakdown(est, bar_ax, colors, show_measured)
    fig.suptitle(f"{est.device.name} ({est.device.display_name}), {est.dtype}: estimated "
                 f"{human_time(est.total.estimate_s)}, {est.total.bound}-bound")
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    return target


def _roofline(est: TraceEstimate, ax: Axes, colors: dict[str, str], show_measured: bool) -> None:
    peaks = Peaks.of(est.device, est.dtype, est.efficiency)
    groups = [g for g in est.by_class() if g.estimate.estimate_s > 0]
    plotted = [g for g in groups if g.estimate.intensity and
               g.estimate.work.flops + g.estimate.work.vector_flops > 0]
    skipped = [_short(g.class_name) for g in groups if g not in plotted]
    xs = [g.estimate.intensity or 1.0 for g in plotted] or [1.0]
    ridge = peaks.matmul / peaks.bandwidth
    lo = min(min(xs), ridge) / 10
    hi = max(max(xs), ridge) * 10
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(peaks.matmul, x * peaks.bandwidth) for x in grid], color="black",
            lw=2, label=f"matmul roof {peaks.matmul / 1e12:.4g} TFLOP/s, "
                        f"{peaks.bandwidth / 1e9:.4g} GB/s")
    if peaks.vector:
        ax.plot(grid, [min(peaks.vector, x * peaks.bandwidth) for x in grid], color="gray",
                lw=1.5, ls="--", label=f"vector roof {peaks.vector / 1e12:.4g} TFLOP/s")
    total = est.total.estimate_s or 1.0
    measured = {g.class_name: g.measured_self_s for g in groups} if show_measured else {}
    for g in plotted:
        e = g.estimate
        flops = e.work.flops + e.work.vector_flops
        color = colors.get(g.class_name, "gray")
        ax.scatter([e.intensity], [flops / e.estimate_s], s=30 + 1500 * e.estimate_s / total,
                   color=color, alpha=0.75, edgecolors="black", linewidths=0.5,
                   label=f"{_short(g.class_name)} ({100 * e.estimate_s / total:.0f}%)")
        seen = measured.get(g.class_name)
        if seen:
            ax.scatter([e.intensity], [flops / seen], s=40, facecolors="none",
                       edgecolors=color, linewidths=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte, own work of the class)")
    ax.set_ylabel("FLOP/s (estimated" + ("; hollow: measured)" if measured else ")"))
    ax.grid(True, which="both", alpha=0.3)
    legend = ax.legend(fontsize=7, loc="lower right")
    for handle in legend.legend_handles:  # markers at one size in the legend
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([40])
    title = "roofline by module class (point area ~ time)"
    if skipped:
        title += f"\nnot shown (no FLOPs or bytes): {', '.join(skipped[:6])}"
    ax.set_title(title, fontsize=9)


def _breakdown(est: TraceEstimate, ax: Axes, colors: dict[str, str], show_measured: bool) -> None:
    groups = est.by_class()
    shown, rest = groups[:TOP_CLASSES], groups[TOP_CLASSES:]
    bars: list[tuple[str, list[float]]] = [
        ("estimate", [g.estimate.estimate_s for g in shown]
         + [sum(g.estimate.estimate_s for g in rest) + est.outside.estimate_s])]
    if show_measured and all(g.measured_self_s is not None for g in groups):
        bars.append(("measured", [g.measured_self_s or 0.0 for g in shown]
                     + [sum(g.measured_self_s or 0.0 for g in rest)]))
    longest = max(sum(values) for _, values in bars) or 1.0
    scale, unit = ((1.0, "s") if longest >= 1 else (1e3, "ms") if longest >= 1e-3
                   else (1e6, "µs"))
    labels = [_short(g.class_name) for g in shown] + ["other"]
    fills = [colors.get(g.class_name, "gray") for g in shown] + ["lightgray"]
    for row, (name, values) in enumerate(bars):
        left = 0.0
        for i, value in enumerate(values):
            if value <= 0:
                continue
            ax.barh([name], [value * scale], left=left, color=fills[i],
                    edgecolor="white", label=labels[i] if row == 0 else None)
            left += value * scale
    ax.set_xlabel(f"time ({unit})")
    ax.set_title("time by module class (own work; children excluded)", fontsize=9)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
