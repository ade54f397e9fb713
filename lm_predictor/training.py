"""The training-step view of an analysis: forward, recompute and backward totals, what the
backward formulas predict, the step's time on a device and MFU.

`step_summary(result)` is the `training` block of `analyze --phase train --json`: totals
(`measured` = forward + recompute + backward, each attributed per module by `tracing.backward`;
`unattributed` is what no module call produced), the predicted backward totals, the bytes
autograd saved for backward, a roofline estimate of the whole step on `--hardware`, and, given a
measured step time or token rate, MFU by the PaLM definition (6N + 12·L·H·Q·T FLOPs per token,
`hardware.mfu`) beside the utilisation that the measured FLOPs imply.
"""
from __future__ import annotations

from typing import Any

from formula_db.units import dtype_info


def step_summary(result: Any, *, step_time_s: float | None = None,
                 tokens_per_s: float | None = None, device: Any = None) -> dict[str, Any]:
    """The JSON-able training block of an `api.AnalysisResult` traced with phase 'train'."""
    trace, recon, meta = result.trace, result.recon, result.meta
    steps = trace.step_totals()
    out: dict[str, Any] = {
        "totals": steps.as_dict(),
        "predicted_backward": recon.backward_predicted_totals,
        "saved_activation_bytes": trace.saved_activation_bytes,
    }
    if result.step_estimate is not None:
        est = result.step_estimate
        out["estimate"] = {"hardware": device.name if device is not None else None,
                           "estimate_s": est.estimate_s, "bound": est.bound,
                           "compute_s": est.compute_s, "memory_s": est.memory_s}
    if (step_time_s or tokens_per_s) and device is not None:
        from hardware.mfu import palm_flops_per_token, transformer_shape, utilisation

        tokens = meta.batch_size * meta.seq_len
        parameters = int(trace.weight_bytes // dtype_info(meta.dtype).itemsize)
        per_token = palm_flops_per_token(parameters, seq_len=meta.seq_len,
                                         **transformer_shape(dict(trace.config)))
        out["mfu"] = utilisation(palm_per_token=per_token, tokens_per_step=tokens,
                                 peak_flops=device.matmul_peak(meta.dtype),
                                 step_time_s=step_time_s, tokens_per_s=tokens_per_s,
                                 measured_flops_per_step=steps.measured.flops).as_dict()
        out["mfu"]["parameters"] = parameters
    return out


def render_step(summary: dict[str, Any], console: Any) -> None:
    """Human lines for the training block (the per-class table is the analyze report's)."""
    from lm_predictor.report import human

    t = summary["totals"]
    console.print(f"training step: {human(t['measured']['flops'])} FLOPs (forward "
                  f"{human(t['forward']['flops'])}, recompute {human(t['recompute']['flops'])}, "
                  f"backward {human(t['backward']['flops'])}); bytes moved "
                  f"{human(t['measured']['bytes_read'] + t['measured']['bytes_written'])}B; "
                  f"unattributed {human(t['unattributed']['flops'])} FLOPs; saved for backward "
                  f"{human(summary['saved_activation_bytes'])}B")
    pred = summary.get("predicted_backward") or {}
    if pred:
        console.print(f"backward predicted by formulas: {human(pred.get('flops'))} FLOPs vs "
                      f"{human(t['backward']['flops'])} measured")
    if "estimate" in summary:
        e = summary["estimate"]
        console.print(f"step on {e['hardware']}: {1e3 * e['estimate_s']:.3g} ms, {e['bound']}-bound")
    if "mfu" in summary:
        m = summary["mfu"]
        console.print(f"MFU (PaLM, 6N + attention per token): {100 * m['mfu']:.1f}%"
                      + (f"; utilisation from measured FLOPs: "
                         f"{100 * m['measured_utilisation']:.1f}%"
                         if m.get("measured_utilisation") is not None else ""))
