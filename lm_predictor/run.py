"""The one pipeline: model → config → module → inputs → trace → reconcile → run metadata.

`analyze`, `check`, the formula agent and `lm_predictor.testing` all trace through
`trace_run`, so every run carries the same metadata (tool, torch and transformers versions) and
the same inputs. Storing is one more call (`store_run`); the CLI and `api.analyze` add the
optional stages (fvcore cross-check, the agent, hardware estimates) around it.

Stages, each skippable by passing its result in:
1. resolve: `RunSpec.model_id` → a transformers config (`models.resolve`), unless `config` is given;
2. size: on a real device, refuse a model that does not fit (`models.memory`);
3. build: config → module on the device in the dtype (`models.build`), unless `model` is given;
4. inputs: prefill or decode inputs (`models.inputs`), no attention mask (see there);
5. trace: one forward pass under `torch.inference_mode` (`tracing.trace`);
6. reconcile: every call against the formula registry (`reconcile`), unless `registry` is None.

`trace_module` is the same pipeline for a module the caller built, with the caller's inputs
(`analyze(model, inputs={...})`): stages 1-4 are the caller's, the run is named after the class
and hashed from its config (or its class and parameter shapes). Inputs are unpadded: a 2-D
`attention_mask` with zeros is refused unless `rtol` accepts the mismatch (`check_unpadded`).

Example:
    >>> out = trace_run(RunSpec("gpt2", batch_size=2, seq_len=16), Registry.default())
    >>> out.recon.coverage, out.meta.tool_version
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

import torch
import transformers

from formula_db.registry import Registry
from formula_db.units import MODEL_DTYPES
from lm_predictor import settings
from lm_predictor.errors import ModelError
from lm_predictor.models.build import build_model
from lm_predictor.models.inputs import build_inputs
from lm_predictor.models.resolve import ResolvedConfig, config_hash, resolve_config
from lm_predictor.reconcile import reconcile
from lm_predictor.results import Reconciliation, RunMeta
from lm_predictor.version import __version__
from tracing import Trace, trace

Progress = Callable[[str], None]
Phase = Literal["prefill", "decode", "train"]


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a model dtype name (ModelError for any other)."""
    if name not in MODEL_DTYPES:
        raise ModelError(f"unknown dtype {name!r}; choose one of {', '.join(MODEL_DTYPES)}")
    return getattr(torch, name)


def check_device(device: str) -> None:
    """ModelError for a device torch does not know or this tool does not run on;
    EnvironmentProblem for a CUDA device this machine does not have."""
    from lm_predictor.errors import EnvironmentProblem

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {device!r}; use meta (no memory), cpu, cuda or "
                         f"cuda:N") from None
    if dev.type in ("meta", "cpu"):
        return
    if dev.type != "cuda":
        raise ModelError(f"device type {dev.type!r} is not supported; use meta, cpu or cuda")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise EnvironmentProblem(f"--device {device}: no CUDA device is available here; use "
                                 f"--device meta (no weights, no memory) or cpu")
    if dev.index is not None and dev.index >= count:
        raise EnvironmentProblem(f"--device {device}: this machine has {count} CUDA device(s) "
                                 f"(cuda:0..cuda:{count - 1})")


@dataclass(frozen=True)
class RunSpec:
    """What to run: the model and the shape, dtype and device of one forward pass."""

    model_id: str
    batch_size: int = 1
    seq_len: int = 128
    phase: Phase = "prefill"
    kv_len: int = 0
    dtype: str = "float32"
    device: str = "meta"
    rtol: float = 0.0
    counter: str = "dispatch"
    attention_backward: str | None = None  # train: "flash" | "math" (None: what devices run)
    checkpointing: bool = False  # train: activation checkpointing (the recompute is counted)

    @property
    def new_tokens(self) -> int:
        """Tokens processed by the pass: 1 in decode, `seq_len` in prefill."""
        return 1 if self.phase == "decode" else self.seq_len

    def where(self) -> str:
        """'batch 2, seq 16, prefill' (plus ', kv N' with a cache), for messages."""
        return (f"batch {self.batch_size}, seq {self.new_tokens}, {self.phase}"
                + (f", kv {self.kv_len}" if self.kv_len else ""))


