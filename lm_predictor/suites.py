"""Check suites: which models and shapes `lm-predictor check` traces.

A suite file is JSON:

    {"name": "mine",
     "models": [{"model_id": "gpt2", "tiny": true,
                 "shapes": [[1, 3], [3, 5], [5, 7], [3, 1, "decode", 9]]},
                {"config_class": "Qwen3Config", "overrides": {"num_hidden_layers": 2, ...},
                 "shapes": [[1, 3]]},
                {"model_id": "path/to/config.json", "shapes": [[2, 16]]}]}

`model_id` is anything `--model-id` accepts; `tiny: true` shrinks it with `models.tiny_config`;
`config_class` names a transformers config class built from `overrides` (then shrunk when
`tiny`). Shapes are (batch, seq_len) or (batch, seq_len, phase, kv_len). The default suite
`zoo` covers the architectures with builtin formulas in `formula_db/zoo/` that take token ids and
reconcile without exception. ViT (images) and Mamba (whose x_proj/out_proj Linear calls take
non-contiguous inputs that torch runs as bmm: a documented bytes_read exception) are checked by
their own tests in tests/zoo/.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import transformers
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lm_predictor.errors import ModelError
from lm_predictor.models.build import tiny_config
from lm_predictor.models.resolve import resolve_config

ShapeSpec = tuple[int, int] | tuple[int, int, Literal["prefill", "decode"], int]

PREFILL = [(1, 3), (3, 5), (5, 7)]
DECODE = [(1, 1, "decode", 7), (3, 1, "decode", 9)]


class SuiteModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str | None = None
    config_class: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    tiny: bool = False
    shapes: list[ShapeSpec]

    @property
    def label(self) -> str:
        base = self.model_id or self.config_class or "?"
        return f"tiny:{base}" if self.tiny else base

    def config(self) -> Any:
        if self.model_id:
            config = resolve_config(self.model_id, allow_hub=False).config
        elif self.config_class:
            klass = getattr(transformers, self.config_class, None)
            if klass is None:
                raise ModelError(f"unknown transformers config class {self.config_class!r}")
            config = klass(**self.overrides)
        else:
            raise ModelError("a suite model needs model_id or config_class")
        return tiny_config(config) if self.tiny else config


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    models: list[SuiteModel]


def zoo_suite() -> Suite:
    """Every architecture of the builtin zoo, tiny, at three odd prefill shapes and two decodes."""
    presets = ["gpt2", "facebook/opt-125m", "meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-v0.1",
               "Qwen/Qwen2.5-7B", "google/gemma-2-9b", "microsoft/Phi-3-mini-4k-instruct",
               "mistralai/Mixtral-8x7B-v0.1", "deepseek-ai/DeepSeek-V3"]
    models = [SuiteModel(model_id=p, tiny=True, shapes=PREFILL + DECODE) for p in presets]
    models.append(SuiteModel(model_id="bert-base-uncased", tiny=True, shapes=PREFILL))
    for klass in ("Qwen3Config", "Qwen2MoeConfig", "GPTNeoXConfig", "FalconConfig"):
        models.append(SuiteModel(config_class=klass, tiny=True, shapes=PREFILL + DECODE))
    models.append(SuiteModel(config_class="T5Config", tiny=True, shapes=PREFILL))  # no decode
    return Suite(name="zoo", models=models)


def load_suite(spec: str) -> Suite:
    """`zoo` or a suite file path; one-line ModelError on a bad file."""
    if spec == "zoo":
        return zoo_suite()
    path = Path(spec)
    if not path.is_file():
        raise ModelError(f"suite {spec!r} is neither 'zoo' nor a file; pass a suite JSON file")
    try:
        return Suite.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ModelError(f"suite file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ModelError(f"suite file {path}: {loc}: {err['msg']}") from None
