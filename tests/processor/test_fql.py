"""FQL: Segment's documented examples, every operator and function, the null rules, escapes,
precedence, and the column and wording of each kind of error."""

from __future__ import annotations

from typing import Any

import pytest

from headwater.processor.fql import (
    FqlError,
    compile_condition,
    compile_value,
    parse,
    strict_equal,
    to_fql,
)
from headwater.processor.fql.glob import GlobError, compile_glob
from headwater.processor.fql.nodes import (
    All,
    And,
    Call,
    Compare,
    ListOf,
    Literal,
    Not,
    Or,
    Path,
    format_path,
)
from headwater.processor.fql.parser import MAX_DEPTH

# The object of Segment's FQL reference (segment-docs src/api/public-api/fql.md).
DOCS_EVENT: dict[str, Any] = {
    "event": "Button Clicked",
    "type": "track",
    "context": {"library": {"name": "analytics.js", "version": "1.0"}},
    "properties": {"features": ["discounts", "dark-mode"]},
}

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "anonymousId": None,
    "messageId": "m-1",
    "properties": {
        "price": 150,
        "ratio": 0.5,
        "count": "3",
        "coupon": None,
        "paid": True,
        "tags": ["a", 1, True, None, [1, 2]],
        "nested": {"x": [1, {"y": "z"}]},
        "my.key": "dotted",
        "first name": "Ada",
        "true": "keyword",
        "1st": "first",
        "empty": "",
        "unicode": "アイ",
        "products": [{"id": "p1", "price": 10}, {"id": "p2", "price": 20}],
    },
    "traits": {"email": "Ada@Example.com"},
    "context": {"page": {"url": "https://shop.example.com/checkout"}},
}


def check(text: str, event: dict[str, Any] = EVENT) -> bool:
    return compile_condition(text)(event)


def value(text: str, event: dict[str, Any] = EVENT) -> Any:
    return compile_value(text)(event)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("event = 'Button Clicked'", True),
        ("event = 'Screen Tapped'", False),
        ("context.path.path = '/login'", False),
        ("type = 'identify' or type = 'track'", True),
        ("event = 'Button Clicked' and type = 'track'", True),
        ("match( context.library.version, '1.*' )", True),
        ("match( context.library.version, '2.*' )", False),
        ("type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )", True),
        ("!contains( context.library.name, 'js' )", False),
        ("'dark-mode' in properties.features", True),
        ("'blink' in properties.features", False),
        ("!( type in ['track', 'identify'] )", False),
        ("length( userId ) > 0", False),
    ],
)
def test_segment_documented_examples(text: str, expected: bool) -> None:
    assert check(text, DOCS_EVENT) is expected


