"""Formula keys: the namespaced form of a dotted class or function name.

Every `.` and `_` of the dotted name becomes `__` (the concept notes' rule), so
`torch.nn.Linear` -> `torch__nn__Linear` and `torch.nn.functional.scaled_dot_product_attention`
-> `torch__nn__functional__scaled__dot__product__attention`. The mapping is not invertible on its
own (`a_b` and `a.b` collide), so entries store `full_class_name` and the registry resolves keys
through it.

Example:
    >>> key_for("torch.nn.Linear")
    'torch__nn__Linear'
"""
from __future__ import annotations

import re
from typing import Any

_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(__[A-Za-z0-9]+)*$")


def dotted_name(obj: Any) -> str:
    """The dotted name of a class, function or instance (`module.qualname`)."""
    target = obj if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    module = getattr(target, "__module__", None) or ""
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", "")
    # torch.nn.modules.linear.Linear is exported as torch.nn.Linear; prefer the public path.
    public = _public_torch_name(module, qualname, target)
    return public or (f"{module}.{qualname}" if module else qualname)


def public_name(dotted: str) -> str:
    """The public torch path of a dotted name (`torch.nn.modules.linear.Linear` ->
    `torch.nn.Linear`); other names unchanged."""
    module, _, qualname = dotted.rpartition(".")
    return _public_torch_name(module, qualname) or dotted


def _public_torch_name(module: str, qualname: str, obj: Any = None) -> str | None:
    if module.startswith("torch.nn.modules."):
        import torch.nn as nn

        if getattr(nn, qualname, None) is not None:
            return f"torch.nn.{qualname}"
    if obj is not None and (module.startswith("torch._C")
                            or qualname.startswith("_VariableFunctionsClass.")):
        # Builtins (torch._C._nn.linear, torch._VariableFunctionsClass.matmul) are exported as
        # torch.nn.functional.X or torch.X: name them by the public alias that is the same object.
        import torch
        import torch.nn.functional as F

        name = qualname.rsplit(".", 1)[-1]
        for prefix, namespace in (("torch.nn.functional", F), ("torch", torch)):
            if getattr(namespace, name, None) is obj:
                return f"{prefix}.{name}"
    return None


def key_for(name_or_obj: Any) -> str:
    """Formula key of a dotted name, class, function or module instance."""
    name = name_or_obj if isinstance(name_or_obj, str) else dotted_name(name_or_obj)
    if is_key(name):
        return name
    return name.replace("_", "__").replace(".", "__")


def is_key(name: str) -> bool:
    """True when `name` already has the key form (no dots, no single underscores)."""
    return "." not in name and bool(_KEY_RE.match(name))