@dataclass
class RunOutput:
    """A traced (and, with a registry, reconciled) run, ready to store or report."""

    spec: RunSpec
    meta: RunMeta
    trace: Trace
    recon: Reconciliation | None
    config: Any
    model: torch.nn.Module
    inputs: dict[str, Any]
    formulas: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    method: str = ""  # how it was traced: the device, or a fallback (lm_predictor.fallback)


def formulas_used(trace_: Trace, registry: Registry) -> dict[str, dict[str, Any]]:
    """Snapshot of every entry the run used (directly or through nested calls)."""
    keys = {registry.resolve_key(c.formula_key) for c in trace_.calls} - {None}
    todo, seen = list(keys), set()
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        todo.extend(registry.get(key).module_depends)
    return {k: {"layer": registry.source_of(k), **registry.get(k).model_dump(mode="json")}
            for k in sorted(seen)}


def run_meta(spec: RunSpec, config_hash_: str, label: str | None = None) -> RunMeta:
    """The `runs` row of a traced spec, with this tool's and the libraries' versions."""
    return RunMeta(model_id=label or spec.model_id, config_hash=config_hash_, phase=spec.phase,
                   batch_size=spec.batch_size, seq_len=spec.new_tokens, kv_len=spec.kv_len,
                   dtype=spec.dtype, device=spec.device, counter=spec.counter, rtol=spec.rtol,
                   tool_version=__version__, torch_version=torch.__version__,
                   transformers_version=transformers.__version__)


def forward_traced(model: torch.nn.Module, inputs: dict[str, Any]) -> Trace:
    """One forward pass of `model(**inputs)` under inference mode, traced."""
    with torch.inference_mode(), trace(model) as t:
        model(**inputs)
    return t


def resolve(spec: RunSpec) -> ResolvedConfig:
    """Stage 1: the spec's model id as a config."""
    return resolve_config(spec.model_id, hf_token=settings.hf_token())


