"""The roofline plot on a tiny GPT-2 run timed on this CPU: points at measured attained FLOP/s
(not on the roof), calibrated or plain estimates said so, a distinct colour per class, one bar
per class, Embedding named with its bytes."""
from __future__ import annotations

from pathlib import Path

import pytest

from hardware.catalog import Efficiency, load_catalog
from hardware.plot import PALETTE, plot_estimates, plot_figure, plot_points, point_source
from hardware.report import comparable
from hardware.roofline import Peaks, TraceEstimate, estimate_calls, with_efficiency
from lm_predictor.cli import main
from lm_predictor.models import load_preset, tiny_config

BATCH, SEQ = 2, 32


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TraceEstimate, str, int]:
    """(estimate on the calibrated local cpu, run device, hidden size) of a timed cpu run."""
    import os

    from lm_predictor.api import analyze

    folder = tmp_path_factory.mktemp("plot")
    old = os.environ.get("LM_PREDICTOR_DEVICES")
    os.environ["LM_PREDICTOR_DEVICES"] = str(folder / "devices.json")
    try:
        assert main(["hardware", "calibrate", "--quick", "--name", "plot-cpu", "--dtypes",
                     "fp32", "--threads", "1"]) == 0
        config = tiny_config(load_preset("gpt2"))
        config.to_json_file(str(folder / "config.json"))
        result = analyze(str(folder / "config.json"), batch_size=BATCH, seq_len=SEQ,
                         device="cpu", db=None, hardware="plot-cpu")
    finally:
        if old is None:
            os.environ.pop("LM_PREDICTOR_DEVICES", None)
        else:
            os.environ["LM_PREDICTOR_DEVICES"] = old
    return result.estimates, result.meta.device, int(config.n_embd)


def _titles(fig: object) -> str:
    return " ".join(ax.get_title() for ax in fig.axes)  # type: ignore[attr-defined]


def test_measured_points_are_off_the_roof(cpu_run: tuple[TraceEstimate, str, int],
                                          tmp_path: Path) -> None:
    est, run_device, hidden = cpu_run
    assert run_device == "cpu" and comparable(est.device, run_device)
    assert point_source(est, show_measured=True) == "measured"
    points = plot_points(est, show_measured=True)
    groups = {g.class_name: g for g in est.by_class()}
    raw = Peaks.of(est.device, est.dtype, Efficiency())
    off_roof = 0
    for p in points:
        g = groups[p.class_name]
        flops = g.estimate.work.flops + g.estimate.work.vector_flops
        if not flops or not g.measured_self_s:
            continue
        assert p.source == "measured"
        assert p.attained == pytest.approx(flops / g.measured_self_s)  # measured, not estimated
        assert p.estimated_attained == pytest.approx(flops / g.estimate.estimate_s)
        roof = min(raw.matmul, p.intensity * raw.bandwidth)
        assert p.attained <= roof * 1.5  # a measured rate cannot beat the calibrated roof much
        off_roof += p.attained < 0.9 * roof
    assert off_roof >= 3  # eager CPU kernels plus Python overhead run well below the roofs
    # a distinct colour for every class, the same in both panels
    assert len({p.color for p in points}) == len(points) <= len(PALETTE)
    fig = plot_figure(est, show_measured=True)
    roof_ax, bar_ax = fig.axes
    assert "measured attained FLOP/s" in _titles(fig)
    # one bar per class for the estimate and one for the measured self time, labelled by class
    names = [t.get_text() for t in bar_ax.get_yticklabels()]
    assert names == [p.class_name.rsplit(".", 1)[-1] for p in points]
    assert len(bar_ax.patches) == 2 * len(points)
    estimates = sorted(round(b.get_width(), 9) for b in bar_ax.patches[:len(points)])
    assert len(set(b.get_facecolor() for b in bar_ax.patches[:len(points)])) == len(points)
    assert estimates[-1] > 0
    # Embedding: no FLOPs but bytes (at least its two outputs, token and position embeddings,
    # of batch x seq x hidden fp32 values), named in the legend with them
    embedding = next(p for p in points if p.class_name.endswith("Embedding"))
    assert embedding.flops == 0 and embedding.bytes >= 2 * BATCH * SEQ * hidden * 4
    legend = [t.get_text() for t in roof_ax.get_legend().get_texts()]
    assert any(t.startswith("Embedding: 0 FLOP,") and "moved" in t for t in legend)
    png = plot_estimates(est, tmp_path / "roofline.png", show_measured=True)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000


def test_estimates_alone_say_so_and_calibrated_factors_move_points(
        cpu_run: tuple[TraceEstimate, str, int]) -> None:
    est, _, _ = cpu_run
    calls = [c.call for c in est.calls]
    h100 = load_catalog().get("H100-SXM")
    ideal = estimate_calls(calls, h100, "fp32")
    assert point_source(ideal, show_measured=False) == "estimate"
    assert "on the roof by construction" in _titles(plot_figure(ideal, show_measured=False))
    # fitted factors of 0.5 on every roof double every busy time: points at half the rate
    half = with_efficiency(h100, Efficiency(matmul=0.5, vector=0.5, memory=0.5))
    fitted = estimate_calls(calls, half, "fp32")
    assert point_source(fitted, show_measured=False) == "calibrated"
    assert "calibrated estimate" in _titles(plot_figure(fitted, show_measured=False))
    before = {p.class_name: p.attained for p in plot_points(ideal, False)}
    moved = [(p.attained, before[p.class_name]) for p in plot_points(fitted, False)
             if p.attained]
    assert moved and all(a == pytest.approx(b / 2) for a, b in moved)