@pytest.mark.parametrize(
    ("s", "pattern", "expected"),
    [
        ("abcd", "a*d", True),
        ("", "*", True),
        ("abc", "ab", False),
        ("abcd", "a??d", True),
        ("abcd", "*d", True),
        ("ab*d", "ab\\*d", True),
        ("abxd", "ab\\*d", False),
        ("abCd", "ab[cC]d", True),
        ("abcd", "ab[a-z]d", True),
        ("abcd", "ab[A-Z]d", False),
    ],
)
def test_segment_documented_globs(s: str, pattern: str, expected: bool) -> None:
    """The glob table of Segment's docs, written as they write it: 'ab\\*d' in FQL text."""
    fql = f"match('{s}', '{pattern}')"
    assert check(fql) is expected
    assert compile_glob(pattern)(s) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # = is strict and type-equal; numbers compare by value
        ('type = "track"', True),
        ("type = 'track'", True),
        ('properties.count = "3"', True),
        ("properties.count = 3", False),
        ("properties.price = 150", True),
        ("properties.price = 150.0", True),
        ("properties.paid = true", True),
        ("properties.paid = 1", False),
        ("properties.price = true", False),
        ("properties.coupon = null", True),
        ("properties.missing = null", True),
        ("anonymousId = null", True),
        ("properties.empty = null", False),
        ("properties.empty = ''", True),
        ('properties.tags = ["a", 1, true, null, [1, 2]]', True),
        ('properties.tags = ["a", 1, true, null, [1, 2.0]]', True),
        ('properties.tags = ["a", 1, 1, null, [1, 2]]', False),
        ("properties.nested = properties.nested", True),
        ("properties.price = properties.ratio", False),
        ('"1" = 1', False),
        ("1 = 1.0", True),
        ("null = null", True),
        ('"track" = type', True),
        # != is the negation of =
        ('type != "track"', False),
        ("properties.count != 3", True),
        ("userId != null", True),
        ("properties.missing != null", False),
        # orderings hold between numbers only
        ("properties.price > 100", True),
        ("properties.price >= 150", True),
        ("properties.price < 150", False),
        ("properties.price <= 150.0", True),
        ("properties.ratio < 1", True),
        ("100 < properties.price", True),
        ("150 >= properties.price", True),
        ("properties.count > 1", False),
        ('properties.count > "1"', False),
        ("properties.missing > 1", False),
        ("properties.missing < 1", False),
        ("properties.paid > 0", False),
        ('type > "a"', False),
        ("properties.price > properties.ratio", True),
        ("properties.ratio > properties.count", False),
        # in: strict membership, in a literal list or a list in the event
        ('event in ["Order Completed", "Cart Viewed"]', True),
        ('event in ["Cart Viewed"]', False),
        ("event in []", False),
        ("properties.price in [1, 150.0]", True),
        ("properties.paid in [1]", False),
        ("properties.paid in [true]", True),
        ("properties.price in [true]", False),
        ("properties.coupon in [null]", True),
        ("properties.coupon in [0, '']", False),
        ('"a" in properties.tags', True),
        ("1 in properties.tags", True),
        ("true in properties.tags", True),
        ("null in properties.tags", True),
        ("[1, 2] in properties.tags", True),
        ("2 in properties.tags", False),
        ('"a" in properties.count', False),
        ('"a" in properties.missing', False),
        ("properties.count in [properties.count]", True),
        ('type in [event, "track"]', True),
        # and / or / ! count only true as true
        ('type = "track" and event = "Order Completed"', True),
        ('type = "track" and event = "x"', False),
        ('type = "x" or event = "Order Completed"', True),
        ('type = "x" or event = "y"', False),
        ("properties.paid", True),
        ("properties.paid and true", True),
        ("properties.price", False),
        ("properties.missing or properties.paid", True),
        ("properties.coupon or false", False),
        ("!properties.paid", False),
        ("!properties.missing", True),
        ("!properties.price", True),
        ("!!properties.paid", True),
        ("true", True),
        ("false", False),
        ("null", False),
        ("all", True),
        ("  all  ", True),
        ("(true)", True),
    ],
)
def test_operators(text: str, expected: bool) -> None:
    result = check(text)
    assert result is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # contains: both strings
        ('contains(event, "Comp")', True),
        ('contains(event, "comp")', False),
        ('contains(event, "")', True),
        ('contains(null, "a")', False),
        ('contains(properties.missing, "a")', False),
        ('contains(properties.tags, "a")', False),
        ("contains(event, 1)", False),
        ("contains(event, properties.missing)", False),
        ("contains(properties.unicode, 'イ')", True),
        # match: whole string, case-sensitive
        ('match(event, "Order *")', True),
        ('match(event, "order *")', False),
        ('match(event, "Order")', False),
        ('match(event, "*Completed")', True),
        ('match(event, "*der Comp*")', True),
        ('match(event, "O?der*")', True),
        ('match(event, "[A-Z]rder [!a-z]omplete[cd]")', True),
        ('match(event, "[^O]rder*")', False),
        ("match(null, '*')", False),
        ("match(properties.price, '*')", False),
        ("match(event, properties.missing)", False),
        ("match(event, 1)", False),
        # a pattern from the event is compiled when met; a malformed one matches nothing
        ("match(event, event)", True),
        ("match(traits.email, properties.count)", False),
        ("match('[', properties.bad)", False),
        ("bool(properties.paid)", True),
        ("bool(properties.count)", False),
    ],
)
def test_predicate_functions(text: str, expected: bool) -> None:
    assert check(text, EVENT | {"properties": EVENT["properties"] | {"bad": "["}}) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # length: UTF-8 bytes of a string, items of a list, 0 for null, else null
        ("length(event)", 15),
        ("length(properties.unicode)", 6),
        ("length('ア')", 3),
        ("length(properties.tags)", 5),
        ("length(null)", 0),
        ("length(properties.missing)", 0),
        ("length(properties.price)", None),
        ("length(properties.nested)", None),
        ("length(properties.paid)", None),
        ("length('\\ud800')", 3),
        # case
        ("lowercase(traits.email)", "ada@example.com"),
        ("lowercase(null)", None),
        ("lowercase(properties.price)", None),
        ("uppercase(traits.email)", "ADA@EXAMPLE.COM"),
        ("uppercase(properties.tags)", None),
        ("snakecase('test string')", "test_string"),
        ("snakecase('Order  Completed')", "Order__Completed"),
        ("kebabcase('test string')", "test-string"),
        ("titlecase('test string')", "Test String"),
        ("titlecase('mcDonald  x')", "McDonald  X"),
        ("lowercase(snakecase(event))", "order_completed"),
        ("kebabcase(null)", None),
        ("titlecase(1)", None),
        # typeof
        ("typeof(event)", "string"),
        ("typeof(properties.price)", "number"),
        ("typeof(properties.ratio)", "number"),
        ("typeof(properties.tags)", "list"),
        ("typeof(properties.paid)", "bool"),
        ("typeof(properties.coupon)", "null"),
        ("typeof(properties.missing)", "null"),
        ("typeof(properties.nested)", "object"),
        # bool
        ("bool(properties.paid)", True),
        ("bool(0)", False),
        ("bool(0.5)", True),
        ("bool('true')", True),
        ("bool(' TRUE ')", True),
        ("bool('1')", True),
        ("bool('false')", False),
        ("bool('0')", False),
        ("bool('')", False),
        ("bool('yes')", None),
        ("bool(null)", False),
        ("bool(properties.tags)", True),
        ("bool([])", False),
        ("bool(properties.nested)", True),
        # string
        ("string(event)", "Order Completed"),
        ("string(properties.price)", "150"),
        ("string(properties.ratio)", "0.5"),
        ("string(properties.paid)", "true"),
        ("string(null)", "null"),
        ("string(properties.tags)", '["a",1,true,null,[1,2]]'),
        ("string(properties.nested)", '{"x":[1,{"y":"z"}]}'),
        # number
        ("number(properties.count)", 3),
        ("number(' -1.5e3 ')", -1500.0),
        ("number('12.')", 12.0),
        ("number('.5')", 0.5),
        ("number(properties.price)", 150),
        ("number('abc')", None),
        ("number('1e999')", None),
        ("number('nan')", None),
        ("number(properties.paid)", None),
        ("number(null)", None),
        # values
        ("properties.price", 150),
        ("'x'", "x"),
        ("[1, 'a', null]", [1, "a", None]),
        ("[properties.price, event]", [150, "Order Completed"]),
        ("properties.price > 100", True),
        ("all", True),
    ],
)
def test_value_functions(text: str, expected: Any) -> None:
    result = value(text)
    assert strict_equal(result, expected), result
    assert type(result) is type(expected)


