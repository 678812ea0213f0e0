"""FQL's promises on arbitrary input: a compiled expression never raises on any JSON event
and a condition always answers a bool; any text either compiles or raises FqlError with a
column inside it; a syntax tree survives being written out and parsed again; globs agree
with a brute-force matcher."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.processor.fql import FqlError, compile_condition, compile_value, parse, to_fql
from headwater.processor.fql.functions import FUNCTIONS
from headwater.processor.fql.glob import compile_glob
from headwater.processor.fql.nodes import (
    COMPARISONS,
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

T = TypeVar("T")


def _attempt(compile_text: Callable[[str], T], text: str) -> T | FqlError:
    """The compiled expression, or the FqlError it raised (anything else propagates)."""
    try:
        return compile_text(text)
    except FqlError as exc:
        return exc


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ["type", "event", "userId", "properties", "traits", "price", "email", "tags", "0", "1"]
NAMES += ["x y", "my.key", "true", "all", "ア"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["track", "Debug click", "Order Completed", "", "ア", "*", "[a-"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)
events = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=5), json_values, max_size=8)

segments = st.sampled_from(NAMES) | st.text(min_size=1, max_size=4)
paths = st.lists(segments, min_size=1, max_size=4).map(lambda s: Path(tuple(s)))
literal_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["track", "Debug *", "*a?[b-c]", "\\*", "[", "ア"])
)
literals = literal_values.map(Literal)


def _calls(args: st.SearchStrategy[Node], names: list[str]) -> st.SearchStrategy[Node]:
    def build(name: str) -> st.SearchStrategy[Node]:
        count = len(FUNCTIONS[name].params)
        return st.tuples(*[args] * count).map(lambda a: Call(name, tuple(a)))

    return st.sampled_from(names).flatmap(build)


values: st.SearchStrategy[Node] = st.recursive(
    literals | paths,
    lambda inner: (
        _calls(inner, sorted(FUNCTIONS))
        | st.lists(inner, max_size=3).map(lambda items: ListOf(tuple(items)))
    ),
    max_leaves=6,
)
predicates = ["contains", "match", "bool"]
atoms: st.SearchStrategy[Node] = (
    st.builds(Compare, st.sampled_from(COMPARISONS), values, values)
    | paths
    | st.sampled_from([Literal(True), Literal(False), Literal(None)])
    | _calls(values, predicates)
)
conditions: st.SearchStrategy[Node] = st.recursive(
    atoms,
    lambda inner: inner.map(Not) | st.builds(And, inner, inner) | st.builds(Or, inner, inner),
    max_leaves=8,
)


@SETTINGS
@given(conditions, st.lists(events, min_size=1, max_size=4))
def test_conditions_always_answer_a_bool(tree: Node, samples: list[dict[str, Any]]) -> None:
    text = to_fql(tree)
    assert parse(text) == tree
    condition = _attempt(compile_condition, text)
    if isinstance(condition, FqlError):  # only a literal glob pattern can be refused here
        assert condition.message.startswith("invalid glob pattern"), condition
        return
    for event in samples:
        assert type(condition(event)) is bool


@SETTINGS
@given(values, st.lists(events, min_size=1, max_size=4))
def test_value_expressions_never_raise(tree: Node, samples: list[dict[str, Any]]) -> None:
    text = to_fql(tree)
    assert parse(text) == tree
    expression = _attempt(compile_value, text)
    if isinstance(expression, FqlError):
        assert expression.message.startswith("invalid glob pattern"), expression
        return
    for event in samples:
        result = expression(event)
        json.dumps(result, default=str)  # a JSON value (or a part of the event)


fql_alphabet = st.sampled_from(
    list("abz019 .\\\"'()[],=!<>-_*?&|#\n") + ["and ", "or ", "in ", "true", "null", "ア"]
    + [f"{name}(" for name in FUNCTIONS]
)  # fmt: skip


@SETTINGS
@given(st.text(max_size=40) | st.lists(fql_alphabet, max_size=25).map("".join))
def test_any_text_compiles_or_raises_fql_error(text: str) -> None:
    condition = _attempt(compile_condition, text)
    if isinstance(condition, FqlError):
        assert 1 <= condition.column <= len(text) + 1
        assert condition.expression == text
        assert str(condition).startswith(f"column {condition.column}: ")
        return
    assert type(condition({"type": "track", "a": [1, "b"]})) is bool


@SETTINGS
@given(st.text(max_size=40) | st.lists(fql_alphabet, max_size=25).map("".join))
def test_any_text_compiles_to_a_value_or_raises_fql_error(text: str) -> None:
    expression = _attempt(compile_value, text)
    if isinstance(expression, FqlError):
        assert 1 <= expression.column <= len(text) + 1
    else:
        json.dumps(expression({"a": {"b": 1}}), default=str)


@SETTINGS
@given(events)
def test_typical_expressions_on_arbitrary_events(event: dict[str, Any]) -> None:
    for text in TYPICAL:
        assert type(compile_condition(text)(event)) is bool


TYPICAL = [
    'type = "track" and match(event, "Debug *")',
    "properties.price > 100 and userId != null",
    'event in ["Order Completed", "Cart Viewed"]',
    "'dark-mode' in properties.tags",
    "length(userId) > 0 or typeof(properties) = 'object'",
    "contains(lowercase(traits.email), '@example.com')",
    "number(properties.price) >= 1.5 and string(properties.tags) != 'x'",
    "bool(properties.paid) and snakecase(event) = 'a_b'",
    "properties.tags = properties.tags and properties.tags.0 = 1",
    "match(event, properties.email)",
]


def test_deeply_nested_events_do_not_exhaust_the_stack() -> None:
    deep: Any = "x"
    for _ in range(50_000):
        deep = [deep, {"k": 1}]
    nested_dict: Any = 1
    for _ in range(50_000):
        nested_dict = {"a": nested_dict}
    event = {"properties": {"a": deep, "b": deep, "d": nested_dict}}
    for text in [
        "properties.a = properties.b",
        "properties.a != properties.d",
        "string(properties.a) = 'x'",
        "string(properties.d) = 'x'",
        "length(properties.a) = 2",
        "'x' in properties.a",
        "properties.a in [properties.b]",
        "typeof(properties.d) = 'object'",
        "bool(properties.d)",
    ]:
        assert type(compile_condition(text)(event)) is bool


@cache
def _brute_force(pattern: str, s: str) -> bool:
    """Glob by definition, over the alphabet of the test below (no classes or escapes)."""
    if not pattern:
        return not s
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return _brute_force(rest, s) or (bool(s) and _brute_force(pattern, s[1:]))
    if not s:
        return False
    return (head == "?" or head == s[0]) and _brute_force(rest, s[1:])


@SETTINGS
@given(st.text("ab*?", max_size=8), st.text("ab", max_size=10))
def test_glob_agrees_with_brute_force(pattern: str, s: str) -> None:
    assert compile_glob(pattern)(s) is _brute_force(pattern, s)
