"""What a model can be sampled at for covering, and its inputs there: the shapes derivation traces.

`lm_predictor.coverage` covers a model from traces at a grid of shapes (`lm_predictor.derive`
points: prefill `(batch, seq_len)` and one-token decode `(batch, 1, kv_len)`). Not every model
runs every shape, so the grid is cut to what the model can run (`plan_points`):

- `decoder` (generates with a KV cache): prefill and decode points. When a decode point does
  not run (a model with a cache of its own, a recurrent state our cache builder does not fill)
  the decode points are dropped and the reason noted: such a model is covered for prefill.
- `prefill` (encoders, encoder-decoder models and the decoder classes of their configs, causal
  models without a KV cache): prefill points only (`kv_len == 0`).
- `vision` (the forward takes `pixel_values`, not `input_ids`): the image size is fixed by the
  config, so only the batch varies: one point per distinct batch (`seq_len` 0, never a shape).

Each point is traced with the method that traces the model (`lm_predictor.fallback`): on `meta`,
with boolean scalar reads answered when the plain trace reads a value
(`meta+answered-scalars`); or, for a model that needs values (`cpu`, `cpu-truncated`), on CPU
with a model built once from the config that was traced (seeded random init).

Example:
    >>> from transformers import DeiTConfig
    >>> from lm_predictor.models import tiny_config
    >>> samples = sample_points(tiny_config(DeiTConfig(image_size=32, patch_size=8)))
    >>> samples.kind, sorted({s.point.batch for s in samples})
    ('vision', [1, 2, 3, 4])
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

import torch

from formula_db.bind import plain_config
from lm_predictor.errors import ModelError
from tracing.records import Trace


@dataclass(frozen=True)
class Point:
    """One traced shape: prefill when kv_len == 0 (seq_len new tokens), else one-token decode."""

    batch: int
    seq_len: int
    kv_len: int = 0

    @property
    def phase(self) -> str:
        return "decode" if self.kv_len else "prefill"


FIT_POINTS: tuple[Point, ...] = tuple(
    [Point(b, s) for b, s in product((1, 2, 3), (2, 3, 5))]
    + [Point(b, 1, k) for b, k in product((1, 2, 3), (2, 3, 5))])
# The long prompt catches algorithms that work in fixed chunks not named by the config (gated
# delta nets' 64-token chunks): their cost breaks past the short fit lengths, and such an entry is
# refused rather than silently wrong at real lengths.
LONG_PROMPT = 100
HELD_OUT_POINTS: tuple[Point, ...] = (Point(1, 7), Point(3, 7), Point(4, 4), Point(1, 1, 9),
                                      Point(4, 1, 6), Point(2, LONG_PROMPT))


@dataclass
class Sample:
    """A trace at one point; `held_out` samples are used only to verify."""

    point: Point
    trace: Trace
    held_out: bool = False


# Short causal convolutions (Mamba, gated delta nets, LFM short convs) pad a prompt shorter than
# their kernel / cache length: cost is piecewise in the prompt length, with its break at that
# config value. Prompts are sampled from that length on; derived entries refuse shorter ones.
PROMPT_KEYS = re.compile(r"(conv_kernel|conv_kernel_size|conv_kernel_dim|conv_L_cache|d_conv|"
                         r"conv_size|short_conv_kernel_size)$")


def min_prompt(config: Any) -> int:
    """The shortest prompt whose cost lies on the same polynomial as longer ones: the largest
    short-convolution kernel / cache length of the config (its text sub-config included), else
    1 (no such break)."""
    values = [v for k, v in plain_config(config).items() if PROMPT_KEYS.search(k)
              and isinstance(v, int) and not isinstance(v, bool)]
    return max([1, *values])


SampleKind = Literal["decoder", "prefill", "vision"]
VISION_IMAGE = 32  # image side for vision configs that do not fix one (ResNet, RegNet)
MIN_VISION_BATCHES = 3  # fit batches of a vision model (enough for a quadratic in batch)


class Samples(list):
    """`Sample`s (fit then held-out) with what was sampled: `kind` (see the module docstring),
    `method` (how the points were traced) and `notes` (points left out and why)."""

    def __init__(self, items: Iterable[Sample] = (), kind: str = "decoder", method: str = "meta",
                 notes: list[str] | None = None) -> None:
        super().__init__(items)
        self.kind, self.method, self.notes = kind, method, list(notes or [])


def sample_kind(model: torch.nn.Module, config: Any = None) -> SampleKind:
    """`vision`, `decoder` or `prefill` for a built model (see the module docstring); `config`,
    the config the inputs are built from, makes an encoder-decoder config prefill-only even
    for its decoder-only class (BartForCausalLM), as `build_inputs` does."""
    from lm_predictor.models.cache import forward_params, supports_cache

    params = forward_params(model)
    if "pixel_values" in params and "input_ids" not in params:
        return "vision"
    if getattr(config, "is_encoder_decoder", False):
        return "prefill"
    return "decoder" if supports_cache(model) else "prefill"


def _batches(points: Iterable[Point]) -> list[int]:
    return sorted({p.batch for p in points})


def plan_points(kind: SampleKind, points: Iterable[Point], held_out: Iterable[Point]
                ) -> tuple[tuple[Point, ...], tuple[Point, ...]]:
    """(fit, held-out) points a model of `kind` can run, cut from the given ones: all of them
    for a decoder, the prefill ones otherwise; for vision one point per distinct batch (fit
    batches topped up to `MIN_VISION_BATCHES` with the smallest batches not held out)."""
    points, held_out = tuple(points), tuple(held_out)
    if kind == "decoder":
        return points, held_out
    if kind == "prefill":
        return (tuple(p for p in points if p.kv_len == 0),
                tuple(p for p in held_out if p.kv_len == 0))
    fit = _batches(points)
    held = [b for b in _batches(held_out) if b not in fit]
    extra = (b for b in range(1, 1 << 16) if b not in fit and b not in held)
    while len(fit) < MIN_VISION_BATCHES:
        fit.append(next(extra))
    return tuple(Point(b, 0) for b in sorted(fit)), tuple(Point(b, 0) for b in held)


def lift_prompts(points: Iterable[Point], shortest: int) -> tuple[Point, ...]:
    """Prefill points moved up so the shortest sampled prompt (2 in the default points) is
    `shortest` long; decode points (one new token on a cache) are kept."""
    shift = max(0, shortest - 2)
    return tuple(p if p.kv_len or not shift else Point(p.batch, p.seq_len + shift)
                 for p in points)


def image_size(config: Any, default: int = VISION_IMAGE) -> int:
    """The square image side a vision config expects (its `image_size`, else `default`)."""
    size = getattr(config, "image_size", default)
    return size if isinstance(size, int) and not isinstance(size, bool) else default


def pixel_inputs(model: torch.nn.Module, config: Any, batch: int, device: str,
                 default_size: int = VISION_IMAGE) -> dict[str, Any]:
    """`pixel_values` (batch, channels, side, side) in the model's dtype: empty on meta, seeded
    random elsewhere."""
    channels = int(getattr(config, "num_channels", 3) or 3)
    shape = (batch, channels, image_size(config, default_size), image_size(config, default_size))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if torch.device(device).type == "meta":
        return {"pixel_values": torch.empty(shape, device="meta", dtype=dtype)}
    pixels = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return {"pixel_values": pixels.to(device=device, dtype=dtype)}


def point_inputs(model: torch.nn.Module, config: Any, point: Point, device: str,
                 kind: SampleKind) -> dict[str, Any]:
    """Forward keyword arguments of `model` at `point` (as `analyze` and the sweep build them:
    no attention mask)."""
    if kind == "vision":
        return pixel_inputs(model, config, point.batch, device)
    from lm_predictor.models.inputs import build_inputs

    return build_inputs(model, config, batch_size=point.batch, seq_len=point.seq_len,
                        phase=point.phase, kv_len=point.kv_len, device=device,  # type: ignore[arg-type]
                        attention_mask=False)


def _cpu_model(config: Any, dtype: torch.dtype, architecture: str | None) -> torch.nn.Module:
    from lm_predictor.models import build_model

    torch.manual_seed(0)
    return build_model(config, device="cpu", dtype=dtype, architecture=architecture)


def _where(p: Point, kind: str) -> str:
    if kind == "vision":
        return f"batch {p.batch}"
    return f"batch {p.batch}, seq {p.seq_len}, {p.phase}" + (f", kv {p.kv_len}" if p.kv_len
                                                               else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:240]


def _on_meta(model: torch.nn.Module) -> bool:
    return next((p.is_meta for p in model.parameters()), True)


def sample_points(config: Any, points: Iterable[Point] | None = None,
                  held_out: Iterable[Point] | None = None, *,
                  model: torch.nn.Module | None = None, dtype: torch.dtype = torch.float32,
                  method: str = "meta", architecture: str | None = None) -> Samples:
    """Trace `config` at the points its model can run (see the module docstring).

    `model`: the model as built for the run (its class is the one sampled; a model that is not
    on meta is rebuilt there; default: `build_model`'s choice, or `architecture`). `method`:
    how the model was traced (`lm_predictor.fallback`): `cpu` / `cpu-truncated` sample on CPU
    (pass the config that was traced: the truncated one under `cpu-truncated`); anything else
    samples on meta, answering boolean scalar reads where a plain trace reads a value, and on
    CPU when meta cannot trace the model at all and its weights fit in memory. A prefill point
    that does not run raises `ModelError`; a decode point that does not run drops every decode
    point (noted in `Samples.notes`)."""
    from lm_predictor.fallback import weights_fit, trace_with_fallback
    from lm_predictor.models import build_model
    from lm_predictor.run import forward_traced

    points = FIT_POINTS if points is None else tuple(points)
    held_out = HELD_OUT_POINTS if held_out is None else tuple(held_out)
    if architecture is None and model is not None:
        architecture = type(model).__name__
    if model is None or not _on_meta(model):
        model = build_model(config, device="meta", dtype=dtype, architecture=architecture)
    kind = sample_kind(model, config)
    fit, held = plan_points(kind, points, held_out)
    if kind != "vision":
        fit, held = lift_prompts(fit, min_prompt(config)), lift_prompts(held, min_prompt(config))
    out = Samples(kind=kind, method="meta")
    answered: set[str] = set()
    cpu: list[torch.nn.Module] = []

    def to_cpu(why: str) -> None:
        cpu.append(_cpu_model(config, dtype, architecture))
        out.method = "cpu"
        if why:
            out.notes.append(why)

    if method.startswith("cpu"):
        to_cpu("")

    def run(p: Point) -> Any:
        if cpu:
            return forward_traced(cpu[0], point_inputs(cpu[0], config, p, "cpu", kind))
        try:
            traced = trace_with_fallback(
                config, model, lambda m, dev: point_inputs(m, config, p, dev, kind), "meta",
                architecture=architecture, allow_cpu=False)
        except ModelError as exc:
            if "cannot be traced on meta" not in str(exc) or not weights_fit(dtype, model, None):
                raise
            to_cpu(f"sampled on CPU: {_first_line(exc)[:160]}")
            return run(p)
        if traced.method != "meta":
            answered.update(traced.notes)
            out.method = traced.method
        return traced.trace

    decode_ok = True
    for is_held, pts in ((False, fit), (True, held)):
        for p in pts:
            if p.kv_len and not decode_ok:
                continue
            try:
                t = run(p)
            except Exception as exc:  # noqa: BLE001 - a decode point may fail in any way
                if p.kv_len:  # a decoder whose decode does not run here: cover its prefill
                    decode_ok = False
                    out[:] = [s for s in out if not s.point.kv_len]
                    out.notes.append(f"decode not sampled ({_where(p, kind)}: "
                                     f"{_first_line(exc)})")
                    continue
                raise ModelError(f"cannot sample {getattr(config, 'model_type', 'the model')} "
                                 f"for covering at {_where(p, kind)}: {_first_line(exc)}"
                                 ) from exc
            out.append(Sample(p, t, is_held))
    if answered:
        out.notes.append(f"sampled with answered scalars ({'; '.join(sorted(answered))})")
    return out
