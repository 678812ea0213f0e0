"""From a syntax tree to nested Python closures, built once and then called per event.

Nothing here calls ``eval`` or ``exec``: an expression is data and compiles to closures over
its constants. Each node becomes the cheapest closure for its shape, because filters run on
every event of a destination: a path of one to three segments reads dicts directly, ``x =
"literal"`` is a single ``==``, ``x in [literals]`` looks the value up in a set, and
``match(x, "Debug *")`` is ``startswith``.

Rules every closure keeps (the property tests check them on arbitrary JSON):

- it never raises, whatever the event holds;
- ``=`` is strict: values of different types are never equal (``"1" = 1`` and ``1 = true``
  are false), except integers and floats, which compare by value; a missing field is null;
- ``> >= < <=`` are true only between two numbers;
- ``and``, ``or``, ``!`` and the condition itself count only ``true`` as true (null, a
  string or a number count as not true), as Segment documents for ``and`` and ``or``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from headwater.processor.fql import functions
from headwater.processor.fql.errors import FqlError
from headwater.processor.fql.glob import GlobError, compile_glob
from headwater.processor.fql.nodes import (
    All,
    And,
    Call,
    Compare,
    ListOf,
    Literal,
    Node,
    Not,
    Or,
    Path,
)
from headwater.processor.fql.parser import parse

Condition = Callable[[dict[str, Any]], bool]
"""A compiled condition: is this event one the expression selects?"""

ValueExpr = Callable[[dict[str, Any]], Any]
"""A compiled value expression: the value it computes from this event."""

_Fn = Callable[[Any], Any]
_Test = Callable[[Any], bool]
_NUMBERS = (int, float)
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_MIRRORED = {">": "<", ">=": "<=", "<": ">", "<=": ">="}
_PREDICATES = frozenset({"contains", "match", "bool"})  # functions whose answer is a bool


def compile_condition(text: str) -> Condition:
    """Compile a filter or transformation condition (``all`` selects every event).

    FqlError when the text is not FQL, or when it can never be a condition (a string, a
    number, a list or a function such as ``length`` that gives no true/false)."""
    node = parse(text)
    _check_condition(node, text)
    return _Compiler(text).test(node)


def checked(text: str | None, field: str, value: bool = False) -> str | None:
    """``text`` when it compiles — as a condition, or as a value with ``value`` — else the
    ValueError that names ``field`` and says why (the workspace's validators)."""
    if text is not None:
        try:
            (compile_value if value else compile_condition)(text)
        except FqlError as exc:
            raise ValueError(f"{field}: {exc}") from None
    return text


def compile_value(text: str) -> ValueExpr:
    """Compile a value expression: a path, a literal, a function call, or a condition (whose
    value is true or false). FqlError when the text is not FQL."""
    return _Compiler(text).value(parse(text))


def strict_equal(a: Any, b: Any) -> bool:
    """FQL's ``=``: same type and equal, lists and objects item by item; integers and floats
    by value. Iterative, so that deeply nested values cannot exhaust the stack."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        kind = type(x)
        if kind is not type(y):
            if kind in _NUMBERS and type(y) in _NUMBERS and x == y:
                continue
            return False
        if kind is list:
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif kind is dict:
            if x.keys() != y.keys():
                return False
            pending.extend((x[key], y[key]) for key in x)
        elif x != y:
            return False
    return True


def _check_condition(node: Node, text: str) -> None:
    """Refuse what can never be true or false, where a condition is expected."""
    match node:
        case And(left=left, right=right) | Or(left=left, right=right):
            _check_condition(left, text)
            _check_condition(right, text)
        case Not(operand=operand):
            _check_condition(operand, text)
        case Literal(value=value) if not (value is None or isinstance(value, bool)):
            kind = "a string" if isinstance(value, str) else "a number"
            raise FqlError(
                f"{kind} is not a condition; compare it with a field, e.g."
                ' event = "Order Completed"',
                node.column,
                text,
            )
        case ListOf():
            raise FqlError(
                "a list is not a condition; test membership with in, e.g."
                ' event in ["Order Completed", "Cart Viewed"]',
                node.column,
                text,
            )
        case Call(name=name) if name not in _PREDICATES:
            raise FqlError(
                f"{name}(...) gives a value, not true or false; compare it, e.g. {name}(...) = ...",
                node.column,
                text,
            )


class _Compiler:
    def __init__(self, text: str) -> None:
        self.text = text

    def test(self, node: Node) -> _Test:
        """A closure answering exactly True or False."""
        match node:
            case All():
                return _always
            case And(left=left, right=right):
                first, second = self.test(left), self.test(right)
                return lambda e: first(e) and second(e)
            case Or(left=left, right=right):
                first, second = self.test(left), self.test(right)
                return lambda e: first(e) or second(e)
            case Not(operand=operand):
                inner = self.test(operand)
                return lambda e: not inner(e)
            case Compare(op=op, left=left, right=right):
                return self.compare(op, left, right)
            case Call(name=name) if name in ("contains", "match"):
                return self.value(node)
            case Literal(value=value):
                return _always if value is True else _never
        get = self.value(node)
        return lambda e: get(e) is True

    def value(self, node: Node) -> _Fn:
        match node:
            case Literal(value=value):
                return lambda e: value
            case Path(segments=segments):
                return _getter(segments)
            case ListOf(items=items):
                if all(isinstance(i, Literal) for i in items):
                    constant = [i.value for i in items if isinstance(i, Literal)]
                    return lambda e: constant
                parts = [self.value(i) for i in items]
                return lambda e: [part(e) for part in parts]
            case Call(name=name, args=args):
                return self.call(name, args)
        return self.test(node)

    def call(self, name: str, args: tuple[Node, ...]) -> _Fn:
        fn = functions.FUNCTIONS[name].apply
        if name == "match" and isinstance(args[1], Literal):
            return self.match_literal(args[0], args[1])
        if name == "contains" and isinstance(args[1], Literal):
            haystack, needle = self.value(args[0]), args[1].value
            if type(needle) is not str:
                return _never
            return lambda e: needle in s if type(s := haystack(e)) is str else False
        if len(args) == 1:
            arg = self.value(args[0])
            return lambda e: fn(arg(e))
        first, second = self.value(args[0]), self.value(args[1])
        return lambda e: fn(first(e), second(e))

    def match_literal(self, subject: Node, pattern: Literal) -> _Test:
        if type(pattern.value) is not str:
            return _never
        try:
            matches = compile_glob(pattern.value)
        except GlobError as exc:
            raise FqlError(f"invalid glob pattern: {exc}", pattern.column, self.text) from None
        get = self.value(subject)
        return lambda e: matches(s) if type(s := get(e)) is str else False

    def compare(self, op: str, left: Node, right: Node) -> _Test:
        if op in ("=", "!="):
            equal = self.equality(left, right)
            if op == "=":
                return equal
            return lambda e: not equal(e)
        if op == "in":
            return self.membership(left, right)
        return self.ordering(op, left, right)

    def equality(self, left: Node, right: Node) -> _Test:
        if isinstance(left, Literal) and not isinstance(right, Literal):
            left, right = right, left
        get = self.value(left)
        if not isinstance(right, Literal):
            other = self.value(right)
            return lambda e: strict_equal(get(e), other(e))
        constant = right.value
        if isinstance(left, Literal):
            result = strict_equal(left.value, constant)
            return _always if result else _never
        if type(constant) is str:
            return lambda e: get(e) == constant
        if constant is None or type(constant) is bool:
            return lambda e: get(e) is constant
        return lambda e: type(v := get(e)) in _NUMBERS and v == constant

    def membership(self, left: Node, right: Node) -> _Test:
        get = self.value(left)
        if isinstance(right, ListOf) and all(isinstance(i, Literal) for i in right.items):
            values = [i.value for i in right.items if isinstance(i, Literal)]
            return _in_constants(get, values)
        items = self.value(right)

        def contained(e: Any) -> bool:
            found = items(e)
            if type(found) is not list:
                return False
            needle = get(e)
            kind = type(needle)
            if kind is str:
                return needle in found
            if needle is None or kind is bool:
                return any(x is needle for x in found)
            if kind in _NUMBERS:
                return any(type(x) in _NUMBERS and x == needle for x in found)
            return any(strict_equal(needle, x) for x in found)

        return contained

    def ordering(self, op: str, left: Node, right: Node) -> _Test:
        if isinstance(left, Literal) and not isinstance(right, Literal):
            left, right, op = right, left, _MIRRORED[op]
        compare = _ORDERINGS[op]
        get = self.value(left)
        if isinstance(right, Literal):
            constant = right.value
            if type(constant) not in _NUMBERS:
                return _never
            return lambda e: type(v := get(e)) in _NUMBERS and compare(v, constant)
        other = self.value(right)

        def ordered(e: Any) -> bool:
            a, b = get(e), other(e)
            return type(a) in _NUMBERS and type(b) in _NUMBERS and compare(a, b)

        return ordered


def _always(event: Any) -> bool:
    return True


def _never(event: Any) -> bool:
    return False


def _in_constants(get: _Fn, values: list[Any]) -> _Test:
    """``x in [literals]`` as set lookups, one set per type so that ``1 in [true]`` stays
    false."""
    strings = frozenset(v for v in values if type(v) is str)
    numbers = frozenset(v for v in values if type(v) in _NUMBERS)
    bools = frozenset(v for v in values if type(v) is bool)
    has_null = any(v is None for v in values)

    def contained(e: Any) -> bool:
        v = get(e)
        kind = type(v)
        if kind is str:
            return v in strings
        if kind in _NUMBERS:
            return v in numbers
        if kind is bool:
            return v in bools
        return has_null and v is None

    return contained


def _getter(segments: tuple[str, ...]) -> _Fn:
    """Read a path; null when a step is missing or not an object. A segment of ASCII digits
    also indexes a list (``context.externalIds.0.id``)."""
    if any(_index(s) >= 0 for s in segments):
        return _indexing_getter(segments)
    if len(segments) == 1:
        (a,) = segments
        return lambda e: e.get(a) if type(e) is dict else None
    if len(segments) == 2:
        a, b = segments

        def get2(e: Any) -> Any:
            if type(e) is dict and type(v := e.get(a)) is dict:
                return v.get(b)
            return None

        return get2
    if len(segments) == 3:
        a, b, c = segments

        def get3(e: Any) -> Any:
            if type(e) is dict and type(v := e.get(a)) is dict and type(w := v.get(b)) is dict:
                return w.get(c)
            return None

        return get3

    def get_n(e: Any) -> Any:
        for key in segments:
            if type(e) is not dict:
                return None
            e = e.get(key)
        return e

    return get_n


def _indexing_getter(segments: tuple[str, ...]) -> _Fn:
    steps = [(s, _index(s)) for s in segments]

    def get(e: Any) -> Any:
        for key, index in steps:
            kind = type(e)
            if kind is dict:
                e = e.get(key)
            elif kind is list and 0 <= index < len(e):
                e = e[index]
            else:
                return None
        return e

    return get


def _index(segment: str) -> int:
    """The list index a segment can also stand for, or -1."""
    if segment.isascii() and segment.isdigit() and len(segment) <= 18:
        return int(segment)
    return -1
