"""Template errors: a parse error with the offset it points at, and a runtime error.

Imports nothing of the agent.
"""

from __future__ import annotations


class TemplateError(Exception):
    """A template that does not parse. `offset` is the 0-based character offset in the text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class UndefinedVariableError(TemplateError):
    """A template that names a variable it cannot see (`name`, with its `$`)."""

    def __init__(self, name: str, offset: int) -> None:
        super().__init__(f"undefined variable: {name}", offset)
        self.name = name


class TemplateRuntimeError(Exception):
    """A template that parsed but failed on the data (wrong type, missing field)."""