def test_function_results_compare_strictly() -> None:
    assert check("length(properties.unicode) = 6")
    assert check("typeof(properties.tags) = 'list'")
    assert check("number(properties.count) = 3")
    assert check("string(properties.price) = '150'")
    assert check("string(properties.price) = 150") is False
    assert check("lowercase(traits.email) in ['ada@example.com']")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("properties.my\\.key = 'dotted'", True),
        ("properties.first\\ name = 'Ada'", True),
        ("properties.\\true = 'keyword'", True),
        ("properties.true = 'keyword'", True),
        ("properties.\\1st = 'first'", True),
        ("properties.1st = 'first'", True),
        ("properties.products.1.id = 'p2'", True),
        ("properties.products.2.id = null", True),
        ("properties.nested.x.1.y = 'z'", True),
        ("properties.tags.0 = 'a'", True),
        ("context.page.url = 'https://shop.example.com/checkout'", True),
        ("traits.email.x = null", True),
        ("properties.price.x = null", True),
    ],
)
def test_paths(text: str, expected: bool) -> None:
    assert check(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"a\\"b"', 'a"b'),
        ("'a\\'b'", "a'b"),
        ("'a\"b'", 'a"b'),
        ('"a\'b"', "a'b"),
        ('"a\\\\b"', "a\\b"),
        ('"a\\nb\\tc\\rd"', "a\nb\tc\rd"),
        ('"caf\\u00e9"', "café"),
        ('"ab\\*d"', "ab\\*d"),  # other escapes stay as written: globs need them
        ('"\\["', "\\["),
        ('""', ""),
        ("'アイ'", "アイ"),
    ],
)
def test_string_escapes(text: str, expected: str) -> None:
    assert value(text) == expected


