"""The syntax tree of an FQL expression, and its text.

Nodes are frozen dataclasses; ``column`` (1-based, where the node starts in the expression)
is left out of equality so that a tree can be compared with the parse of its own text
(``parse(to_fql(node)) == node``), which the property tests rely on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

COMPARISONS = ("=", "!=", ">", ">=", "<", "<=", "in")
KEYWORDS = frozenset({"and", "or", "in", "true", "false", "null"})
PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class All:
    """``all``: the condition every event meets (Segment's filter ``if: all``)."""

    column: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True, eq=False)
class Literal:
    """A string, number, ``true``, ``false`` or ``null`` written in the expression."""

    value: str | int | float | bool | None
    column: int = field(default=1, compare=False)

    def __eq__(self, other: object) -> bool:
        # True == 1 in Python, but not in FQL: the type is part of the literal.
        return (
            isinstance(other, Literal)
            and type(self.value) is type(other.value)
            and self.value == other.value
        )

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True, slots=True)
class Path:
    """A dotted field path into the event, e.g. ``context.page.url`` as its segments."""

    segments: tuple[str, ...]
    column: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list written in the expression: ``["a", "b"]``."""

    items: tuple[Node, ...]
    column: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    """A call of a built-in function: ``match(event, "Debug *")``."""

    name: str
    args: tuple[Node, ...]
    column: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Not:
    """``!operand``."""

    operand: Node
    column: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Compare:
    """``left <op> right`` with op one of ``= != > >= < <= in``."""

    op: str
    left: Node
    right: Node
    column: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class And:
    left: Node
    right: Node
    column: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class Or:
    left: Node
    right: Node
    column: int = field(default=1, compare=False)


Node = All | Literal | Path | ListOf | Call | Not | Compare | And | Or

# Binding strength, loosest first: or, and, comparison, !, then values.
_OR, _AND, _COMPARE, _NOT, _VALUE = 1, 2, 3, 4, 5


def to_fql(node: Node) -> str:
    """The expression's text, with the parentheses its structure needs and no others."""
    return _format(node, _OR)


def format_path(segments: tuple[str, ...]) -> str:
    """A path as FQL writes it: characters other than letters, digits, ``_`` and ``-`` are
    escaped with a backslash, and so is a first segment that would read as a number or a
    keyword."""
    parts = [_format_segment(s) for s in segments]
    first = segments[0] if segments else ""
    starts_number = first[:1] != "" and first[0] in "0123456789-"
    if starts_number or first in KEYWORDS or first == "all":
        parts[0] = "\\" + parts[0]
    return ".".join(parts)


def format_literal(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return f'"{escaped}"'
    return repr(value)


def _format_segment(segment: str) -> str:
    if PLAIN_SEGMENT.fullmatch(segment):
        return segment
    return "".join(c if PLAIN_SEGMENT.fullmatch(c) else "\\" + c for c in segment)


def _format(node: Node, at_least: int) -> str:
    text, strength = _format_node(node)
    return f"({text})" if strength < at_least else text


def _format_node(node: Node) -> tuple[str, int]:
    match node:
        case All():
            return "all", _VALUE
        case Literal(value=value):
            return format_literal(value), _VALUE
        case Path(segments=segments):
            return format_path(segments), _VALUE
        case ListOf(items=items):
            return "[" + ", ".join(_format(i, _OR) for i in items) + "]", _VALUE
        case Call(name=name, args=args):
            return f"{name}(" + ", ".join(_format(a, _OR) for a in args) + ")", _VALUE
        case Not(operand=operand):
            return "!" + _format(operand, _NOT), _NOT
        case Compare(op=op, left=left, right=right):
            return f"{_format(left, _NOT)} {op} {_format(right, _NOT)}", _COMPARE
        case And(left=left, right=right):
            return f"{_format(left, _AND)} and {_format(right, _COMPARE)}", _AND
        case Or(left=left, right=right):
            return f"{_format(left, _OR)} or {_format(right, _AND)}", _OR
    raise TypeError(f"not an FQL node: {node!r}")  # pragma: no cover - the union is closed
