"""Glob patterns for ``match(s, pattern)``: whole-string, case-sensitive.

``*`` matches any run of characters (also none), ``?`` exactly one, ``[abc]`` one of the
listed characters, ``[a-z]`` one in the range, ``[^abc]`` or ``[!abc]`` one not listed, and
``\\x`` the character ``x`` itself (``\\*``, ``\\?``, ``\\[``, ``\\]``). Characters are Unicode code
points.

The pattern is cut at its stars into chunks of fixed length. A string matches when the first
chunk is its prefix, the last its suffix, and the others appear in order in between; taking
the leftmost place for each middle chunk is always right, so matching never backtracks and
costs at most (string length × pattern length), whatever the pattern. (A translation to a
regular expression with ``.*`` would not: ``*a*a*a*b`` against a long run of ``a`` takes
exponential time, and patterns can come from event data.) Common shapes take a shortcut:
``abc`` is ``==``, ``abc*`` ``startswith``, ``*abc`` ``endswith``, ``*abc*`` ``in``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

Matcher = Callable[[str], bool]


class GlobError(ValueError):
    """A malformed pattern; ``offset`` is where in the pattern (0-based)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class _Chunk:
    """A run of the pattern without stars: ``literal`` when it has no ``?`` or class."""

    length: int
    literal: str | None
    regex: re.Pattern[str] | None

    def at(self, s: str, pos: int) -> bool:
        if self.literal is not None:
            return s.startswith(self.literal, pos)
        assert self.regex is not None
        return self.regex.match(s, pos) is not None

    def find(self, s: str, start: int, end: int) -> int:
        if self.literal is not None:
            return s.find(self.literal, start, end)
        assert self.regex is not None
        found = self.regex.search(s, start, end)
        return -1 if found is None else found.start()


def compile_glob(pattern: str) -> Matcher:
    """A function telling whether a string matches ``pattern``; GlobError if it is malformed."""
    chunks, starred = _parse(pattern)
    if not starred:
        only = chunks[0]
        if only.literal is not None:
            text = only.literal
            return lambda s: s == text
        regex = only.regex
        assert regex is not None
        return lambda s: regex.fullmatch(s) is not None
    first, last, middle = chunks[0], chunks[-1], chunks[1:-1]
    literals = [c.literal for c in chunks]
    if not middle and first.length == 0 and last.length == 0:
        return lambda s: True
    if not middle and last.length == 0 and literals[0] is not None:
        prefix = literals[0]
        return lambda s: s.startswith(prefix)
    if not middle and first.length == 0 and literals[-1] is not None:
        suffix = literals[-1]
        return lambda s: s.endswith(suffix)
    if len(middle) == 1 and first.length == last.length == 0 and literals[1] is not None:
        needle = literals[1]
        return lambda s: needle in s
    return _general(first, middle, last)


@lru_cache(maxsize=512)
def cached_glob(pattern: str) -> Matcher | None:
    """For patterns known only per event: compiled once per distinct pattern; None when
    malformed (``match`` is then false)."""
    try:
        return compile_glob(pattern)
    except GlobError:
        return None


def _general(first: _Chunk, middle: list[_Chunk], last: _Chunk) -> Matcher:
    least = first.length + sum(c.length for c in middle) + last.length

    def matches(s: str) -> bool:
        size = len(s)
        if size < least or not first.at(s, 0):
            return False
        end = size - last.length
        if not last.at(s, end):
            return False
        pos = first.length
        for chunk in middle:
            found = chunk.find(s, pos, end)
            if found < 0:
                return False
            pos = found + chunk.length
        return True

    return matches


def _parse(pattern: str) -> tuple[list[_Chunk], bool]:
    """The pattern's chunks (first and last may be empty) and whether it has a star."""
    chunks: list[_Chunk] = []
    atoms: list[str] = []  # regular-expression text of each atom of the current chunk
    literal: list[str] | None = []  # the chunk's text while it has only plain characters
    starred = False
    pos = 0
    while pos < len(pattern):
        char = pattern[pos]
        if char == "*":
            chunks.append(_chunk(atoms, literal))
            atoms, literal, starred = [], [], True
            while pos < len(pattern) and pattern[pos] == "*":
                pos += 1
            continue
        if char == "?":
            atoms.append(".")
            literal = None
            pos += 1
        elif char == "[":
            regex, pos = _char_class(pattern, pos)
            atoms.append(regex)
            literal = None
        else:
            if char == "\\":
                if pos + 1 >= len(pattern):
                    raise GlobError("the pattern ends with a lone backslash; write \\\\", pos)
                pos += 1
                char = pattern[pos]
            atoms.append(re.escape(char))
            if literal is not None:
                literal.append(char)
            pos += 1
    chunks.append(_chunk(atoms, literal))
    return chunks, starred


def _chunk(atoms: list[str], literal: list[str] | None) -> _Chunk:
    if literal is not None:
        return _Chunk(len(atoms), "".join(literal), None)
    return _Chunk(len(atoms), None, re.compile("".join(atoms), re.DOTALL))


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    """The regular expression of the class opening at ``start``, and the position after it."""
    pos = start + 1
    negated = pos < len(pattern) and pattern[pos] in "^!"
    if negated:
        pos += 1
    parts: list[str] = []
    while True:
        if pos >= len(pattern):
            raise GlobError("'[' is not closed; add ']' or write \\[ for a literal '['", start)
        char = pattern[pos]
        if char == "]":
            break
        low, pos = _class_char(pattern, pos)
        if pos + 1 < len(pattern) and pattern[pos] == "-" and pattern[pos + 1] != "]":
            high, pos = _class_char(pattern, pos + 1)
            if high < low:
                raise GlobError(f"the range {low}-{high} is reversed; write {high}-{low}", start)
            parts.append(f"\\U{ord(low):08x}-\\U{ord(high):08x}")
        else:
            parts.append(f"\\U{ord(low):08x}")
    if not parts:
        raise GlobError("'[]' lists no characters; write \\[\\] for the two characters", start)
    return ("[^" if negated else "[") + "".join(parts) + "]", pos + 1


def _class_char(pattern: str, pos: int) -> tuple[str, int]:
    if pattern[pos] == "\\":
        if pos + 1 >= len(pattern):
            raise GlobError("the pattern ends with a lone backslash; write \\\\", pos)
        return pattern[pos + 1], pos + 2
    return pattern[pos], pos + 1