def test_numbers() -> None:
    assert value("-3") == -3
    assert type(value("12")) is int
    assert value("4.5") == 4.5
    assert value("1e3") == 1000.0
    assert value("-2.5E-1") == -0.25
    assert value(str(10**30)) == 10**30
    assert check("properties.price > -1")
    assert check("properties.price>-1")


def test_precedence_not_then_comparison_then_and_then_or() -> None:
    a, b, c = Path(("a",)), Path(("b",)), Path(("c",))
    assert parse("!a = b") == Compare("=", Not(a), b)
    assert parse("!(a = b)") == Not(Compare("=", a, b))
    assert parse("a = 1 and b = 2 or c = 3") == Or(
        And(Compare("=", a, Literal(1)), Compare("=", b, Literal(2))), Compare("=", c, Literal(3))
    )
    assert parse("a or b and c") == Or(a, And(b, c))
    assert parse("(a or b) and c") == And(Or(a, b), c)
    assert parse("a and b and c") == And(And(a, b), c)
    assert parse("a or b or c") == Or(Or(a, b), c)
    assert parse("!a and b") == And(Not(a), b)
    assert parse("a in [1, b]") == Compare("in", a, ListOf((Literal(1), b)))
    assert parse("match(a, 'x*')") == Call("match", (a, Literal("x*")))
    assert parse("all") == All()
    # a field named "all" within a larger expression is a field
    assert parse("all = 1") == Compare("=", Path(("all",)), Literal(1))


def test_not_binds_tighter_than_comparison() -> None:
    """``!type = "track"`` compares ``!type`` (false) with "track": never true. Documented."""
    assert check('!type = "track"') is False
    assert check('!(type = "track")') is False
    assert check('!(type = "identify")') is True


def test_literal_types_are_part_of_equality() -> None:
    assert Literal(True) != Literal(1)
    assert Literal(1) == Literal(1)
    assert Literal(1) != Literal(1.0)
    assert len({Literal(True), Literal(1)}) == 2


def test_to_fql_round_trips() -> None:
    for text in [
        'type = "track" and match(event, "Debug *")',
        "properties.price > 100 and userId != null",
        'event in ["Order Completed", "Cart Viewed"]',
        "!(a = 1 or b = 2) and !c",
        "a or (b or c)",
        "a and (b and c)",
        "(!a) = b",
        "a = (b = c)",
        "properties.my\\.key = 'x\\\\y\"z'",
        "properties.\\true = \\1st",
        "\\all",
        "-1.5 < x",
    ]:
        tree = parse(text)
        assert parse(to_fql(tree)) == tree, to_fql(tree)


