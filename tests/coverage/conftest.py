"""Shared samples for the coverage tests: each tiny model traced once on meta per session."""
from __future__ import annotations

from typing import Any

import pytest
import transformers

from lm_predictor.derive import Sample, sample_traces
from lm_predictor.models import tiny_config

_CACHE: dict[str, tuple[Any, list[Sample]]] = {}


def traced(config_class: str, **overrides: Any) -> tuple[Any, list[Sample]]:
    """(tiny config, samples at the fit and held-out shapes), cached per config."""
    key = config_class + repr(sorted(overrides.items()))
    if key not in _CACHE:
        config = tiny_config(getattr(transformers, config_class)(**overrides))
        _CACHE[key] = (config, sample_traces(config))
    return _CACHE[key]


@pytest.fixture(scope="session")
def olmo() -> tuple[Any, list[Sample]]:
    return traced("OlmoConfig")


@pytest.fixture(scope="session")
def olmoe() -> tuple[Any, list[Sample]]:
    return traced("OlmoeConfig")


@pytest.fixture(scope="session")
def stablelm() -> tuple[Any, list[Sample]]:
    return traced("StableLmConfig")
