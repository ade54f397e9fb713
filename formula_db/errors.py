"""Exceptions of the formula layer, each rendering as one line that names the problem and the fix."""
from __future__ import annotations


class FormulaError(Exception):
    """A template that cannot be parsed, validated or evaluated.

    `template` is the template text, `pos` the 0-based character offset (or None), `where` names
    the entry and field (e.g. `torch__nn__Linear.flops`) when known.
    """

    def __init__(self, message: str, template: str | None = None, pos: int | None = None,
                 where: str | None = None) -> None:
        self.message = message
        self.template = template
        self.pos = pos
        self.where = where
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.where:
            parts.append(self.where)
        if self.template is not None:
            shown = self.template if len(self.template) <= 80 else self.template[:77] + "..."
            parts.append(f"template {shown!r}")
        if self.pos is not None:
            parts.append(f"at position {self.pos}")
        prefix = ", ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def located(self, where: str) -> "FormulaError":
        """The same error with the entry/field it happened in."""
        if self.where:
            return self
        return type(self)(self.message, self.template, self.pos, where)


class UnknownKeyError(FormulaError):
    """A formula key (looked up or called from a template) that no database layer holds."""


class CycleError(FormulaError):
    """Templates that call each other in a cycle."""


class DatabaseError(Exception):
    """A formula database file that cannot be read or written; the file is left untouched."""