def test_format_path_escapes() -> None:
    assert format_path(("properties", "my.key")) == "properties.my\\.key"
    assert format_path(("properties", "first name")) == "properties.first\\ name"
    assert format_path(("true",)) == "\\true"
    assert format_path(("1st", "2nd")) == "\\1st.2nd"


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("type = ", 8, "expected a value after '='"),
        ("type =", 7, "expected a value after '='"),
        ('type = "track" and', 19, "expected a condition after 'and'"),
        ('type = "track" or ', 19, "expected a condition after 'or'"),
        ("type = and", 8, "expected a value after '=', found 'and'"),
        ("!", 2, "expected a condition after '!'"),
        ("", 1, "the expression is empty"),
        ("   ", 4, "the expression is empty"),
        ('type = "track', 8, 'unterminated string: add the closing "'),
        ("type = 'track", 8, "unterminated string: add the closing '"),
        ("(type = 'track'", 16, "expected ')' to close the '(' at column 1"),
        ("((a = 1)", 9, "expected ')' to close the '(' at column 1"),
        ("a = 1)", 6, "this ')' closes no '('"),
        ("a = 1 b = 2", 7, "the field b cannot follow a complete expression"),
        ("a = 1 AND b = 2", 7, "keywords are lower-case: write 'and'"),
        ("a = b = c", 7, "comparisons do not chain"),
        ("a == 1", 3, "compare with a single '='"),
        ("a = 1 && b", 7, "write 'and' instead of '&&'"),
        ("a = 1 || b", 7, "write 'or' instead of '||'"),
        ("a = 1 # x", 7, "unexpected character '#'"),
        ("properties.first name = 1", 18, "the field name cannot follow"),
        ("foo(a)", 1, "unknown function 'foo'; the functions are bool, contains"),
        ("Match(a, 'b')", 1, "unknown function 'Match'"),
        (
            "contains(a)",
            1,
            "contains takes 2 arguments (a string and the substring to look for), not 1",
        ),
        ("x = length(a, b)", 5, "length takes 1 argument (a string or a list), not 2"),
        ("x = lowercase()", 5, "lowercase takes 1 argument (a string), not 0"),
        ("properties.x(1) = 1", 1, "properties.x is a field path, not a function"),
        ("match(a, b", 11, "expected ',' or ')' in the call of match opened at column 6"),
        ("match(a, )", 10, "expected a value after ',' in the call of match, found ')'"),
        ("match(, a)", 7, "expected a value before ',' in the call of match"),
        ("a in [1, 2", 11, "expected ',' or ']' in the list opened at column 6"),
        ("a in [1,", 9, "expected a value after ',' in the list"),
        ("a in [1,]", 9, "expected a value after ',' in the list, found ']'"),
        ("a in", 5, "expected a value after 'in'"),
        ("()", 2, "expected a value, found ')'"),
        ("a = ,", 5, "expected a value after '=', found ','"),
        ("1.", 2, "a decimal point must be followed by digits"),
        ("x = 1e", 6, "an exponent must be followed by digits"),
        ("x = 12ab", 5, "a number cannot run into letters"),
        ("x = 1.2.3", 5, "a number cannot run into letters or dots"),
        ("x = 1e999", 5, "the number is too large"),
        ("properties..x = 1", 12, "empty segment in a field path"),
        ("properties. = 1", 11, "a field path cannot end with a dot"),
        ("x = 'a' \\", 9, "a backslash in a field path must be followed by"),
        ("x = '\\u12'", 6, "\\u must be followed by 4 hexadecimal digits"),
        ("- x", 1, "unexpected character '-'"),
        ("match(event, '[a-')", 14, "invalid glob pattern: '[' is not closed"),
        ("match(event, 'a[]')", 14, "invalid glob pattern: '[]' lists no characters"),
        ("match(event, '[z-a]')", 14, "invalid glob pattern: the range z-a is reversed"),
        (
            "match(event, 'a\\\\')",
            14,
            "invalid glob pattern: the pattern ends with a lone backslash",
        ),
        ('"Order Completed"', 1, "a string is not a condition"),
        ("event = 'a' or 12", 16, "a number is not a condition"),
        ("[1, 2]", 1, "a list is not a condition"),
        ("!length(event)", 2, "length(...) gives a value, not true or false"),
        ("lowercase(event) and true", 1, "lowercase(...) gives a value"),
    ],
)
def test_errors_name_the_column(text: str, column: int, message: str) -> None:
    with pytest.raises(FqlError) as caught:
        compile_condition(text)
    err = caught.value
    assert message in err.message
    assert err.column == column, err
    assert err.expression == text
    assert str(err) == f"column {column}: {err.message} (in: {text})"


