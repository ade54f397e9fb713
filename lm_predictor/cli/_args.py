"""Argument types and option groups shared by the subcommands (argparse only: nothing heavy).

Flag spellings of the concept notes are accepted as aliases (`--model_id`, `--batch_size`, ...).
Values are validated here, before any heavy import: a bad number, a non-finite tolerance or a
dtype nobody knows is a usage error (exit 2) with a one-line message.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from typing import Callable

from formula_db.units import MODEL_DTYPES

DB_HELP = "DuckDB run database (default $LM_PREDICTOR_DB or runs.duckdb in the user data dir)"
MAX_DIM = 2**40  # larger batch/sequence sizes are typos, not models


def positive_int(text: str) -> int:
    """An integer >= 1 (and below 2**40)."""
    value = _int(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (and below 2**40)."""
    value = _int(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _int(text: str, what: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value >= MAX_DIM:
        raise argparse.ArgumentTypeError(f"{value} is too large (at most {MAX_DIM - 1})")
    return value


def int_list(text: str) -> list[int]:
    """'1,8,64' -> [1, 8, 64] (each >= 0)."""
    try:
        values = [_int(v.strip(), "an integer") for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r} "
                                         f"({exc})") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


def _number(text: str, what: str, ok: Callable[[float], bool]) -> float:
    """A finite float for which `ok` holds, else a usage error "expected <what>"."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected a finite {what.removeprefix('a ')}, "
                                         f"got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _number(text, "a number > 0", lambda v: v > 0)


def tolerance(text: str) -> float:
    """A finite relative tolerance >= 0."""
    return _number(text, "a number >= 0", lambda v: v >= 0)


def fraction(text: str) -> float:
    """A share in (0, 1]."""
    return _number(text, "a number in (0, 1]", lambda v: 0 < v <= 1)


DEVICE = re.compile(r"^(meta|cpu|cuda(:\d+)?)$")


def device_name(text: str) -> str:
    """meta, cpu, cuda or cuda:N (whether it exists is checked when the run starts)."""
    if not DEVICE.match(text.strip().lower()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use meta (no memory), cpu, "
                                         f"cuda or cuda:N")
    return text.strip().lower()


def output_file(text: str) -> str:
    """A file to write: its folder must exist (no folder is ever created for an output)."""
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(text)))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist; create it first or "
                                         f"write elsewhere")
    return text


def add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help=DB_HELP)


def add_formulas_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--formulas", metavar="PATH",
                   help="user formula database (default $LM_PREDICTOR_FORMULAS or the user "
                        "data dir)")


def add_dtype_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", choices=MODEL_DTYPES, default=None,
                   help="model dtype (default: the config's torch_dtype, as the model is "
                        "published and run; float32 when the config names none)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model and shape flags shared by analyze-like commands."""
    p.add_argument("--model-id", "--model_id", dest="model_id", required=True,
                   help="preset name or hub id (gpt2, meta-llama/Llama-3.1-8B), local directory, "
                        "or config.json path")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=1)
    p.add_argument("--seq-len", "--seq_len", dest="seq_len", type=positive_int, default=None,
                   help="prompt tokens in prefill (default 128); decode processes one token, so "
                        "--seq-len is refused there")
    p.add_argument("--phase", choices=("prefill", "decode", "train"), default="prefill",
                   help="decode traces one new token against a KV cache of --kv-len tokens; "
                        "train traces one training step (forward with labels, loss, backward)")
    p.add_argument("--kv-len", "--kv_len", dest="kv_len", type=non_negative_int, default=0)
    add_dtype_arg(p)
    p.add_argument("--device", type=device_name, default="meta",
                   help="meta (default: no weights, no memory), cpu, cuda or cuda:N")
