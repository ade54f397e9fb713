"""Transfer / derivation figures over a sample of non-zoo causal-LM model types (meta, tiny configs).

Usage: uv run python benchmarks/coverage_sample.py [model_type ...]
Prints one line per type (classes transferred / derived / uncovered, fully covered and exact
before and after) and a total. Nothing is stored (store=False).
"""
from __future__ import annotations

import sys
import time

from transformers import CONFIG_MAPPING

from formula_db.registry import Registry
from lm_predictor.coverage import cover_model
from lm_predictor.models import tiny_config

DEFAULT_TYPES = ["olmo", "olmo2", "olmoe", "granite", "granitemoe", "stablelm", "starcoder2",
                 "cohere", "gemma", "glm", "helium", "jetmoe", "phimoe", "nemotron", "persimmon",
                 "phi", "gpt_bigcode", "codegen", "gptj", "bloom", "smollm3", "arcee",
                 "qwen3_moe", "hunyuan_v1_dense", "seed_oss", "exaone4", "ernie4_5", "minimax"]


def main(types: list[str]) -> None:
    registry = Registry.default(include_user=False)
    tot = {"types": 0, "ok": 0, "transferred": 0, "derived": 0, "none": 0, "before": 0,
           "after": 0}
    for model_type in types:
        t0 = time.perf_counter()
        try:
            config = tiny_config(CONFIG_MAPPING[model_type]())
            report = cover_model(config, registry, store=False)
        except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
            print(f"{model_type:18s} FAILED {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            tot["types"] += 1
            continue
        tot["types"] += 1
        tot["ok"] += 1
        for k in ("transferred", "derived", "none"):
            tot[k] += report.count(k)
        tot["before"] += report.before.fully_exact
        tot["after"] += report.after.fully_exact
        none = [o.class_name.rsplit(".", 1)[-1] + " (" + o.reason[:70] + ")"
                for o in report.outcomes if o.source == "none"]
        print(f"{model_type:18s} {time.perf_counter() - t0:5.1f}s classes {len(report.outcomes):2d}: "
              f"transferred {report.count('transferred'):2d} derived {report.count('derived'):2d} "
              f"none {report.count('none'):2d} | fully exact before {report.before.fully_exact!s:5s} "
              f"after {report.after.fully_exact!s:5s} | {'; '.join(none)[:200]}", flush=True)
    print(f"TOTAL {tot['ok']}/{tot['types']} traced; classes transferred {tot['transferred']}, "
          f"derived {tot['derived']}, uncovered {tot['none']}; fully covered and exact types "
          f"before {tot['before']}, after {tot['after']}")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT_TYPES)
