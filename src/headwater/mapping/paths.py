"""``@path`` paths: parsed once into steps, read per event without parsing or regexes.

A path is Segment's JSONPath-like form: an optional ``$.`` (or ``$`` alone for the whole
event), then keys separated by dots, ``[n]`` indexes into lists and ``["key"]`` or
``['key']`` for keys with dots, spaces or brackets in them::

    $.properties.revenue      properties.products[0].sku      $.traits["first name"]

A key made of digits (``products.0``) reads a list's element as well as an object's key, as
JavaScript does. Reading never raises: a step that does not apply (a key of a list, an index
past the end, anything inside a string) gives :data:`MISSING`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

Getter = Callable[[Any], Any]
Step = str | int


class _Missing:
    """No value at all, unlike null: the key is dropped from the payload."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


class PathError(ValueError):
    """A path that cannot be parsed; the message says what to write instead."""


def parse_path(text: str) -> tuple[Step, ...]:
    """The steps of ``text``: keys (str) and list indexes (int); PathError if malformed.

    ``()`` is the whole value (``$``, ``$.``)."""
    if text in ("$", "$."):
        return ()
    body = text[2:] if text.startswith("$.") else text
    if body.startswith("$"):
        raise PathError(f"{text!r}: write '$.' followed by a key, e.g. '$.properties.price'")
    if not body:
        raise PathError("the path is empty; write e.g. '$.userId', or '$.' for the whole event")
    return tuple(_steps(body, text, len(text) - len(body)))


def _steps(body: str, text: str, offset: int) -> list[Step]:
    """``offset``: where ``body`` starts in ``text``, so that positions count in ``text``."""
    steps: list[Step] = []
    i, n = 0, len(body)
    expect_key = True  # at the start and after a dot a key must follow
    while i < n:
        char = body[i]
        if char == "[":
            i = _bracket(body, i, text, steps, offset)
            expect_key = False
        elif char == ".":
            if expect_key:
                at = i + 1 + offset
                raise PathError(f"{text!r}: empty key at position {at}; remove the extra '.'")
            expect_key = True
            i += 1
        elif char == "]":
            raise PathError(f"{text!r}: ']' at position {i + 1 + offset} closes no '['")
        else:
            if not expect_key:
                raise PathError(f"{text!r}: put a '.' before the key at position {i + 1 + offset}")
            j = i
            while j < n and body[j] not in ".[]":
                j += 1
            steps.append(body[i:j])
            i, expect_key = j, False
    if expect_key:
        raise PathError(f"{text!r} ends with '.'; name a key after it or remove the '.'")
    return steps


def _bracket(body: str, i: int, text: str, steps: list[Step], offset: int) -> int:
    """Parse ``[n]``, ``["key"]`` or ``['key']`` at ``i``; return the index after it."""
    end, at = len(body), i + 1 + offset
    if i + 1 < end and body[i + 1] in "\"'":
        quote = body[i + 1]
        close = body.find(quote + "]", i + 2)
        if close < 0:
            raise PathError(f"{text!r}: the {quote}-quoted key at position {at} is not closed")
        steps.append(body[i + 2 : close])
        return close + 2
    close = body.find("]", i)
    inner = body[i + 1 : close] if close >= 0 else ""
    if close < 0 or not inner.isdigit() or not inner.isascii():
        raise PathError(
            f"{text!r}: '[' at position {at} must hold an index such as [0] or a quoted key such as"
            ' ["first name"]'
        )
    steps.append(int(inner))
    return close + 1


def getter(steps: tuple[Step, ...]) -> Getter:
    """A function reading ``steps`` from a value, giving MISSING where there is nothing."""
    if not steps:
        return _identity
    if all(isinstance(s, str) and not s.isdigit() for s in steps):
        return _keys_getter(tuple(str(s) for s in steps))
    return _steps_getter(steps)


def _identity(value: Any) -> Any:
    return value


def _keys_getter(keys: tuple[str, ...]) -> Getter:
    """Keys only (the common case): plain subscripts, with the failures caught at once.

    A key of a string, a number, a list or null raises TypeError, an absent key KeyError;
    JSON objects have string keys only, so nothing else can answer a string subscript."""
    if len(keys) == 1:
        [key] = keys

        def get_one(value: Any) -> Any:
            if type(value) is dict:
                return value.get(key, MISSING)
            return MISSING

        get_one.path_keys = keys  # type: ignore[attr-defined]  # the object builder inlines it
        return get_one

    def get(value: Any) -> Any:
        try:
            for key in keys:
                value = value[key]
        except (KeyError, TypeError, IndexError):
            return MISSING
        return value

    get.path_keys = keys  # type: ignore[attr-defined]  # the object builder inlines it
    return get


def _steps_getter(steps: tuple[Step, ...]) -> Getter:
    plan = tuple(_step(s) for s in steps)

    def get(value: Any) -> Any:
        for key, index in plan:
            if type(value) is dict:
                if key is None or key not in value:
                    return MISSING
                value = value[key]
            elif type(value) is list:
                if index is None or index >= len(value):
                    return MISSING
                value = value[index]
            else:
                return MISSING
        return value

    return get


def _step(step: Step) -> tuple[str | None, int | None]:
    """(the object key, the list index) a step reads; None where it reads nothing."""
    if isinstance(step, int):
        return None, step
    return step, int(step) if step.isdigit() and step.isascii() else None
