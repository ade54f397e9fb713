"""Trace a model that cannot run on `meta` as is: answered scalars, then CPU, then truncated CPU.

Meta tensors have shapes but no values, so a forward pass that reads a value (`.item()`,
`bool(t)`, `x in t`, `.tolist()`, a copy to CPU) fails there, as does one that mixes meta
tensors with tensors it creates on a fixed device. In transformers this is almost
always a guard on the *inputs*: `fast_all(padding_mask)` in the SDPA mask shortcut ("is there
padding?"), `pad_token_id in input_ids[:, [-1, 0]]` ("warn if padded"), `isinf(x).any()`
("clamp fp16 overflow"). `trace_with_fallback` tries, in order, and names what it used:

1. `"<device>"`: a plain trace on the device the model was built on.
2. `"meta+answered-scalars"` (meta only): the same trace under `MetaScalarAnswers`, a dispatch
   mode that answers the data-dependent scalar read of a *boolean reduction* on meta with the
   value real inputs without padding give: `aten.all` -> True (the mask is all ones, nothing
   padded), `aten.any` -> False (no pad token, no inf/nan). Any other value read on meta (an int
   or float `.item()`, e.g. a max position that sizes a tensor) is not guessed: it raises
   `UnansweredScalar` and the next method runs. The answers are listed in `FallbackTrace.notes`.
   The tests check that such a trace equals a CPU trace of the same model op for op.
3. `"cpu"`: the same config built on CPU (random init) when its weights fit in the free memory,
   inputs rebuilt there, traced for real.
4. `"cpu-truncated"`: otherwise the config cut to `truncate_layers` layers (per-layer lists keep
   their pattern; widths, vocab and every per-call shape unchanged), traced on CPU. Each call is
   still exact for its own shapes, so per-call reconciliation is valid, but model totals describe
   the truncated depth: `FallbackTrace.truncated_layers` says so.

`device="cpu"` (or cuda) never probes on meta: step 1 runs on that device and steps 2-4 are meta's.

Example:
    >>> from transformers import BioGptConfig
    >>> from lm_predictor.models import build_model, tiny_config
    >>> from lm_predictor.models.inputs import build_inputs
    >>> cfg = tiny_config(BioGptConfig())
    >>> make = lambda m, dev: build_inputs(m, cfg, batch_size=2, seq_len=8, device=dev,
    ...                                    attention_mask=False)
    >>> result = trace_with_fallback(cfg, build_model(cfg), make, "meta")
    >>> result.method, result.notes
    ('meta+answered-scalars', ['aten.all -> True x1'])
"""
from __future__ import annotations

import copy
import gc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary
from transformers import PretrainedConfig

from lm_predictor.errors import ModelError
from tracing import Trace, trace

InputFactory = Callable[[torch.nn.Module, str], dict[str, Any]]

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers",
              "encoder_layers", "decoder_layers")
META_VALUE_ERRORS = ("cannot be called on meta tensors", "copy out of meta tensor",
                     "Cannot copy out of meta", "meta tensors", "UnansweredScalar",
                     "data-dependent", "on device meta is not on the expected device")
TRUNCATE_LAYERS = 2  # depth of the config traced under "cpu-truncated"
SCALAR_ANSWERS: dict[str, bool] = {"aten.all": True, "aten.any": False}
# ops that read a tensor's value as a Python scalar (item and is_nonzero reach a dispatch mode
# whole when no other mode decomposed them first)
SCALAR_READS = frozenset({"aten._local_scalar_dense", "aten.item", "aten.is_nonzero"})


class UnansweredScalar(RuntimeError):
    """A value was read from a meta tensor that `MetaScalarAnswers` does not guess."""


@dataclass
class FallbackTrace:
    """A trace and how it was obtained."""

    trace: Trace
    method: str  # the device ("meta", "cpu", "cuda"), "meta+answered-scalars", "cpu-truncated"
    notes: list[str] = field(default_factory=list)  # answered scalars, why a method was skipped
    truncated_layers: int | None = None  # depth of the traced config under "cpu-truncated"
    config: PretrainedConfig | None = None  # cpu-truncated: the cut config traced


class MetaScalarAnswers(TorchDispatchMode):
    """Answers `_local_scalar_dense` (`.item()`, `bool(t)`) of meta boolean reductions.

    Remembers the outputs of `aten.all` / `aten.any` on meta (and `mask.sum() == mask.numel()`
    over an integer or boolean mask, transformers' `fast_all`, as `aten.all`) and, when one of
    them (or a view of it, or a copy) is read as a Python scalar, returns `SCALAR_ANSWERS[op]`;
    every other scalar read on meta raises `UnansweredScalar`. `answered` counts answers by op."""

    def __init__(self) -> None:
        super().__init__()
        self._origin: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._mask_sums: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.answered: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = str(func._overloadpacket)
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if name in SCALAR_READS and first is not None and first.is_meta:
            origin = self._origin.get(first)
            if origin is None:
                raise UnansweredScalar(
                    f"UnansweredScalar: a {first.dtype} value of shape {tuple(first.shape)} was "
                    "read on meta and is not the result of all()/any()")
            self.answered[origin] += 1
            return SCALAR_ANSWERS[origin]
        out = func(*args, **kwargs)
        if not (isinstance(out, torch.Tensor) and out.is_meta and out.numel() == 1):
            return out
        if name in SCALAR_ANSWERS:
            self._origin[out] = name
        elif name == "aten.sum" and first is not None and not first.is_floating_point():
            self._mask_sums[out] = first.numel()  # sum of a mask: == numel means all()
        elif (name == "aten.eq" and first is not None and len(args) > 1
              and self._mask_sums.get(first, -1) == args[1]):
            self._origin[out] = "aten.all"  # transformers' fast_all: mask.sum() == numel
        elif first is not None and first in self._origin:  # view / copy / to(dtype)
            self._origin[out] = self._origin[first]
        return out