def test_error_reads_as_documented() -> None:
    with pytest.raises(FqlError) as caught:
        compile_condition("type = ")
    assert str(caught.value) == "column 8: expected a value after '=' (in: type = )"
    assert isinstance(caught.value, ValueError)


def test_nesting_is_limited_without_exhausting_the_stack() -> None:
    deep = "(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(FqlError, match="nests more than"):
        compile_condition(deep)
    with pytest.raises(FqlError, match="nests more than"):
        compile_condition("!" * 5000 + "true")
    with pytest.raises(FqlError, match="nests more than"):
        compile_condition("x in " + "[" * 5000)
    shallow = "(" * 20 + "true" + ")" * 20
    assert compile_condition(shallow)({}) is True


def test_value_expressions_compile_what_conditions_refuse() -> None:
    assert compile_value('"USD"')({}) == "USD"
    assert compile_value("length(event)")(EVENT) == 15
    with pytest.raises(FqlError, match="expected a value after"):
        compile_value("lowercase(traits.email) =")


def test_strict_equal() -> None:
    assert strict_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not strict_equal({"a": 1}, {"a": 1, "b": 2})
    assert not strict_equal({"a": 1}, {"b": 1})
    assert not strict_equal([True], [1])
    assert not strict_equal(0, False)
    assert not strict_equal([], {})
    deep: Any = 1
    other: Any = 1
    for _ in range(100_000):
        deep, other = [deep], [other]
    assert strict_equal(deep, other)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("*", ["", "abc"], []),
        ("**", ["", "x"], []),
        ("abc", ["abc"], ["ab", "abcd", "ABC"]),
        ("a*", ["a", "abc"], ["", "ba"]),
        ("*a", ["a", "ba"], ["ab"]),
        ("*a*", ["a", "bab"], ["bbb"]),
        ("a*b*c", ["abc", "aXbYc", "abbc"], ["ab", "acb", "abcx"]),
        ("a*a", ["aa", "aba"], ["a"]),
        ("?", ["x", "ア", "\n"], ["", "xy"]),
        ("*?", ["x", "xy"], [""]),
        ("a?c*", ["abc", "abcd"], ["ac"]),
        ("*[0-9]*", ["a1b", "9"], ["ab"]),
        ("[!a]*", ["b", "bcd"], ["a", "abc", ""]),
        ("[^a-c]", ["d"], ["b"]),
        ("[a\\]]", ["]", "a"], ["b"]),
        ("[a-]", ["-", "a"], ["b"]),
        ("\\[x\\]", ["[x]"], ["x"]),
        ("*.example.com", ["shop.example.com"], ["example.com", "shopXexample.com"]),
        ("x*y*z", ["xyz", "x_y_z_z"], ["xzy"]),
    ],
)
def test_glob(pattern: str, yes: list[str], no: list[str]) -> None:
    matches = compile_glob(pattern)
    for s in yes:
        assert matches(s) is True, (pattern, s)
    for s in no:
        assert matches(s) is False, (pattern, s)


def test_glob_never_backtracks_exponentially() -> None:
    matches = compile_glob("*a*a*a*a*a*a*a*a*a*b")
    assert matches("a" * 20_000) is False
    matches = compile_glob("*?a?*?a?*?a?*?b")
    assert matches("a" * 20_000) is False


def test_glob_errors_give_an_offset() -> None:
    with pytest.raises(GlobError) as caught:
        compile_glob("ab[cd")
    assert caught.value.offset == 2
