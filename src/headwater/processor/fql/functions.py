"""FQL's built-in functions, on the values of a JSON event.

No function raises: a value of a type a function does not take gives ``null`` (``false`` for
the functions that answer a question: ``contains``, ``match``). Segment documents the
``null`` cases: ``contains(null, s)`` is false, ``length(null)`` 0, ``lowercase(null)`` null,
``typeof(null)`` "null" and ``match(null, p)`` false. Where its docs say nothing, the choice
made here is written on the function (and in docs/fql.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.processor.fql.glob import cached_glob

_SPACE = re.compile(r"\s")
_WORD_START = re.compile(r"(^|\s)(\S)")
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_TYPE_NAMES = {str: "string", int: "number", float: "number", bool: "bool", type(None): "null"}
_TYPE_NAMES |= {list: "list", dict: "object"}


def contains(s: Any, sub: Any) -> bool:
    """True when string ``s`` contains string ``sub``."""
    return type(s) is str and type(sub) is str and sub in s


def length(value: Any) -> int | None:
    """Bytes of a string in UTF-8 (``"ア"`` is 3), items of a list, 0 for null."""
    kind = type(value)
    if kind is str:
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if kind is list:
        return len(value)
    return 0 if value is None else None


def lowercase(value: Any) -> str | None:
    return value.lower() if type(value) is str else None


def uppercase(value: Any) -> str | None:
    return value.upper() if type(value) is str else None


def snakecase(value: Any) -> str | None:
    """Every whitespace character becomes ``_`` (``"test string"`` → ``"test_string"``), as
    Segment documents it; the case is left alone (``lowercase(snakecase(x))`` for both)."""
    return _SPACE.sub("_", value) if type(value) is str else None


def kebabcase(value: Any) -> str | None:
    """Every whitespace character becomes ``-``; the case is left alone."""
    return _SPACE.sub("-", value) if type(value) is str else None


def titlecase(value: Any) -> str | None:
    """The first character of each word is upper-cased (``"test string"`` → ``"Test
    String"``); the others are left alone."""
    if type(value) is not str:
        return None
    return _WORD_START.sub(lambda m: m.group(1) + m.group(2).upper(), value)


def typeof(value: Any) -> str:
    """``"string" | "number" | "list" | "bool" | "null"`` as Segment documents, and
    ``"object"`` for an object (Segment's docs do not say)."""
    return _TYPE_NAMES.get(type(value), "object")


def match(s: Any, pattern: Any) -> bool:
    """Glob match of a whole string (see glob.py); a malformed pattern matches nothing."""
    if type(s) is not str or type(pattern) is not str:
        return False
    matcher = cached_glob(pattern)
    return matcher is not None and matcher(s)


def to_bool(value: Any) -> bool | None:
    """Numbers: not zero. Strings: ``"true"``/``"1"`` and ``"false"``/``"0"``/``""`` (any
    case, around spaces); other strings give null. Lists and objects: not empty. Null: false."""
    kind = type(value)
    if kind is bool:
        return bool(value)
    if kind is int or kind is float:
        return bool(value != 0)
    if kind is str:
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        return False if text in ("false", "0", "") else None
    if kind is list or kind is dict:
        return len(value) > 0
    return False if value is None else None


def to_string(value: Any) -> str | None:
    """A string as itself; anything else as its JSON text (``12``, ``1.5``, ``true``,
    ``null``, ``["a",1]``); null when that cannot be written (absurdly deep values)."""
    kind = type(value)
    if kind is str:
        return str(value)
    if kind is int:
        try:
            return str(value)
        except ValueError:  # more digits than Python writes by default
            return None
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:  # ints past 64 bits, lone surrogates: the standard library writes them
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


def to_number(value: Any) -> int | float | None:
    """A number as itself; a string holding a decimal number (``" 12 "``, ``"-1.5e3"``) as
    that number; anything else, null."""
    kind = type(value)
    if kind is int or kind is float:
        return value  # type: ignore[no-any-return]
    if kind is not str:
        return None
    text = value.strip()
    if len(text) > 400 or not _NUMBER_TEXT.fullmatch(text):
        return None
    if _INTEGER_TEXT.fullmatch(text):
        return int(text)
    number = float(text)
    return None if number in (float("inf"), float("-inf")) else number


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    params: tuple[str, ...]
    signature: str  # how error messages describe the parameters
    apply: Callable[..., Any]


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("contains", ("s", "sub"), "a string and the substring to look for", contains),
        Function("length", ("x",), "a string or a list", length),
        Function("lowercase", ("s",), "a string", lowercase),
        Function("uppercase", ("s",), "a string", uppercase),
        Function("snakecase", ("s",), "a string", snakecase),
        Function("kebabcase", ("s",), "a string", kebabcase),
        Function("titlecase", ("s",), "a string", titlecase),
        Function("typeof", ("x",), "any value", typeof),
        Function("match", ("s", "pattern"), "a string and a glob pattern", match),
        Function("bool", ("x",), "any value", to_bool),
        Function("string", ("x",), "any value", to_string),
        Function("number", ("x",), "a number or a string", to_number),
    )
}
"""Every function FQL knows, by name (names are case-sensitive)."""
