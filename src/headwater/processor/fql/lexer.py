"""FQL's tokens: strings, numbers, field paths, keywords and operators.

- Strings take double or single quotes (Segment's docs write ``'Button Clicked'``). ``\\\\``,
  ``\\"``, ``\\'``, ``\\n``, ``\\r``, ``\\t`` and ``\\uXXXX`` are escapes; any other backslash
  is kept with the character after it, so that a glob such as ``'ab\\*d'`` reaches
  ``match`` as written.
- Numbers: ``12``, ``-3``, ``4.5``, ``1e3`` (an integer unless it has a fraction or exponent).
- Paths: segments of letters, digits, ``_`` and ``-`` joined by dots; a backslash makes the
  next character part of the segment (``properties.first\\ name``, ``properties.my\\.key``).
  A path starts with a letter, ``_`` or a backslash (a digit would start a number).
- Keywords ``and or in true false null`` are lower-case words; escape one to use it as a
  field name (``\\true``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from headwater.processor.fql.errors import FqlError
from headwater.processor.fql.nodes import KEYWORDS

STRING, NUMBER, PATH, KEYWORD, OP, END = "string", "number", "path", "keyword", "op", "end"
PUNCTUATION = "()[],"
SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
DIGITS = frozenset("0123456789")
SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}
HINTS = {
    "==": "compare with a single '=' (FQL has no '==')",
    "&&": "write 'and' instead of '&&'",
    "&": "write 'and' instead of '&'",
    "||": "write 'or' instead of '||'",
    "|": "write 'or' instead of '|'",
}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # STRING, NUMBER, PATH, KEYWORD, OP, END, or one of "()[],"
    text: str  # as written in the expression
    value: Any  # the string, the number, the path's segments, the keyword or operator
    column: int  # 1-based


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an END token; FqlError on a character that
    cannot start a token, an unterminated string or a malformed number."""
    return _Lexer(text).run()


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.tokens: list[Token] = []

    def fail(self, message: str, pos: int) -> FqlError:
        return FqlError(message, pos + 1, self.text)

    def emit(self, kind: str, start: int, value: Any) -> None:
        self.tokens.append(Token(kind, self.text[start : self.pos], value, start + 1))

    def run(self) -> list[Token]:
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(text):
                self.tokens.append(Token(END, "", None, len(text) + 1))
                return self.tokens
            self.token()

    def token(self) -> None:
        text, start = self.text, self.pos
        char = text[start]
        nxt = text[start + 1] if start + 1 < len(text) else ""
        if char in "\"'":
            self.string(char)
        elif char in DIGITS or (char == "-" and nxt in DIGITS):
            self.number()
        elif (char.isascii() and (char.isalpha() or char == "_")) or char == "\\":
            self.path()
        elif char in PUNCTUATION:
            self.pos += 1
            self.emit(char, start, char)
        elif text.startswith(("!=", ">=", "<="), start):
            self.pos += 2
            self.emit(OP, start, text[start : self.pos])
        elif text.startswith(("==", "&&", "||"), start) or char in "&|":
            found = text[start : start + 2] if nxt == char else char
            raise self.fail(f"unexpected '{found}': {HINTS[found]}", start)
        elif char in "=<>!":
            self.pos += 1
            self.emit(OP, start, char)
        else:
            raise self.fail(
                f"unexpected character {char!r}; a field name with characters other than"
                " letters, digits, '_' and '-' needs a backslash before each of them, e.g."
                " properties.first\\ name",
                start,
            )

    def string(self, quote: str) -> None:
        text, start = self.text, self.pos
        out: list[str] = []
        pos = start + 1
        while pos < len(text):
            char = text[pos]
            if char == quote:
                self.pos = pos + 1
                self.emit(STRING, start, "".join(out))
                return
            if char == "\\" and pos + 1 < len(text):
                nxt = text[pos + 1]
                if nxt in SIMPLE_ESCAPES:
                    out.append(SIMPLE_ESCAPES[nxt])
                    pos += 2
                elif nxt == "u":
                    digits = text[pos + 2 : pos + 6]
                    if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                        raise self.fail("\\u must be followed by 4 hexadecimal digits", pos)
                    out.append(chr(int(digits, 16)))
                    pos += 6
                else:  # kept as written: glob patterns give \* \? \[ their meaning
                    out.append(text[pos : pos + 2])
                    pos += 2
                continue
            out.append(char)
            pos += 1
        raise self.fail(f"unterminated string: add the closing {quote}", start)

    def number(self) -> None:
        text, start = self.text, self.pos
        pos = start + 1 if text[start] == "-" else start
        pos = self.digits(pos)
        is_float = False
        if pos < len(text) and text[pos] == ".":
            if pos + 1 >= len(text) or text[pos + 1] not in DIGITS:
                raise self.fail("a decimal point must be followed by digits, e.g. 1.5", pos)
            pos = self.digits(pos + 1)
            is_float = True
        if pos < len(text) and text[pos] in "eE":
            exp = pos + 1
            if exp < len(text) and text[exp] in "+-":
                exp += 1
            if exp >= len(text) or text[exp] not in DIGITS:
                raise self.fail("an exponent must be followed by digits, e.g. 1e3", pos)
            pos = self.digits(exp)
            is_float = True
        if pos < len(text) and (text[pos] in SEGMENT_CHARS or text[pos] in ".\\"):
            raise self.fail(
                "a number cannot run into letters or dots; to name a field that starts with a"
                " digit, escape the digit, e.g. \\1st",
                start,
            )
        literal = text[start:pos]
        self.pos = pos
        if not is_float:
            try:
                self.emit(NUMBER, start, int(literal))
            except ValueError:  # past Python's limit on digits in a string
                raise self.fail("the number has too many digits", start) from None
            return
        value = float(literal)
        if math.isinf(value):
            raise self.fail("the number is too large", start)
        self.emit(NUMBER, start, value)

    def digits(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in DIGITS:
            pos += 1
        return pos

    def path(self) -> None:
        text, start = self.text, self.pos
        segments: list[str] = []
        current: list[str] = []
        escaped = False
        pos = start
        while pos < len(text):
            char = text[pos]
            if char == "\\":
                if pos + 1 >= len(text):
                    raise self.fail(
                        "a backslash in a field path must be followed by the character it escapes",
                        pos,
                    )
                current.append(text[pos + 1])
                escaped = True
                pos += 2
            elif char in SEGMENT_CHARS:
                current.append(char)
                pos += 1
            elif char == ".":
                if not current:
                    raise self.fail("empty segment in a field path (two dots in a row?)", pos)
                segments.append("".join(current))
                current = []
                pos += 1
            else:
                break
        if not current:
            raise self.fail("a field path cannot end with a dot", pos - 1)
        segments.append("".join(current))
        self.pos = pos
        word = segments[0]
        if len(segments) == 1 and not escaped and word in KEYWORDS:
            self.emit(KEYWORD, start, word)
        else:
            self.emit(PATH, start, tuple(segments))


def describe(token: Token) -> str:
    """How an error message names a token."""
    if token.kind == END:
        return "the end of the expression"
    if token.kind == STRING:
        shown = token.text if len(token.text) <= 30 else token.text[:27] + "..."
        return f"the string {shown}"
    if token.kind == NUMBER:
        return f"the number {token.text}"
    if token.kind == PATH:
        return f"the field {token.text}"
    return f"'{token.text}'"
