"""Transformations: each operation, their order, conditions and scopes, the trace they
leave, validation at load, and input events that are never changed."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from headwater.processor.transforms import (
    UNCHANGED,
    Changed,
    TransformationConfig,
    Transformer,
    TransformResult,
)

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Done",
    "userId": "u1",
    "messageId": "m-1",
    "properties": {
        "revenue": 30,
        "currency": "usd",
        "email": "Ada@Example.com",
        "order": {"id": "o1"},
        "products": [{"id": "p1", "email": "a@x.io"}, {"id": "p2"}],
        "note": None,
    },
    "traits": {"phone": "+33 1 23"},
    "context": {"ip": "203.0.113.1"},
}


def transformer(*configs: dict[str, Any]) -> Transformer:
    return Transformer(
        [TransformationConfig.model_validate({"source": "web"} | c) for c in configs]
    )


def run(t: Transformer, event: dict[str, Any] = EVENT) -> TransformResult:
    before = copy.deepcopy(event)
    result = t.apply(event)
    assert event == before, "the input event was changed"
    return result


def changed(result: TransformResult) -> tuple[dict[str, Any], tuple[str, ...]]:
    assert isinstance(result, Changed), result
    return result.event, result.changes


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_rename_event_only_when_the_condition_holds() -> None:
    t = transformer(
        {"name": "fix-order", "if": "event = 'Order Done'", "rename_event": "Order Completed"}
    )
    event, changes = changed(run(t))
    assert event["event"] == "Order Completed"
    assert changes == (
        'renamed event "Order Done" → "Order Completed" (transformation "fix-order")',
    )
    assert run(t, EVENT | {"event": "Signed Up"}) is UNCHANGED
    assert run(t, {"type": "identify", "traits": {}}) is UNCHANGED


def test_rename_properties_in_place_and_to_a_full_path() -> None:
    t = transformer(
        {
            "name": "r",
            "rename_properties": {
                "properties.revenue": "total",
                "properties.order.id": "properties.order_id",
                "traits.phone": "traits.contact.phone",
                "properties.absent": "x",
            },
        }
    )
    event, changes = changed(run(t))
    props = event["properties"]
    assert props["total"] == 30 and "revenue" not in props
    assert props["order_id"] == "o1" and props["order"] == {}
    assert event["traits"] == {"contact": {"phone": "+33 1 23"}}
    assert changes == (
        'renamed properties.revenue → properties.total (transformation "r")',
        'renamed properties.order.id → properties.order_id (transformation "r")',
        'renamed traits.phone → traits.contact.phone (transformation "r")',
    )


def test_rename_that_cannot_be_placed_keeps_the_field() -> None:
    t = transformer({"name": "r", "rename_properties": {"properties.revenue": "currency.x"}})
    assert run(t) is UNCHANGED  # properties.currency is a string: no object to put x in


def test_set_properties_from_value_expressions() -> None:
    t = transformer(
        {
            "name": "s",
            "set_properties": {
                "properties.currency": "uppercase(properties.currency)",
                "properties.email_lower": "lowercase(properties.email)",
                "properties.source": "'web'",
                "context.campaign.name": "'spring'",
                "properties.missing": "properties.nothing",
                "properties.revenue": "30",
                "properties.order_copy": "properties.order",
            },
        }
    )
    event, changes = changed(run(t))
    props = event["properties"]
    assert props["currency"] == "USD"
    assert props["email_lower"] == "ada@example.com"
    assert props["source"] == "web"
    assert event["context"] == {"ip": "203.0.113.1", "campaign": {"name": "spring"}}
    assert "missing" not in props  # null sets nothing
    assert props["order_copy"] == {"id": "o1"} and props["order_copy"] is not props["order"]
    assert "set properties.currency = uppercase(properties.currency)" in changes[0]
    assert not any("revenue" in c for c in changes)  # already 30: nothing done


def test_set_reads_the_event_as_it_entered_the_transformation() -> None:
    t = transformer(
        {
            "name": "s",
            "rename_properties": {"properties.revenue": "total"},
            "set_properties": {"properties.doubled": "properties.revenue"},
        }
    )
    event, _ = changed(run(t))
    assert event["properties"]["doubled"] == 30
    assert event["properties"]["total"] == 30


def test_hash_properties() -> None:
    t = transformer(
        {
            "name": "h",
            "hash_properties": [
                "properties.email",
                "properties.revenue",
                "properties.products.email",
                "properties.note",
                "properties.order",
                "traits.absent",
            ],
        }
    )
    event, changes = changed(run(t))
    props = event["properties"]
    assert props["email"] == sha256("Ada@Example.com")
    assert props["revenue"] == sha256("30")
    assert props["products"] == [{"id": "p1", "email": sha256("a@x.io")}, {"id": "p2"}]
    assert props["note"] is None
    assert props["order"] == sha256('{"id":"o1"}')
    assert len(changes) == 4


def test_lowercase_then_hash() -> None:
    t = transformer(
        {
            "name": "h",
            "set_properties": {"properties.email": "lowercase(properties.email)"},
            "hash_properties": ["properties.email"],
        }
    )
    event, _ = changed(run(t))
    assert event["properties"]["email"] == sha256("ada@example.com")


def test_drop_properties() -> None:
    t = transformer(
        {"name": "d", "drop_properties": ["properties.email", "context.ip", "properties.x"]}
    )
    event, changes = changed(run(t))
    assert "email" not in event["properties"]
    assert event["context"] == {}
    assert changes == (
        'dropped properties.email (transformation "d")',
        'dropped context.ip (transformation "d")',
    )


def test_transformations_chain_in_order() -> None:
    t = transformer(
        {"name": "one", "rename_event": "Order Completed"},
        {"name": "two", "if": "event = 'Order Completed'", "drop_properties": ["context.ip"]},
        {"name": "off", "rename_event": "Nope", "enabled": False},
    )
    event, changes = changed(run(t))
    assert event["event"] == "Order Completed"
    assert "ip" not in event["context"]
    assert [c.rsplit("(", 1)[1] for c in changes] == [
        'transformation "one")',
        'transformation "two")',
    ]


def test_nothing_to_do() -> None:
    assert not Transformer([])
    assert Transformer([]).apply(EVENT) is UNCHANGED
    t = transformer({"name": "n", "drop_properties": ["properties.none"]})
    assert t
    assert run(t) is UNCHANGED


def test_scopes() -> None:
    configs = [
        TransformationConfig.model_validate({"name": "a", "source": "web", "rename_event": "A"}),
        TransformationConfig.model_validate(
            {"name": "b", "destination": "hook", "rename_event": "B"}
        ),
    ]
    assert [t.name for t in Transformer.for_source(configs, "web").transformations] == ["a"]
    assert [t.name for t in Transformer.for_destination(configs, "hook").transformations] == ["b"]
    assert not Transformer.for_source(configs, "app")


def test_unusual_events_never_raise() -> None:
    t = transformer(
        {
            "name": "all",
            "rename_event": "X",
            "rename_properties": {"properties.a": "b"},
            "set_properties": {"properties.c.d": "string(properties.a)"},
            "hash_properties": ["properties.a", "traits.t"],
            "drop_properties": ["properties.e"],
        }
    )
    for event in [
        {},
        {"properties": None},
        {"properties": [1, 2]},
        {"properties": {"a": {"\ud800": 10**40}}, "event": 3},
        {"properties": {"c": "not an object", "a": 1}},
        {"traits": {"t": [[[]]]}},
    ]:
        run(t, event)


@pytest.mark.parametrize(
    ("config", "location", "message"),
    [
        ({"source": "w", "rename_event": "x"}, ("name",), "Field required"),
        ({"name": "n", "source": "w", "rename_event": "x", "if": "a ="}, ("if",),
         "column 4: expected a value after '='"),
        ({"name": "n", "rename_event": "x"}, (), "give exactly one of source"),
        ({"name": "n", "source": "w", "destination": "d", "rename_event": "x"}, (),
         "give exactly one of source"),
        ({"name": "n", "source": "w"}, (), "the transformation does nothing"),
        ({"name": "n", "source": "w", "drop_properties": ["userId"]}, ("drop_properties",),
         "'userId' is not a field a transformation can change"),
        ({"name": "n", "source": "w", "hash_properties": ["properties"]}, ("hash_properties",),
         "'properties' is not a field a transformation can change"),
        ({"name": "n", "source": "w", "drop_properties": ["properties.a b"]},
         ("drop_properties",), "expected one field path"),
        ({"name": "n", "source": "w", "set_properties": {"properties.a": "lowercase("}},
         ("set_properties",), "column 11: expected a value at the end of the expression"),
        ({"name": "n", "source": "w", "set_properties": {"messageId": "'x'"}},
         ("set_properties",), "'messageId' is not a field"),
        ({"name": "n", "source": "w",
          "rename_properties": {"properties.a": "b", "properties.b": "a"}},
         ("rename_properties",), "is renamed by this transformation as well"),
        ({"name": "n", "source": "w",
          "rename_properties": {"properties.a": "c", "properties.b": "c"}},
         ("rename_properties",), "two renames write properties.c"),
        ({"name": "n", "source": "w", "rename_properties": {"properties.a": "b"},
          "set_properties": {"properties.a": "1"}}, (), "properties.a is also renamed"),
        ({"name": "n", "source": "w", "rename_event": ""}, ("rename_event",), "at least 1"),
        ({"name": "n", "source": "w", "rename_event": "x", "drop": ["a"]}, ("drop",),
         "Extra inputs"),
    ],
)  # fmt: skip
def test_invalid_transformations_name_the_field(
    config: dict[str, Any], location: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        TransformationConfig.model_validate(config)
    [error] = caught.value.errors()
    assert error["loc"] == location
    assert message in error["msg"]
