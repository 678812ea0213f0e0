"""The mapping kit: every directive, the places errors name, and resolve never raising."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.errors import ConfigError, MappingError
from headwater.mapping import MISSING, compile_mapping

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "anonymousId": "a1",
    "name": "Home",
    "properties": {
        "revenue": 9.99,
        "count": 3,
        "plan": None,
        "first name": "Ada",
        "products": [{"product_id": "p1", "price": 5}, {"product_id": "p2"}],
        "nested": {"a": {"b": 1}, "c": [5, 6]},
        "blank": "",
        "json": '{"x":[1,2]}',
    },
    "traits": {"email": "Ada@Example.COM", "plan": "pro"},
    "context": {"device": {"id": "d1"}},
}


def resolve(spec: Any, event: Any = EVENT) -> Any:
    return compile_mapping(spec).resolve(event)


def field(spec: Any, event: Any = EVENT) -> Any:
    """The value of one mapped field, MISSING when the key is dropped."""
    return resolve({"f": spec}, event).get("f", MISSING)


# -- raw values, objects, lists


def test_raw_values_are_copied_and_missing_keys_dropped_but_null_kept() -> None:
    spec = {"a": 1, "b": "x", "c": None, "d": [1, {"e": True}], "gone": {"@path": "$.nope"},
            "null": {"@path": "$.properties.plan"}}  # fmt: skip
    assert resolve(spec) == {"a": 1, "b": "x", "c": None, "d": [1, {"e": True}], "null": None}


def test_a_missing_value_in_a_list_becomes_null_as_json_encodes_it() -> None:
    assert field([{"@path": "$.userId"}, {"@path": "$.nope"}]) == ["u1", None]


def test_each_event_gets_new_containers() -> None:
    mapping = compile_mapping({"a": {"b": [1]}})
    first = mapping.resolve(EVENT)
    first["a"]["b"].append(2)
    assert mapping.resolve(EVENT) == {"a": {"b": [1]}}


# -- @path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.userId", "u1"),
        ("userId", "u1"),  # the $. is optional
        ("$.properties.revenue", 9.99),
        ("$.properties.products[1].product_id", "p2"),
        ("properties.products.0.price", 5),  # digits read list elements, as in JavaScript
        ('$.properties["first name"]', "Ada"),
        ("$.properties['first name']", "Ada"),
        ("$.properties.nested.c[1]", 6),
        ("$.properties.plan", None),
        ("$.properties.nope", MISSING),
        ("$.properties.products[5]", MISSING),
        ("$.userId.length", MISSING),  # nothing inside a string
        ("$.properties.products.product_id", MISSING),  # a key of a list
    ],
)
def test_path(path: str, expected: Any) -> None:
    assert field({"@path": path}) == expected


@pytest.mark.parametrize("whole", ["$.", "$"])
def test_path_to_the_whole_event(whole: str) -> None:
    assert resolve({"@path": whole}) == EVENT


# -- @template


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Viewed {{name}}", "Viewed Home"),
        ("{{ properties.revenue }} / {{properties.count}}", "9.99 / 3"),
        ("[{{properties.nope}}][{{properties.plan}}]", "[][]"),  # missing and null: empty
        ("{{properties.nested.a}}", '{"b":1}'),  # objects as JSON
        ("no placeholders", "no placeholders"),
        ("{{$.traits.plan}}", "pro"),
        ("{{properties['first name']}}", "Ada"),
    ],
)
def test_template(template: str, expected: str) -> None:
    assert field({"@template": template}) == expected


def test_template_writes_booleans_and_whole_floats_as_javascript_does() -> None:
    event = {"t": True, "f": 2.0}
    assert field({"@template": "{{t}} {{f}}"}, event) == "true 2"


# -- @literal


def test_literal_returns_its_value() -> None:
    assert field({"@literal": True}) is True
    assert field({"@literal": ""}) == ""
    assert field({"@literal": {"a": {"@path": "$.userId"}}}) == {"a": "u1"}


# -- @if


def test_if_exists_then_else() -> None:
    spec = {"@if": {"exists": {"@path": "$.context.device.id"},
                    "then": {"@path": "$.context.device.id"}, "else": {"@path": "$.anonymousId"}}}  # fmt: skip
    assert field(spec) == "d1"
    assert field(spec, {**EVENT, "context": {}}) == "a1"
    assert field(spec, {**EVENT, "context": {"device": {"id": None}}}) == "a1"  # null: not there


def test_if_blank_is_true_for_a_non_empty_value() -> None:
    spec = {"@if": {"blank": {"@path": "$.properties.blank"}, "then": "filled", "else": "empty"}}
    assert field(spec) == "empty"
    spec["@if"]["blank"] = {"@path": "$.userId"}
    assert field(spec) == "filled"


def test_if_without_the_branch_taken_drops_the_field() -> None:
    assert field({"@if": {"exists": {"@path": "$.nope"}, "then": 1}}) is MISSING


# -- @case


def test_case() -> None:
    assert field({"@case": {"operator": "lower", "value": {"@path": "$.traits.email"}}}) == (
        "ada@example.com"
    )
    assert field({"@case": {"operator": "upper", "value": "abc"}}) == "ABC"
    assert field({"@case": {"operator": "upper", "value": 3}}) == 3  # non-strings pass
    assert field({"@case": {"operator": "upper", "value": {"@path": "$.nope"}}}) is MISSING


# -- @replace


def test_replace_is_literal_global_and_chained() -> None:
    spec = {"@replace": {"pattern": " ", "replacement": "_", "value": {"@path": "$.event"}}}
    assert field(spec) == "Order_Completed"
    assert field({"@replace": {"pattern": ".", "replacement": "!", "value": "a.b.c"}}) == "a!b!c"
    assert field({"@replace": {"pattern": "a", "global": False, "value": "aaa"}}) == "aa"
    chained = {"pattern": "a", "replacement": "b", "pattern2": "b", "replacement2": "c",
               "value": "ab"}  # fmt: skip
    assert field({"@replace": chained}) == "cc"


def test_replace_ignorecase_and_stringified_numbers() -> None:
    spec = {"@replace": {"pattern": "ORDER", "replacement": "x", "ignorecase": True,
                         "value": {"@path": "$.event"}}}  # fmt: skip
    assert field(spec) == "x Completed"
    assert field({"@replace": {"pattern": ".", "replacement": ",", "value": 9.5}}) == "9,5"
    assert field({"@replace": {"pattern": "u", "replacement": "U", "value": True}}) == "trUe"
    assert field({"@replace": {"pattern": "x", "value": {"a": 1}}}) == {"a": 1}  # unchanged
    assert field({"@replace": {"pattern": "$1", "replacement": "\\1", "value": "a$1"}}) == "a\\1"


# -- @arrayPath


def test_array_path_maps_each_element() -> None:
    spec = {"@arrayPath": ["$.properties.products",
                           {"id": {"@path": "$.product_id"}, "price": {"@path": "price"}}]}  # fmt: skip
    assert field(spec) == [{"id": "p1", "price": 5}, {"id": "p2"}]


def test_array_path_wraps_an_object_and_passes_other_values() -> None:
    shape = {"x": {"@path": "a"}}
    assert field({"@arrayPath": ["$.properties.nested", shape]}) == [{"x": {"b": 1}}]
    assert field({"@arrayPath": ["$.userId", shape]}) == "u1"
    assert field({"@arrayPath": ["$.properties.products"]}) == EVENT["properties"]["products"]
    assert field({"@arrayPath": ["$.nope", shape]}) is MISSING
    assert field({"@arrayPath": [{"@path": "$.properties.nested.c"}, {"v": {"@path": "$."}}]}) == [
        {"v": 5}, {"v": 6}
    ]  # fmt: skip


# -- @json


def test_json_encode_and_decode() -> None:
    assert field({"@json": {"mode": "encode", "value": {"@path": "$.properties.nested.a"}}}) == (
        '{"b":1}'
    )
    assert field({"@json": {"mode": "decode", "value": {"@path": "$.properties.json"}}}) == {
        "x": [1, 2]
    }
    assert field({"@json": {"mode": "decode", "value": "not json"}}) == "not json"
    assert field({"@json": {"mode": "decode", "value": 5}}) == 5
    assert field({"@json": {"mode": "encode", "value": {"@path": "$.nope"}}}) is MISSING
    assert field({"@json": {"mode": "encode", "value": 2**70}}) == str(2**70)


# -- @flatten


def test_flatten() -> None:
    value = {"@path": "$.properties.nested"}
    assert field({"@flatten": {"value": value, "separator": "."}}) == {"a.b": 1, "c.0": 5, "c.1": 6}
    assert field({"@flatten": {"value": value, "separator": "_", "omitArrays": True}}) == {
        "a_b": 1, "c": [5, 6]
    }  # fmt: skip
    assert field({"@flatten": {"value": "text", "separator": "."}}) == "text"


# -- @merge


def test_merge_directions() -> None:
    objects = [{"@path": "$.traits"}, {"plan": "free", "x": 1}, {"@path": "$.nope"}]
    assert field({"@merge": {"objects": objects, "direction": "right"}}) == {
        "email": "Ada@Example.COM", "plan": "free", "x": 1
    }  # fmt: skip
    assert field({"@merge": {"objects": objects, "direction": "left"}})["plan"] == "pro"


# -- @excludeWhenNull


def test_exclude_when_null() -> None:
    assert field({"@excludeWhenNull": {"@path": "$.properties.plan"}}) is MISSING
    assert field({"@excludeWhenNull": {"a": None, "b": {"c": None, "d": 1}, "e": [{"f": None}]}}) == {
        "b": {"d": 1}, "e": [{}]
    }  # fmt: skip


# -- errors name the place


WHERE = "destinations[2].actions[0].mapping"


@pytest.mark.parametrize(
    ("spec", "place", "words"),
    [
        ({"user_id": {"@pathh": "$.userId"}}, "user_id.@pathh", "unknown directive @pathh"),
        ({"a": {"@Path": "x"}}, "a.@Path", "not a directive name"),
        ({"a": {"@path": "x", "@template": "y"}}, "a", "one directive, not 2"),
        ({"a": {"@path": "x", "b": 1}}, "a", "cannot be mixed with plain keys (b)"),
        ({"user_id": {"@path": "$.a..b"}}, "user_id.@path", "empty key at position 5"),
        ({"a": {"@path": "$.a["}}, "a.@path", "must hold an index"),
        ({"a": {"@path": "a."}}, "a.@path", "ends with '.'"),
        ({"a": {"@path": 5}}, "a.@path", "takes a path string"),
        ({"a": [{"@path": "$.x]"}]}, "a[0].@path", "closes no '['"),
        ({"first name": {"@path": ""}}, '["first name"].@path', "the path is empty"),
        ({"a": {"@case": {"operator": "title", "value": 1}}}, "a.@case.operator", "lower or upper"),
        ({"a": {"@case": {"operator": "lower"}}}, "a.@case", "needs a value"),
        (
            {"a": {"@replace": {"pattern": "x" * 11, "value": 1}}},
            "a.@replace.pattern",
            "at most 10",
        ),
        (
            {"a": {"@replace": {"pattern": "x", "replacement": "y" * 11, "value": 1}}},
            "a.@replace.replacement",
            "at most 10",
        ),
        ({"a": {"@replace": {"pattern": "", "value": 1}}}, "a.@replace.pattern", "non-empty"),
        (
            {"a": {"@replace": {"pattern": "x", "global": "yes", "value": 1}}},
            "a.@replace.global",
            "must be a bool",
        ),
        ({"a": {"@if": {"then": 1}}}, "a.@if", "exactly one of exists or blank"),
        ({"a": {"@if": {"exists": 1, "than": 2}}}, "a.@if.than", "unknown option of @if"),
        ({"a": {"@template": "{{}}"}}, "a.@template", "empty placeholder"),
        ({"a": {"@template": "{{name"}}, "a.@template", "not closed"),
        ({"a": {"@template": "{{a..b}}"}}, "a.@template", "placeholder {{a..b}}"),
        ({"a": {"@json": {"mode": "zip", "value": 1}}}, "a.@json.mode", "encode or decode"),
        ({"a": {"@flatten": {"value": 1}}}, "a.@flatten", "needs a separator"),
        ({"a": {"@merge": {"objects": [], "direction": "right"}}}, "a.@merge.objects", "list"),
        ({"a": {"@merge": {"objects": [{}]}}}, "a.@merge.direction", "right (later objects win)"),
        ({"a": {"@arrayPath": "x"}}, "a.@arrayPath", "takes [path]"),
        ({"a": {"@arrayPath": ["$.x", "shape"]}}, "a.@arrayPath[1]", "must be an object"),
        ({"a": {"@arrayPath": ["$..x"]}}, "a.@arrayPath[0]", "empty key"),
        ({"a": {"@transform": {}}}, "a.@transform", "not supported by Headwater"),
        ({"a": {"@liquid": "{{x}}"}}, "a.@liquid", "not supported by Headwater"),
        ({1: "x"}, '["1"]', "keys must be strings"),
        ({"when": __import__("datetime").date(2024, 1, 1)}, "when", "quote it in YAML"),
    ],
)
def test_errors_name_the_place(spec: Any, place: str, words: str) -> None:
    with pytest.raises(MappingError) as caught:
        compile_mapping(spec, WHERE)
    error = caught.value
    assert isinstance(error, ConfigError)  # stops start-up as other settings errors do
    expected = f"{WHERE}{place}" if place.startswith("[") else f"{WHERE}.{place}"
    assert error.where == expected
    assert str(error).startswith(f"{error.where}: ")
    assert words in error.message


# -- resolve never raises


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=20,
)  # fmt: skip
KEYS = st.sampled_from(["type", "event", "userId", "properties", "traits", "context", "a", "0"])
EVENTS = st.dictionaries(KEYS, JSON, max_size=6) | JSON


def _anywhere(path: str) -> dict[str, Any]:
    return {"@path": path}


EVERY_DIRECTIVE: dict[str, Any] = {
    "path": _anywhere("$.properties.a[0].b"),
    "digits": _anywhere("$.a.0.0"),
    "whole": _anywhere("$."),
    "template": {"@template": "{{event}} {{properties.a}} {{a.0}}"},
    "literal": {"@literal": {"x": _anywhere("$.a")}},
    "if_exists": {"@if": {"exists": _anywhere("$.a"), "then": _anywhere("$.a"), "else": 1}},
    "if_blank": {"@if": {"blank": _anywhere("$.event"), "then": _anywhere("$.event")}},
    "case": {"@case": {"operator": "lower", "value": _anywhere("$.event")}},
    "replace": {"@replace": {"pattern": "a", "replacement": "b", "pattern2": "B",
                             "ignorecase": True, "value": _anywhere("$.a")}},
    "replace_first": {"@replace": {"pattern": "0", "global": False, "value": _anywhere("$.a")}},
    "array": {"@arrayPath": ["$.properties", {"x": _anywhere("a"), "y": _anywhere("$.")}]},
    "array_of": {"@arrayPath": [_anywhere("$.a")]},
    "encode": {"@json": {"mode": "encode", "value": _anywhere("$.")}},
    "decode": {"@json": {"mode": "decode", "value": _anywhere("$.a")}},
    "flatten": {"@flatten": {"value": _anywhere("$."), "separator": "."}},
    "flatten_omit": {"@flatten": {"value": _anywhere("$.a"), "separator": "/",
                                  "omitArrays": True}},
    "merge": {"@merge": {"objects": [_anywhere("$.traits"), _anywhere("$.a")],
                         "direction": "left"}},
    "exclude": {"@excludeWhenNull": _anywhere("$.")},
}  # fmt: skip
EVERYTHING = compile_mapping(EVERY_DIRECTIVE)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_resolve_never_raises_on_any_json_event(event: Any) -> None:
    payload = EVERYTHING.resolve(event)
    assert isinstance(payload, dict)
    assert set(payload) <= set(EVERY_DIRECTIVE)
    assert MISSING not in payload.values()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(KEYS, JSON, max_size=6), st.sampled_from(sorted(EVERY_DIRECTIVE)))
def test_each_directive_alone_never_raises(event: dict[str, Any], name: str) -> None:
    compile_mapping(EVERY_DIRECTIVE[name]).resolve(event)


def test_a_generated_object_builder_keeps_order_nulls_and_odd_keys() -> None:
    """Objects are built by generated code: keys in the spec's order, a present null kept,
    an absent one dropped, constants and nested objects new per event, and keys that look
    like code are only keys."""
    odd = "x'] = 1; import os  # "
    spec = {"b": {"@path": "$.userId"}, "a": 5, odd: {"@path": "$.gone"},
            "nested": {"k": {"@path": "$.context.ip"}}, "n": {"@path": "$.nothing"},
            "list": [1, {"@path": "$.userId"}], '"q"': "const"}  # fmt: skip
    mapping = compile_mapping(spec)
    event = {"userId": "u1", "nothing": None, "context": {"ip": "1.2.3.4"}}
    first, second = mapping.resolve(event), mapping.resolve(event)
    assert list(first) == ["b", "a", "nested", "n", "list", '"q"']
    assert first == {"b": "u1", "a": 5, "nested": {"k": "1.2.3.4"}, "n": None,
                     "list": [1, "u1"], '"q"': "const"}  # fmt: skip
    assert first["nested"] is not second["nested"] and first["list"] is not second["list"]


@pytest.mark.parametrize("root", [None, "text", 3, [1, 2], True])
def test_one_key_paths_of_something_not_an_object_give_nothing(root: Any) -> None:
    mapping = compile_mapping({"id": {"@path": "$.userId"}, "c": "k"})
    assert mapping.resolve(root) == {"c": "k"}


@pytest.mark.parametrize(
    ("event", "expected"),
    [({"a": {"b": {"c": 1}}}, {"v": 1}), ({"a": {"b": None}}, {}), ({"a": "text"}, {}),
     ({"a": [{"b": 1}]}, {}), ({"a": {"b": {"c": None}}}, {"v": None}), ({}, {})],
)  # fmt: skip
def test_paths_of_several_keys_in_a_generated_builder(event: Any, expected: Any) -> None:
    assert compile_mapping({"v": {"@path": "$.a.b.c"}}).resolve(event) == expected


def test_a_template_keeps_literal_braces() -> None:
    mapping = compile_mapping({"@template": "{x} {{userId}} }{ {{n}}"})
    assert mapping.resolve({"userId": "u1", "n": 2.0}) == "{x} u1 }{ 2"
