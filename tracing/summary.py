"""Summaries of a trace for people and notebooks: totals, per module path, per class, per aten
op, an indented module tree and short reprs (`TraceViews`, mixed into `tracing.records.Trace`).

The FlopCounterMode / fvcore vocabulary: `total()` (and `get_total_flops()`), `by_module()`,
`by_class()`, `by_operator()`, `tree(depth)`, plus `Trace.by_path[path]` (the call records at a
module path, see `PathIndex`).

Keys of every metrics dict (`METRICS`: flops, vector_flops, bytes_read, bytes_written):
- a forward trace: the plain metric names;
- a training trace (`trace(..., backward=True)`): the plain names are the whole step, forward +
  backward (+ the recompute of activation checkpointing), split into `forward_<m>`,
  `backward_<m>` and, when any call was recomputed, `recompute_<m>`;
- `by_class()` adds `self_<key>` for the exclusive figures (ops run while a call of the class
  was the innermost module call); the plain keys are inclusive (children included, so a class
  nested in itself counts its inner calls twice); `calls` counts calls.
- `by_operator()` has `count` (executions) beside the metrics, with the same split.
Backward ops are charged to the module whose forward created the autograd node (see
`tracing.backward`). Ops outside any module call (a loss after the model) are in `total()` and
`by_operator()` and the tree's "(outside)" row, not in `by_module()` or `by_class()`.
Numbers in `tree()` and reprs use SI prefixes with 3 significant digits, decimal (1 kB = 1000 B),
as `lm_predictor.fmt` does.

Example:
    >>> import torch
    >>> from tracing import trace
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
    >>> x = torch.ones(2, 8)
    >>> with trace(model) as t:
    ...     _ = model(x)
    >>> t
    Trace(Sequential, 3 calls, 128 FLOP, 304 B moved, peak 64 B)
    >>> t.by_module()["0"]["flops"], t.by_path["0"][0].class_name
    (128, 'torch.nn.Linear')
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from formula_db.units import COUNTER_METRICS as METRICS

if TYPE_CHECKING:
    from .records import CallRecord, Counters, OpStat, Trace

PREFIXES = ("", "k", "M", "G", "T", "P", "E")
FORWARD, RECOMPUTE, BACKWARD = "forward", "recompute", "backward"
LEGEND = ("FLOP: matmul-class (a multiply-accumulate is 2 FLOP); vector: element-wise FLOP\n"
          "moved: bytes read + written; decimal prefixes (1 kB = 1000 B)")
TRAINING_LEGEND = "training step: figures are forward + backward; bwd FLOP: the backward part"


def si(value: float, unit: str = "") -> str:
    """`value` with an SI prefix and 3 significant digits: si(1_230_000_000, 'FLOP') ==
    '1.23 GFLOP' (the style of `lm_predictor.fmt.si`, which tracing may not import)."""
    scaled, index = float(value), 0
    while abs(scaled) >= 999.5 and index < len(PREFIXES) - 1:
        scaled, index = scaled / 1000, index + 1
    text = (str(int(value)) if index == 0 and float(value) == int(value)
            else f"{scaled:.3g}")
    suffix = PREFIXES[index] + unit
    return f"{text} {suffix}" if suffix else text


def short_class(name: str) -> str:
    """'torch.nn.Linear' -> 'Linear'."""
    return name.rsplit(".", 1)[-1]


class Parts:
    """Additive figures split by part of a step (forward, recompute, backward)."""

    def __init__(self, names: tuple[str, ...] = METRICS) -> None:
        self.names = names
        self.values: dict[str, dict[str, int]] = {}

    def add(self, part: str, values: Mapping[str, int]) -> None:
        into = self.values.setdefault(part, dict.fromkeys(self.names, 0))
        for name in self.names:
            into[name] += values[name]

    def add_counters(self, part: str, counters: "Counters") -> None:
        self.add(part, counters.as_dict())

    def row(self, parts: tuple[str, ...], prefix: str = "") -> dict[str, int]:
        """Plain keys: the sum of `parts`; with more than one part, `<part>_<name>` too."""
        out = {f"{prefix}{n}": sum(self.values.get(p, {}).get(n, 0) for p in parts)
               for n in self.names}
        if len(parts) > 1:
            for p in parts:
                out.update({f"{prefix}{p}_{n}": self.values.get(p, {}).get(n, 0)
                            for n in self.names})
        return out


class PathIndex(Mapping[str, list["CallRecord"]]):
    """Module path -> the call records at that path, in call order (several for a module called
    more than once). `index[path]` raises KeyError naming known paths; calling it,
    `index(path)`, returns [] for an unknown path (the earlier `Trace.by_path(path)` form)."""

    def __init__(self, calls: list["CallRecord"]) -> None:
        self._calls: dict[str, list[CallRecord]] = {}
        for call in calls:
            self._calls.setdefault(call.module_path, []).append(call)

    def __getitem__(self, path: str) -> list["CallRecord"]:
        try:
            return self._calls[path]
        except KeyError:
            known = ", ".join(repr(p) for p in list(self._calls)[:8])
            more = ", ..." if len(self._calls) > 8 else ""
            raise KeyError(f"no module call at path {path!r}; paths: {known}{more} "
                           f"('' is the model itself)") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    def __call__(self, path: str) -> list["CallRecord"]:
        return list(self._calls.get(path, []))

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, list(self._calls)[:6]))
        return f"PathIndex({len(self._calls)} paths: {shown}{', ...' if len(self) > 6 else ''})"


def call_repr(call: "CallRecord") -> str:
    """'CallRecord(#1 'fc1' Linear, 128 FLOP, 352 B moved)', backward added when recorded."""
    c = call.inclusive
    text = (f"CallRecord(#{call.call_id} {call.module_path!r} {short_class(call.class_name)}, "
            f"{si(c.flops, 'FLOP')}, {si(c.bytes_read + c.bytes_written, 'B')} moved")
    if call.phase != FORWARD:
        text += f", {call.phase}"
    b = call.backward_inclusive
    if b.flops or b.bytes_read or b.bytes_written:
        text += f"; backward {si(b.flops, 'FLOP')}, {si(b.bytes_read + b.bytes_written, 'B')}"
    return text + ")"


class TraceViews:
    """Summary methods of `Trace` (see the module docstring for the keys)."""

    # -- helpers -----------------------------------------------------------------------------

    def _parts(self: "Trace") -> tuple[str, ...]:
        if not self.backward:
            return (FORWARD,)
        if any(c.phase == RECOMPUTE for c in self.calls):
            return (FORWARD, RECOMPUTE, BACKWARD)
        return (FORWARD, BACKWARD)

    @staticmethod
    def _part_of(call: "CallRecord") -> str:
        return RECOMPUTE if call.phase == RECOMPUTE else FORWARD

    def _module_parts(self: "Trace") -> tuple[dict[str, Parts], dict[str, int],
                                              dict[str, str | None]]:
        """Per path: inclusive figures, call count, and the parent path in the module tree."""
        parent: dict[str, str | None] = {}
        for phase_first in (True, False):  # the forward call tree first, recompute-only after
            for call in self.calls:
                if (call.phase != RECOMPUTE) != phase_first or call.module_path in parent:
                    continue
                up = call.parent_call_id
                parent[call.module_path] = None if up is None else self.calls[up].module_path
        nodes: dict[str, Parts] = {}
        counts: dict[str, int] = {}
        for call in self.calls:
            part = self._part_of(call)
            targets = [call.module_path]
            if call.parent_call_id is None and part == RECOMPUTE:  # re-run during backward:
                seen = {call.module_path}       # charge the recompute to the module's ancestors
                up = parent.get(call.module_path)
                while up is not None and up not in seen:
                    seen.add(up)
                    targets.append(up)
                    up = parent.get(up)
            counts[call.module_path] = counts.get(call.module_path, 0) + 1
            for path in targets:
                node = nodes.setdefault(path, Parts())
                node.add_counters(part, call.inclusive)
                node.add_counters(BACKWARD, call.backward_inclusive)
        ordered = {path: nodes[path] for path in parent}
        return ordered, counts, parent

    # -- totals ------------------------------------------------------------------------------

    def total(self: "Trace") -> dict[str, int]:
        """Measured totals of the whole trace (a training step: forward + backward, see the
        module docstring), with `peak_activation_bytes` (and `saved_activation_bytes` for a
        training step)."""
        parts = Parts()
        if self.backward:
            step = self.step_totals()
            parts.add_counters(FORWARD, step.forward)
            parts.add_counters(RECOMPUTE, step.recompute)
            parts.add_counters(BACKWARD, step.backward)
        else:
            parts.add_counters(FORWARD, self.totals)
        out: dict[str, int] = parts.row(self._parts())
        out["peak_activation_bytes"] = self.peak_activation_bytes
        if self.backward:
            out["saved_activation_bytes"] = self.saved_activation_bytes
        return out

    def get_total_flops(self: "Trace") -> int:
        """Matmul-class FLOPs of the whole trace, as `FlopCounterMode.get_total_flops()`."""
        return self.total()["flops"]

    # -- tables ------------------------------------------------------------------------------

    def by_module(self: "Trace") -> dict[str, dict[str, int]]:
        """Module path ('' is the model) -> `calls` and inclusive metrics summed over the calls
        at that path, in first-call order (a recomputed call also counts in its ancestors)."""
        nodes, counts, _ = self._module_parts()
        parts = self._parts()
        return {path: {"calls": counts.get(path, 0), **node.row(parts)}
                for path, node in nodes.items()}

    def by_class(self: "Trace") -> dict[str, dict[str, int]]:
        """Full class name -> `calls`, inclusive metrics and `self_` (exclusive) metrics summed
        over the calls of the class, in first-call order."""
        inclusive: dict[str, Parts] = {}
        exclusive: dict[str, Parts] = {}
        counts: dict[str, int] = {}
        for call in self.calls:
            part = self._part_of(call)
            name = call.class_name
            counts[name] = counts.get(name, 0) + 1
            inclusive.setdefault(name, Parts()).add_counters(part, call.inclusive)
            inclusive[name].add_counters(BACKWARD, call.backward_inclusive)
            exclusive.setdefault(name, Parts()).add_counters(part, call.self_counters)
            exclusive[name].add_counters(BACKWARD, call.backward_self)
        parts = self._parts()
        return {name: {"calls": counts[name], **inclusive[name].row(parts),
                       **exclusive[name].row(parts, "self_")} for name in counts}

    def by_operator(self: "Trace") -> dict[str, dict[str, int]]:
        """Aten op (overload packet, e.g. 'aten.addmm') -> `count` and metrics over the whole
        trace (ops outside modules and, in a training step, backward ops included), most FLOPs
        first (then most bytes)."""
        names = ("count", *METRICS)
        ops: dict[str, Parts] = {}

        def add(part: str, table: dict[str, "OpStat"]) -> None:
            for op, stat in table.items():
                ops.setdefault(op, Parts(names)).add(
                    part, {"count": stat.count, **stat.counters().as_dict()})

        for call in self.calls:
            add(self._part_of(call), call.ops)
            add(BACKWARD, call.backward_ops)
        add(FORWARD, self.outside_ops)
        add(BACKWARD, self.outside_backward_ops)
        add(BACKWARD, self.unattributed_ops)
        parts = self._parts()
        rows = {op: acc.row(parts) for op, acc in ops.items()}
        order = sorted(rows, key=lambda op: (-rows[op]["flops"], -(rows[op]["bytes_read"]
                                             + rows[op]["bytes_written"]), op))
        return {op: rows[op] for op in order}

    # -- text --------------------------------------------------------------------------------

    def _name(self: "Trace") -> str:
        return short_class(self.calls[0].class_name) if self.calls else "no module call"

    def summary(self: "Trace") -> str:
        """One line: model class, calls, FLOPs, bytes moved, activation peak."""
        total = self.total()
        step = " training step" if self.backward else ""
        return (f"{self._name()}{step}, {len(self.calls)} calls, {si(total['flops'], 'FLOP')}, "
                f"{si(total['bytes_read'] + total['bytes_written'], 'B')} moved, "
                f"peak {si(self.peak_activation_bytes, 'B')}")

    def __repr__(self: "Trace") -> str:
        return f"Trace({self.summary()})"

    def tree(self: "Trace", depth: int | None = None) -> str:
        """The module tree as an indented table (FlopCounterMode's display): per module path its
        class, calls, FLOPs and share of the total, vector FLOPs, bytes moved (and, for a
        training step, the backward FLOPs included); `depth` levels below the model (None:
        all)."""
        nodes, counts, parent = self._module_parts()
        parts = self._parts()
        total = self.total()
        classes: dict[str, str] = {}
        for call in self.calls:
            classes.setdefault(call.module_path, short_class(call.class_name))
        kids: dict[str | None, list[str]] = {}
        for path, up in parent.items():
            kids.setdefault(up, []).append(path)
        header = ["module", "class", "calls", "FLOP", "% FLOP", "vector FLOP", "moved B"]
        if self.backward:
            header.append("bwd FLOP")
        rows: list[list[str]] = []

        def cells(label: str, cls: str, calls: str, row: dict[str, int]) -> list[str]:
            share = (f"{100 * row['flops'] / total['flops']:.1f}" if total["flops"] else "—")
            out = [label, cls, calls, si(row["flops"]), share, si(row["vector_flops"]),
                   si(row["bytes_read"] + row["bytes_written"])]
            if self.backward:
                out.append(si(row.get("backward_flops", 0)))
            return out

        def walk(path: str, level: int) -> None:
            up = parent.get(path)
            name = (path[len(up) + 1:] if up and path.startswith(up + ".")
                    else path if path else "(model)")  # 'h.0' below 'transformer'
            rows.append(cells("  " * level + name, classes[path], str(counts.get(path, 0)),
                              nodes[path].row(parts)))
            if depth is None or level < depth:
                for child in kids.get(path, []):
                    walk(child, level + 1)

        for root in kids.get(None, []):
            walk(root, 0)
        outside = Parts()
        outside.add_counters(FORWARD, self.outside)
        outside.add_counters(BACKWARD, self.outside_backward)
        outside.add_counters(BACKWARD, self.unattributed)
        extra = outside.row(parts)
        if any(extra[m] for m in METRICS):
            rows.append(cells("(outside)", "", "", extra))
        rows.append(cells("total", "", str(len(self.calls)), total))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(row: list[str]) -> str:
            return "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

        body = [line(header), *(line(r) for r in rows)]
        legend = [LEGEND] + ([TRAINING_LEGEND] if self.backward else [])
        return "\n".join([self.summary(), *body, *legend])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython: the short form
        printer.text(repr(self))
