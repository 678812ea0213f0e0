"""FQL's grammar, parsed by recursive descent into the nodes of ``nodes.py``.

    expression := and ("or" and)*
    and        := comparison ("and" comparison)*
    comparison := unary (("=" | "!=" | ">" | ">=" | "<" | "<=" | "in") unary)?
    unary      := "!" unary | value
    value      := string | number | "true" | "false" | "null" | path
                | function "(" [expression ("," expression)*] ")"
                | "[" [expression ("," expression)*] "]" | "(" expression ")"

So ``!`` binds tighter than a comparison (``!a = b`` is ``(!a) = b``; write ``!(a = b)`` or
``a != b``), comparisons tighter than ``and``, and ``and`` tighter than ``or``. Comparisons do
not chain. Nesting is limited to ``MAX_DEPTH`` levels, so that no expression can exhaust
Python's stack when it is parsed or evaluated.
"""

from __future__ import annotations

from headwater.processor.fql.errors import FqlError
from headwater.processor.fql.functions import FUNCTIONS
from headwater.processor.fql.lexer import (
    END,
    KEYWORD,
    NUMBER,
    OP,
    PATH,
    STRING,
    Token,
    describe,
    tokenize,
)
from headwater.processor.fql.nodes import (
    COMPARISONS,
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

MAX_DEPTH = 64
KEYWORD_VALUES = {"true": True, "false": False, "null": None}


def parse(text: str) -> Node:
    """The syntax tree of an FQL expression; FqlError names the column of the first fault.

    The whole expression ``all`` (Segment's "every event") parses to :class:`All`."""
    if text.strip() == "all":
        return All(column=text.index("all") + 1)
    return _Parser(text).run()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, message: str, token: Token | None = None) -> FqlError:
        return FqlError(message, (token or self.token).column, self.text)

    def is_keyword(self, word: str) -> bool:
        return self.token.kind == KEYWORD and self.token.value == word

    def run(self) -> Node:
        if self.token.kind == END:
            raise self.fail(
                'the expression is empty; write a condition such as type = "track", or all'
                " to match every event"
            )
        node = self.expression()
        token = self.token
        if token.kind == ")":
            raise self.fail("this ')' closes no '('")
        if token.kind == PATH and token.text.lower() in ("and", "or", "in"):
            raise self.fail(f"keywords are lower-case: write '{token.text.lower()}'")
        if token.kind != END:
            raise self.fail(
                f"{describe(token)} cannot follow a complete expression; join conditions with"
                " 'and' or 'or'"
            )
        return node

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(
                f"the expression nests more than {MAX_DEPTH} levels deep; split it or write"
                " it flatter"
            )

    def expression(self) -> Node:
        self.nested()
        node = self.conjunction()
        while self.is_keyword("or"):
            keyword = self.advance()
            self.expect_operand(keyword, "a condition")
            node = Or(node, self.conjunction(), column=keyword.column)
        self.depth -= 1
        return node

    def conjunction(self) -> Node:
        node = self.comparison()
        while self.is_keyword("and"):
            keyword = self.advance()
            self.expect_operand(keyword, "a condition")
            node = And(node, self.comparison(), column=keyword.column)
        return node

    def comparison(self) -> Node:
        left = self.unary()
        token = self.token
        if not ((token.kind == OP and token.value in COMPARISONS) or self.is_keyword("in")):
            return left
        self.advance()
        self.expect_operand(token, "a value")
        right = self.unary()
        nxt = self.token
        if (nxt.kind == OP and nxt.value in COMPARISONS) or self.is_keyword("in"):
            raise self.fail(
                f"comparisons do not chain; write a {token.value} b and b {nxt.text} c, or"
                " group with parentheses"
            )
        return Compare(str(token.value), left, right, column=token.column)

    def unary(self) -> Node:
        token = self.token
        if token.kind == OP and token.value == "!":
            self.advance()
            self.nested()
            self.expect_operand(token, "a condition")
            node = Not(self.unary(), column=token.column)
            self.depth -= 1
            return node
        return self.value()

    def expect_operand(self, after: Token, what: str) -> None:
        """Fail with a useful message when the next token cannot start a value."""
        token = self.token
        starts_value = token.kind in (STRING, NUMBER, PATH, "(", "[") or (
            token.kind == KEYWORD and token.value in KEYWORD_VALUES
        )
        if starts_value or (token.kind == OP and token.value == "!"):
            return
        found = "" if token.kind == END else f", found {describe(token)}"
        raise self.fail(f"expected {what} after '{after.text}'{found}")

    def value(self) -> Node:
        token = self.token
        if token.kind in (STRING, NUMBER):
            self.advance()
            return Literal(token.value, column=token.column)
        if token.kind == KEYWORD and token.value in KEYWORD_VALUES:
            self.advance()
            return Literal(KEYWORD_VALUES[token.value], column=token.column)
        if token.kind == PATH:
            self.advance()
            if self.token.kind == "(":
                return self.call(token)
            return Path(token.value, column=token.column)
        if token.kind == "(":
            self.advance()
            node = self.expression()
            if self.token.kind != ")":
                raise self.fail(
                    f"expected ')' to close the '(' at column {token.column}, found"
                    f" {describe(self.token)}"
                )
            self.advance()
            return node
        if token.kind == "[":
            return ListOf(self.sequence("]", "the list"), column=token.column)
        if token.kind == END:
            raise self.fail("expected a value at the end of the expression")
        raise self.fail(f"expected a value, found {describe(token)}")

    def call(self, name: Token) -> Call:
        segments: tuple[str, ...] = name.value
        if len(segments) != 1 or name.text != segments[0]:
            raise self.fail(
                f"{name.text} is a field path, not a function; only functions can be called",
                name,
            )
        function = FUNCTIONS.get(segments[0])
        if function is None:
            raise self.fail(
                f"unknown function '{segments[0]}'; the functions are"
                f" {', '.join(sorted(FUNCTIONS))}",
                name,
            )
        args = self.sequence(")", f"the call of {function.name}")
        if len(args) != len(function.params):
            plural = "" if len(function.params) == 1 else "s"
            raise self.fail(
                f"{function.name} takes {len(function.params)} argument{plural}"
                f" ({function.signature}), not {len(args)}",
                name,
            )
        return Call(function.name, args, column=name.column)

    def sequence(self, closing: str, what: str) -> tuple[Node, ...]:
        """Comma-separated expressions after an opening '(' or '[', up to ``closing``."""
        opening = self.advance()
        self.nested()
        items: list[Node] = []
        if self.token.kind == closing:
            self.advance()
            self.depth -= 1
            return ()
        while True:
            if self.token.kind == ",":
                raise self.fail(f"expected a value before ',' in {what}")
            items.append(self.expression())
            token = self.token
            if token.kind == closing:
                self.advance()
                self.depth -= 1
                return tuple(items)
            if token.kind != ",":
                raise self.fail(
                    f"expected ',' or '{closing}' in {what} opened at column {opening.column},"
                    f" found {describe(token)}"
                )
            self.advance()
            if self.token.kind in (closing, END):
                found = "" if self.token.kind == END else f", found '{closing}'"
                raise self.fail(f"expected a value after ',' in {what}{found}")
