"""Locating a module class's source for the formula agent: its code and `code_location`.

`class_source(cls)` returns the class header, `__init__` and `forward` (each from the class in
the MRO that defines it, so an inherited `forward` is shown with where it comes from), and the
class's file relative to its top-level package's parent directory with the class's line range,
as a `schema.CodeLocation`. `find_class(dotted)` resolves a dotted class name among modules
that are *already imported*: it never imports anything, so a name chosen by the agent cannot
run a module's top-level code.

Limits: classes whose source `inspect` cannot read (defined in a REPL, C extensions) raise
`SourceError`; the text is capped at `MAX_SOURCE_CHARS` and the class docstring at
`MAX_DOC_CHARS` (cuts are marked). Other methods the forward calls are not included: the agent
reads them with the `read_source` tool only if they are classes (a known limit).

Example:
    >>> src = class_source(torch.nn.Linear)
    >>> src.location.file, src.location.start_line > 0
    ('torch/nn/modules/linear.py', True)
"""
from __future__ import annotations

import inspect
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formula_db.naming import dotted_name
from formula_db.schema import CodeLocation

MAX_SOURCE_CHARS = 24_000
MAX_DOC_CHARS = 1_200  # class docstrings are shown, shortened
METHODS = ("__init__", "forward")


class SourceError(LookupError):
    """A class whose source cannot be found or read."""


@dataclass(frozen=True)
class ClassSource:
    """The text shown to the agent and where it was read from."""

    full_class_name: str
    text: str
    location: CodeLocation


def full_name(cls: type) -> str:
    """The dotted name a trace records for the class and its entry carries (`torch.nn.Linear`
    for torch's classes, `module.Qualname` otherwise)."""
    return dotted_name(cls)


def find_class(dotted: str) -> type | None:
    """The class named `module.path.Qualname` if its module is already imported, else None."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[cut:]:
            if attr.startswith("__"):
                return None
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, type):
            return obj
    return None


def relative_file(cls: type) -> str:
    """The class's file relative to the directory holding its top-level package
    (`transformers/models/llama/modeling_llama.py`); the bare file name if unknown."""
    try:
        path = Path(inspect.getsourcefile(cls) or inspect.getfile(cls)).resolve()
    except (TypeError, OSError):
        raise SourceError(f"cannot find the file of {full_name(cls)}") from None
    top = sys.modules.get(cls.__module__.split(".")[0])
    if getattr(top, "__path__", None):
        roots = [Path(p).resolve().parent for p in top.__path__]  # type: ignore[union-attr]
    elif getattr(top, "__file__", None):
        roots = [Path(top.__file__).resolve().parent]  # type: ignore[union-attr, arg-type]
    else:
        roots = []
    for root in roots:
        try:
            return str(path.relative_to(root))
        except ValueError:
            continue
    return path.name


def _lines(obj: Any) -> tuple[list[str], int]:
    try:
        return inspect.getsourcelines(obj)
    except (OSError, TypeError):
        raise SourceError(f"the source of {getattr(obj, '__qualname__', obj)!r} is not "
                          f"available (defined interactively or in compiled code)") from None


def class_source(cls: type) -> ClassSource:
    """Header, `__init__` and `forward` of `cls` with its file and line range."""
    lines, start = _lines(cls)
    location = CodeLocation(file=relative_file(cls), start_line=start,
                            end_line=start + len(lines) - 1)
    header_end = next((i for i, line in enumerate(lines) if line.rstrip().endswith(":")), 0)
    parts = [f"# {location.file}:{location.start_line}-{location.end_line}",
             "".join(lines[:header_end + 1]).rstrip()]
    doc = inspect.getdoc(cls)
    if doc and "__doc__" in vars(cls) and cls.__doc__:
        shown = doc if len(doc) <= MAX_DOC_CHARS else doc[:MAX_DOC_CHARS] + " [...]"
        parts.append(textwrap.indent(f'"""{shown}"""', "    "))
    for name in METHODS:
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or owner is object:
            continue
        fn = inspect.unwrap(vars(owner)[name])
        body, line = _lines(fn)
        if owner is not cls:
            parts.append(f"    # {name} inherited from {full_name(owner)} "
                         f"({relative_file(owner)}:{line})")
        parts.append("".join(body).rstrip())
    text = "\n\n".join(parts) + "\n"
    if len(text) > MAX_SOURCE_CHARS:
        text = text[:MAX_SOURCE_CHARS] + f"\n# ... [source cut at {MAX_SOURCE_CHARS} characters]\n"
    return ClassSource(full_name(cls), text, location)
