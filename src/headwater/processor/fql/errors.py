"""The one error FQL raises: an expression that cannot be compiled."""

from __future__ import annotations


class FqlError(ValueError):
    """An FQL expression is malformed: what was wrong, where, and what to write instead.

    ``column`` is 1-based over the whole expression (the end of the expression is
    ``len(expression) + 1``). ``str(err)`` reads
    ``column 8: expected a value after '=' (in: type = )``. It subclasses ValueError so that
    pydantic turns it into a validation error that names the configuration field.
    """

    def __init__(self, message: str, column: int, expression: str) -> None:
        self.message = message
        self.column = column
        self.expression = expression
        super().__init__(f"column {column}: {message} (in: {expression})")