def trace_run(spec: RunSpec, registry: Registry | None, *, config: Any = None,
              model: torch.nn.Module | None = None, label: str | None = None,
              progress: Progress | None = None) -> RunOutput:
    """Run the pipeline for `spec` (see the module docstring). `config` / `model` skip
    resolution / building (a suite reuses one built model for many shapes); `label` names the
    run instead of the model id; `registry=None` skips reconciliation."""
    say = progress or (lambda _msg: None)
    dtype = torch_dtype(spec.dtype)
    check_device(spec.device)
    note = ""
    if config is None:
        say(f"resolving {spec.model_id}")
        resolved = resolve(spec)
        config, note = resolved.config, resolved.note
        chash = resolved.config_hash
    else:
        chash = config_hash(config)
    if model is None:
        if torch.device(spec.device).type != "meta":
            from lm_predictor.models.memory import check_fits, estimate_memory

            check_fits(estimate_memory(config, batch_size=spec.batch_size, seq_len=spec.seq_len,
                                       kv_len=spec.kv_len, dtype=dtype), spec.device)
        say(f"building {label or spec.model_id} on {spec.device}")
        model = build_model(config, device=spec.device, dtype=dtype)
    # no attention_mask on any device: an all-ones mask changes nothing but would make the
    # counted ops (mask construction, masked softmax) differ between meta and real devices
    train = spec.phase == "train"
    if train and spec.kv_len:
        raise ModelError("--phase train runs a whole sequence (no KV cache); drop --kv-len")
    built: dict[str, Any] = {}

    def make_inputs(m: torch.nn.Module, device: str) -> dict[str, Any]:
        built["inputs"] = build_inputs(m, config, batch_size=spec.batch_size,
                                       seq_len=spec.seq_len,
                                       phase="prefill" if train else spec.phase,
                                       kv_len=spec.kv_len, device=device, attention_mask=False)
        return built["inputs"]

    limit = getattr(config.get_text_config(), "max_position_embeddings", None)
    method = spec.device
    say("tracing one training step (forward, loss, backward)" if train else
        "tracing one forward pass")
    try:
        if train:
            from tracing.train import trace_training_step

            t = trace_training_step(model, make_inputs(model, spec.device),
                                    attention_backward=spec.attention_backward,
                                    checkpointing=spec.checkpointing)
        else:
            from lm_predictor.fallback import trace_with_fallback

            traced = trace_with_fallback(config, model, make_inputs, spec.device,
                                         architecture=type(model).__name__)
            t, method = traced.trace, traced.method
            if method != spec.device:
                note = (note + "; " if note else "") + (
                    f"traced by {method} ({'; '.join(traced.notes)})"
                    + (f": the model was cut to {traced.truncated_layers} layers, so model "
                       f"totals cover those layers only" if traced.truncated_layers else ""))
    except (RuntimeError, IndexError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (f"; the model accepts at most {limit} positions"
                if isinstance(limit, int) and spec.new_tokens + spec.kv_len > limit else "")
        raise ModelError(f"the forward pass of {label or spec.model_id} failed at "
                         f"{spec.where()}: {first}{hint}; nothing was stored") from None
    if isinstance(limit, int) and spec.new_tokens + spec.kv_len > limit:
        note = (note + "; " if note else "") + (
            f"warning: {spec.new_tokens + spec.kv_len} positions exceed the model's "
            f"max_position_embeddings ({limit}); a real device would fail or extrapolate")
    return finish(RunOutput(spec, run_meta(spec, chash, label), t, None, config, model,
                            built.get("inputs", {}), {}, note, method), registry, say)


def finish(out: RunOutput, registry: Registry | None, say: Progress) -> RunOutput:
    """The last stage of every traced run (model id or your own module): reconcile the trace
    against the registry and snapshot the formulas it used (skipped without a registry)."""
    if registry is not None:
        say("reconciling")
        out.recon = reconcile(out.trace, registry, out.spec.rtol)
        out.formulas = formulas_used(out.trace, registry)
    return out


def rereconcile(out: RunOutput, registry: Registry) -> RunOutput:
    """The same run reconciled against another registry (after the agent added entries)."""
    return replace(out, recon=reconcile(out.trace, registry, out.spec.rtol),
                   formulas=formulas_used(out.trace, registry))


def store_run(out: RunOutput, db: Any = None, estimates: list[dict[str, Any]] | None = None
              ) -> str:
    """Write a reconciled run (and its estimate rows) to the run database; returns its run_id."""
    from lm_predictor.store import Store

    if out.recon is None:
        raise ValueError("store_run needs a reconciled run (trace_run with a registry)")
    return Store(db).write_run(out.meta, out.trace, out.recon, out.formulas, estimates=estimates)


# ---------------------------------------------------------------------------------------------
# a module the caller built, with the caller's inputs


def module_hash(model: torch.nn.Module) -> str:
    """`config_hash` of the module's transformers config when it has one (its `dtype` left out:
    building sets it, a run records it apart; so a module built from a config hashes as that
    config's model id does), else the first 16 hex digits of sha256 over its class and the
    names, shapes and dtypes of its parameters and buffers."""
    import copy

    from transformers import PretrainedConfig

    config = getattr(model, "config", None)
    if isinstance(config, PretrainedConfig):
        config = copy.deepcopy(config)
        config.dtype = None
        return config_hash(config)
    cls = type(model)
    tensors = [(name, list(t.shape), str(t.dtype)) for name, t in
               [*model.named_parameters(), *model.named_buffers()]]
    text = json.dumps({"class": f"{cls.__module__}.{cls.__qualname__}", "tensors": tensors},
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tensors(args: tuple, inputs: dict[str, Any]) -> list[torch.Tensor]:
    first = [inputs[k] for k in ("input_ids", "inputs_embeds") if k in inputs]
    flat = torch.utils._pytree.tree_flatten((first, args, inputs))[0]
    return [t for t in flat if isinstance(t, torch.Tensor)]


def input_shape(args: tuple, inputs: dict[str, Any]) -> tuple[int, int]:
    """(batch, sequence) of the caller's inputs: of `input_ids` / `inputs_embeds`, else of the
    first tensor: batch is its first dimension; sequence its second when it holds token ids
    (an integer tensor of 2+ dimensions) or has 3+ dimensions, else 1."""
    tensors = _tensors(args, inputs)
    if not tensors or tensors[0].dim() == 0:
        return 1, 1
    t = tensors[0]
    ids = not (t.is_floating_point() or t.is_complex())
    seq = int(t.shape[1]) if t.dim() >= 3 or (ids and t.dim() >= 2) else 1
    return int(t.shape[0]), seq


def module_dtype_device(model: torch.nn.Module, args: tuple, inputs: dict[str, Any]
                        ) -> tuple[str, str]:
    """The dtype name and device of the module's first floating parameter or buffer, else of
    the first floating input tensor (float32 and cpu when there is none)."""
    from itertools import chain

    found = [t for t in chain(model.parameters(), model.buffers(), _tensors(args, inputs))
             if t.is_floating_point()]
    if not found:
        tensors = _tensors(args, inputs)
        return "float32", str(tensors[0].device) if tensors else "cpu"
    return str(found[0].dtype).removeprefix("torch."), str(found[0].device)


def check_unpadded(inputs: dict[str, Any], rtol: float) -> str:
    """ModelError for a 2-D `attention_mask` with zeros (a padded batch) when `rtol` is 0; with
    a tolerance, the note that says the run is padded. '' for an unpadded batch or no mask (a
    mask on `meta` holds no values and cannot be checked)."""
    mask = inputs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.device.type == "meta":
        return ""
    padded = int((mask == 0).sum())
    if not padded:
        return ""
    if rtol == 0:
        raise ModelError(f"attention_mask has {padded} padded position(s): padded batches are "
                         f"not modelled (the formulas assume every position is attended); "
                         f"trace an unpadded batch (equal lengths, no mask) or pass rtol=... "
                         f"(--rtol) to accept the mismatch")
    return (f"warning: attention_mask has {padded} padded position(s); the formulas assume "
            f"every position is attended")


def trace_module(model: torch.nn.Module, registry: Registry | None, *, args: tuple = (),
                 inputs: dict[str, Any] | None = None, phase: Phase = "prefill",
                 batch_size: int | None = None, seq_len: int | None = None, kv_len: int = 0,
                 rtol: float = 0.0, attention_backward: str | None = None,
                 checkpointing: bool = False, loss_fn: Callable[[Any], Any] | None = None,
                 progress: Progress | None = None) -> RunOutput:
    """Trace `model(*args, **inputs)` (a training step with `phase="train"`: forward, the loss
    `loss_fn(output)` or the output's `.loss`, backward; inputs by name) and reconcile it, as
    `trace_run` does for a model id. Batch and sequence default to `input_shape`'s."""
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"analyze takes a model id or a torch.nn.Module, not "
                         f"{type(model).__name__}")
    say = progress or (lambda _msg: None)
    kwargs = dict(inputs or {})
    args = tuple(args)
    if not args and not kwargs:
        raise ModelError(f"analyze({type(model).__name__}) needs example inputs: "
                         f"inputs={{'input_ids': ids}} or args=(x,)")
    note = check_unpadded(kwargs, rtol)
    batch, seq = input_shape(args, kwargs)
    dtype, device = module_dtype_device(model, args, kwargs)
    name = type(model).__name__
    spec = RunSpec(name, batch_size=batch_size or batch, seq_len=seq_len or seq, phase=phase,
                   kv_len=kv_len, dtype=dtype, device=device, rtol=rtol,
                   attention_backward=attention_backward, checkpointing=checkpointing)
    train = phase == "train"
    if train and args:
        raise ModelError("phase='train' passes inputs by name: inputs={'x': x} instead of "
                         "args=(x,)")
    say(f"tracing one training step of {name}" if train else f"tracing {name}")
    try:
        if train:
            from tracing.train import TrainingStepError, trace_training_step

            try:
                t = trace_training_step(model, kwargs, attention_backward=attention_backward,
                                        checkpointing=checkpointing, loss_fn=loss_fn)
            except TrainingStepError as exc:
                raise ModelError(f"{exc} (analyze(..., loss_fn=...))") from None
        else:
            with torch.inference_mode(), trace(model) as t:
                model(*args, **kwargs)
    except (RuntimeError, IndexError, ValueError, TypeError) as exc:
        if isinstance(exc, ModelError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"the forward pass of {name} failed: {first}; nothing was "
                         f"stored") from None
    return finish(RunOutput(spec, run_meta(spec, module_hash(model)), t, None,
                            getattr(model, "config", None), model, kwargs, {}, note), registry,
                  say)
