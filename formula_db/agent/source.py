"""Locating a module class's source for the formula agent: its code and `code_location`.

`class_source(cls)` returns the class header, `__init__` and `forward` (each from the class in
the MRO that defines it, so an inherited `forward` is shown with where it comes from), and the
class's file relative to its top-level package's parent directory with the class's line range,
as a `schema.CodeLocation`. `find_class(dotted)` resolves a dotted class name among modules
that are *already imported*, reading module and class `__dict__`s (never `getattr`, which on
transformers' lazy modules imports submodules): it never imports anything, so a name chosen by
the agent cannot run a module's top-level code.

`read_class(dotted, packages)` is what the agent's `read_source` tool uses: the name must be in
one of `packages` (the traced model's top-level packages); an imported class is shown with
`class_source`, any other is read from its file on disk, found from the top-level package's
location (`importlib.util.find_spec` of the top-level name only, which runs nothing) and the
module path, and cut out with `ast` (the file is parsed, never executed). A file that resolves
outside the package directory is refused.

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

import ast
import importlib.util
import inspect
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

from formula_db.naming import dotted_name
from formula_db.schema import CodeLocation

MAX_SOURCE_CHARS = 24_000
MAX_DOC_CHARS = 1_200  # class docstrings are shown, shortened
METHODS = ("__init__", "forward")
MAX_FILE_BYTES = 4_000_000  # a source file read_class will parse


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
    if not _valid_name(parts):
        return None
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[cut:]:
            try:
                obj = vars(obj).get(attr)  # never getattr: a lazy module's __getattr__ imports
            except TypeError:
                obj = None
            if obj is None:
                break
        if isinstance(obj, type):
            return obj
    return None


def _valid_name(parts: list[str]) -> bool:
    return len(parts) >= 2 and all(p.isidentifier() and not p.startswith("__") for p in parts)


def read_class(dotted: str, packages: Collection[str]) -> ClassSource:
    """Source of class `dotted` from one of `packages`, without importing anything (module doc)."""
    parts = dotted.split(".")
    if not _valid_name(parts):
        raise SourceError(f"{dotted!r} is not a dotted class name (module.path.Class)")
    top = parts[0]
    if top not in packages:
        raise SourceError(f"{dotted!r} is outside the traced model's packages "
                          f"({', '.join(sorted(packages))}); read_source reads only those")
    cls = find_class(dotted)
    if cls is not None and cls.__module__.split(".")[0] in packages:
        return class_source(cls)
    roots = _package_roots(top)
    for cut in range(len(parts) - 1, 0, -1):
        for root, base in roots:
            path = _module_file(root, base, parts[1:cut])
            if path is None:
                continue
            node, lines = _class_node(path, parts[cut:])
            if node is not None:
                return _static_source(dotted, node, lines, str(path.relative_to(base)))
    raise SourceError(f"no class {dotted!r} found in the files of package {top!r}; give the "
                      f"dotted name where the class is defined (module.path.Class)")


def _package_roots(top: str) -> list[tuple[Path, Path]]:
    """(package directory or single module file, the directory relative paths start from)."""
    module = sys.modules.get(top)
    if module is not None:
        locations = list(getattr(module, "__path__", None) or [])
        origin = getattr(module, "__file__", None)
    else:
        try:  # a top-level name: only the path finders run, nothing is imported or executed
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise SourceError(f"package {top!r} is not installed") from None
        locations = list(spec.submodule_search_locations or [])
        origin = spec.origin
    if locations:
        return [(Path(p).resolve(), Path(p).resolve().parent) for p in locations]
    if origin and origin.endswith(".py"):
        return [(Path(origin).resolve(), Path(origin).resolve().parent)]
    raise SourceError(f"package {top!r} has no Python source files")


def _module_file(root: Path, base: Path, sub: list[str]) -> Path | None:
    """The .py file of module `sub` under `root`, if it exists inside `root`."""
    if root.is_file():
        candidates = [root] if not sub else []
    else:
        candidates = ([root.joinpath(*sub).with_suffix(".py")] if sub else []) + \
                     [root.joinpath(*sub, "__init__.py")]
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
        except OSError:
            continue
        inside = resolved == root if root.is_file() else resolved.is_relative_to(root)
        if inside and resolved.is_file() and resolved.stat().st_size <= MAX_FILE_BYTES:
            return resolved
    return None


def _class_node(path: Path, qualname: list[str]) -> tuple[ast.ClassDef | None, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None, []
    body: list[ast.stmt] = tree.body
    node: ast.ClassDef | None = None
    for name in qualname:
        node = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if node is None:
            return None, []
        body = node.body
    return node, text.splitlines()


def _span(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return start, node.end_lineno or node.lineno


def _static_source(dotted: str, node: ast.ClassDef, lines: list[str], file: str) -> ClassSource:
    """Header, docstring, `__init__` and `forward` of a class read from its parsed file."""
    start, end = _span(node)
    location = CodeLocation(file=file, start_line=start, end_line=end)
    first_body = node.body[0].lineno if node.body else node.lineno + 1
    parts = [f"# {file}:{start}-{end} (read from the file; the module was not imported)",
             "\n".join(lines[start - 1:max(start, first_body - 1)]).rstrip()]
    doc = ast.get_docstring(node)
    if doc:
        shown = doc if len(doc) <= MAX_DOC_CHARS else doc[:MAX_DOC_CHARS] + " [...]"
        parts.append(textwrap.indent(f'"""{shown}"""', "    "))
    for name in METHODS:
        fn = next((n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and n.name == name), None)
        if fn is None:
            bases = ", ".join(ast.unparse(b) for b in node.bases) or "object"
            parts.append(f"    # {name} is not defined here: inherited from a base ({bases}); "
                         f"read_source the base class by its dotted name")
            continue
        a, b = _span(fn)
        parts.append("\n".join(lines[a - 1:b]).rstrip())
    text = "\n\n".join(parts) + "\n"
    if len(text) > MAX_SOURCE_CHARS:
        text = text[:MAX_SOURCE_CHARS] + f"\n# ... [source cut at {MAX_SOURCE_CHARS} characters]\n"
    return ClassSource(dotted, text, location)


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