def is_meta_value_error(exc: BaseException) -> bool:
    """True when an exception says a value was needed from a meta tensor."""
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, (UnansweredScalar, NotImplementedError)) or any(
        s.lower() in text.lower() for s in META_VALUE_ERRORS)


def _run(model: torch.nn.Module, inputs: dict[str, Any],
         mode: TorchDispatchMode | None = None) -> Trace:
    with torch.inference_mode():
        if mode is None:
            with trace(model) as t:
                model(**inputs)
        else:
            with mode, trace(model) as t:
                model(**inputs)
    return t


def _model_device(model: torch.nn.Module) -> str:
    for p in model.parameters():
        return p.device.type
    return "meta"


def layer_count(config: PretrainedConfig) -> int | None:
    """The config's (text) layer count, under whichever key it uses."""
    text = config.get_text_config()
    return next((getattr(text, k) for k in LAYER_KEYS
                 if isinstance(getattr(text, k, None), int)), None)


def truncated_config(config: PretrainedConfig, layers: int) -> PretrainedConfig:
    """The same config with at most `layers` layers: every layer-count key (top level and text
    config) capped, per-layer lists (`layer_types`, `mlp_only_layers`-style) cut to the new depth
    keeping their pattern. Widths, vocab, heads and windows are unchanged, so each remaining call
    sees the shapes it sees in the full model."""
    out = copy.deepcopy(config)
    for target in {id(out): out, id(out.get_text_config()): out.get_text_config()}.values():
        old = next((getattr(target, k) for k in LAYER_KEYS
                    if isinstance(getattr(target, k, None), int)), None)
        for k in LAYER_KEYS:
            value = getattr(target, k, None)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(target, k, min(value, layers))
        if old is None:
            continue
        for k, v in list(vars(target).items()):
            if isinstance(v, list) and v and len(v) == old and k.endswith("layer_types"):
                setattr(target, k, v[:layers])
    return out


def weights_fit(dtype: torch.dtype, meta_model: torch.nn.Module, limit: int | None,
                 headroom: float = 0.5) -> bool:
    """Whether the weights fit in half the free CPU memory (and under `limit` bytes if given)."""
    from lm_predictor.models import available_bytes, count_parameters

    weights = count_parameters(meta_model) * torch.empty((), dtype=dtype).element_size()
    free = available_bytes("cpu")
    return (free is None or weights <= headroom * free) and (limit is None or weights <= limit)


def _param_dtype(model: torch.nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def trace_on_cpu(config: PretrainedConfig, make_inputs: InputFactory, *,
                 dtype: torch.dtype = torch.float32, architecture: str | None = None,
                 seed: int = 0) -> Trace:
    """Build `config` on CPU (random init, seeded) and trace one forward pass there."""
    from lm_predictor.models import build_model

    torch.manual_seed(seed)
    model = build_model(config, device="cpu", dtype=dtype, architecture=architecture)
    try:
        return _run(model, make_inputs(model, "cpu"))
    finally:
        del model
        gc.collect()


def trace_with_fallback(config: PretrainedConfig, model: torch.nn.Module,
                        make_inputs: InputFactory, device: str | None = None, *,
                        architecture: str | None = None, truncate_layers: int = TRUNCATE_LAYERS,
                        allow_cpu: bool = True,
                        cpu_max_weight_bytes: int | None = None) -> FallbackTrace:
    """Trace `model(**make_inputs(model, device))`, falling back as the module docstring says.

    `make_inputs(model, device)` builds the forward's keyword arguments for a model on `device`
    (e.g. a closure over `lm_predictor.models.inputs.build_inputs`). `architecture` is the class to
    rebuild on CPU (default: what `build_model` picks for `config`); `cpu_max_weight_bytes`
    caps the weights built on CPU before truncating (default: half the free memory). Errors
    that are not about meta values propagate unchanged, as do errors of the CPU trace; with
    `allow_cpu=False` a model that needs CPU raises `ModelError` naming what meta hit."""
    device = device or _model_device(model)
    try:
        return FallbackTrace(_run(model, make_inputs(model, device)), device)
    except Exception as exc:  # noqa: BLE001 - classified below
        if device != "meta" or not is_meta_value_error(exc):
            raise
        notes = [f"meta: {_first_line(exc)}"]
    answers = MetaScalarAnswers()
    try:
        t = _run(model, make_inputs(model, "meta"), answers)
        return FallbackTrace(t, "meta+answered-scalars",
                             [f"{op} -> {SCALAR_ANSWERS[op]} x{n}"
                              for op, n in sorted(answers.answered.items())])
    except Exception as exc:  # noqa: BLE001
        if not is_meta_value_error(exc):
            raise
        notes.append(f"meta+answered-scalars: {_first_line(exc)}")
    if not allow_cpu:
        raise ModelError(f"{config.model_type} reads tensor values during its forward pass and "
                         f"cannot be traced on meta ({'; '.join(notes)}); run with --device cpu")
    dtype = _param_dtype(model)
    if weights_fit(dtype, model, cpu_max_weight_bytes):
        t = trace_on_cpu(config, make_inputs, dtype=dtype, architecture=architecture)
        return FallbackTrace(t, "cpu", notes)
    depth = layer_count(config)
    small = truncated_config(config, truncate_layers)
    notes.append(f"weights do not fit in CPU memory: traced {truncate_layers} of {depth} layers")
    t = trace_on_cpu(small, make_inputs, dtype=dtype, architecture=architecture)
    return FallbackTrace(t, "cpu-truncated", notes, truncated_layers=min(truncate_layers,
                                                                          depth or truncate_layers),
                         config=small)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
