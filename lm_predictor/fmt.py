"""One number style and short names for every table the commands print (no rich, no torch).

- Numbers: SI prefixes with 3 significant digits (`si(1_981_284_352) == "1.98 G"`), decimal
  prefixes throughout (1 GB = 1e9 bytes), integers below 1000 as they are. Units go in the
  column headers ("FLOP", "B", "%"); `si(x, "FLOP")` appends one when a cell needs it.
- Relative errors as percentages (`pct(0.241) == "24.1%"`, None: "∞").
- Class names and formula keys shortened to the class itself (`short_class`, `short_key`): full
  names stay in JSON, CSV and SQL.
- `LEGEND`: what a FLOP is, where element-wise work is, how bytes are scaled.

Example:
    >>> si(512_000_000, "B")
    '512 MB'
"""
from __future__ import annotations

from typing import Any

PREFIXES = ("", "k", "M", "G", "T", "P", "E", "Z", "Y")
LEGEND = ("FLOP: one multiply or add of a matmul/conv (a multiply-accumulate is 2 FLOP; "
          "MACs = FLOP / 2); element-wise work is counted separately as vector_flops; "
          "B: bytes, decimal prefixes (1 GB = 1e9 B)")


def si(value: Any, unit: str = "") -> str:
    """A number with an SI prefix and 3 significant digits; None as '—'."""
    if value is None:
        return "—"
    number = float(value)
    if number != number:  # NaN
        return "—"
    if number in (float("inf"), float("-inf")):
        return "∞"
    scaled, index = number, 0
    while abs(scaled) >= 999.5 and index < len(PREFIXES) - 1:
        scaled, index = scaled / 1000, index + 1
    if index == 0:
        text = str(int(number)) if number == int(number) else f"{number:.3g}"
    else:
        text = f"{scaled:.3g}"
    suffix = PREFIXES[index] + unit
    return f"{text} {suffix}" if suffix else text


def pct(rel: float | None) -> str:
    """A relative error as a percentage with 3 significant digits; None (unbounded) as '∞'."""
    if rel is None or rel == float("inf"):
        return "∞"
    if rel == 0:
        return "0%"
    return f"{100 * rel:.3g}%"


def short_class(name: str) -> str:
    """The class (or function) name of a dotted name: 'a.b.GPT2Block' -> 'GPT2Block'."""
    return name.rsplit(".", 1)[-1]


def short_key(key: str) -> str:
    """The last component of a formula key: '..._llama__LlamaRMSNorm' -> 'LlamaRMSNorm'
    (keys double underscores, so a name with '_' in it is better shortened from its class)."""
    return key.rsplit("__", 1)[-1]
