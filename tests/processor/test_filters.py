"""Destination filters: the configuration refuses what cannot work, actions run in Segment's
order, results say which filter did what, sampling is deterministic, and input events are
never changed."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from headwater.processor.filters import (
    KEPT,
    MAX_FILTERS,
    AllowPropertiesAction,
    DestinationFilters,
    DropAction,
    Dropped,
    DropPropertiesAction,
    FilterConfig,
    FilterResult,
    Modified,
    SampleAction,
)
from headwater.processor.fql import compile_condition
from headwater.processor.transforms import Changed, TransformationConfig, Transformer

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "messageId": "m-1",
    "properties": {
        "email": "ada@example.com",
        "total": 30,
        "products": [{"id": "p1", "price": 10, "secret": 1}, {"id": "p2", "price": 20}, "x"],
        "address": {"city": "Paris", "zip": "75001"},
    },
    "context": {"ip": "203.0.113.1", "traits": {"email": "ada@example.com"}},
    "traits": {"email": "ada@example.com", "name": "Ada"},
}


def filters(*configs: dict[str, Any]) -> DestinationFilters:
    return DestinationFilters([FilterConfig.model_validate(c) for c in configs])


def run(destination: DestinationFilters, event: dict[str, Any] = EVENT) -> FilterResult:
    before = copy.deepcopy(event)
    result = destination.apply(event)
    assert event == before, "the input event was changed"
    return result


def modified(result: FilterResult) -> dict[str, Any]:
    assert isinstance(result, Modified), result
    return result.event


def test_no_filters_keep_everything_at_no_cost() -> None:
    destination = DestinationFilters([])
    assert not destination
    assert destination.apply(EVENT) is KEPT


def test_drop_where_condition_names_the_filter() -> None:
    destination = filters(
        {"if": "event = 'x'", "actions": [{"type": "DROP"}]},
        {
            "name": "Debug events",
            "if": 'type = "track" and match(event, "Order *")',
            "actions": [{"type": "DROP"}],
        },
    )
    result = run(destination)
    assert result == Dropped(
        'filter 2 ("Debug events"): DROP where type = "track" and match(event, "Order *")'
    )
    assert run(destination, EVENT | {"event": "Signed Up"}) is KEPT
    assert [s.matched for s in destination.stats] == [0, 1]
    assert [s.dropped for s in destination.stats] == [0, 1]


def test_drop_all() -> None:
    assert run(filters({"if": "all", "actions": [{"type": "DROP"}]})) == Dropped(
        "filter 1: DROP (all events)"
    )


def test_disabled_filters_do_nothing() -> None:
    destination = filters({"if": "all", "actions": [{"type": "DROP"}], "enabled": False})
    assert not destination
    assert run(destination) is KEPT


def test_drop_properties_at_any_depth_and_through_lists() -> None:
    destination = filters(
        {
            "name": "No PII",
            "if": "all",
            "actions": [
                {
                    "type": "DROP_PROPERTIES",
                    "fields": {
                        "properties": ["email", "products.secret", "address.zip", "absent"],
                        "context": ["ip", "traits.email"],
                        "traits": ["email"],
                    },
                }
            ],
        }
    )
    result = run(destination)
    event = modified(result)
    assert event["properties"] == {
        "total": 30,
        "products": [{"id": "p1", "price": 10}, {"id": "p2", "price": 20}, "x"],
        "address": {"city": "Paris"},
    }
    assert event["context"] == {"traits": {}}
    assert event["traits"] == {"name": "Ada"}
    assert event["userId"] == "u1"
    assert isinstance(result, Modified)
    assert result.changes[0].startswith('filter 1 ("No PII"): DROP_PROPERTIES properties.email,')
    assert destination.stats[0].modified == 1


def test_segment_api_shape_of_fields_and_nested_objects() -> None:
    """{properties: {fields: [...]}} as Segment's API writes it; the key may be a path."""
    destination = filters(
        {
            "if": "all",
            "actions": [
                {
                    "type": "DROP_PROPERTIES",
                    "fields": {"properties.address": {"fields": ["zip"]}},
                }
            ],
        }
    )
    assert modified(run(destination))["properties"]["address"] == {"city": "Paris"}


def test_allow_properties_keeps_only_the_listed_fields() -> None:
    destination = filters(
        {
            "if": "all",
            "actions": [
                {
                    "type": "ALLOW_PROPERTIES",
                    "fields": {
                        "properties": ["total", "products.id", "address"],
                        "traits": ["name"],
                    },
                }
            ],
        }
    )
    event = modified(run(destination))
    assert event["properties"] == {
        "total": 30,
        "products": [{"id": "p1"}, {"id": "p2"}],  # "x" is no object: not allowed
        "address": {"city": "Paris", "zip": "75001"},
    }
    assert event["traits"] == {"name": "Ada"}
    assert event["context"] == EVENT["context"]  # not named: untouched


def test_allow_properties_on_an_event_without_the_object() -> None:
    destination = filters(
        {"if": "all", "actions": [{"type": "ALLOW_PROPERTIES", "fields": {"traits": ["x"]}}]}
    )
    assert run(destination, {"type": "track", "properties": {"a": 1}}) is KEPT


def test_unchanged_properties_leave_the_event_kept() -> None:
    destination = filters(
        {"if": "all", "actions": [{"type": "DROP_PROPERTIES", "fields": {"properties": ["no"]}}]}
    )
    assert run(destination) is KEPT
    assert destination.stats[0].matched == 1
    assert destination.stats[0].modified == 0


def test_order_is_sample_drop_drop_properties_allow_properties() -> None:
    """Segment applies all samples, then drops, then property drops, then allows, whatever
    the order of the filters; each condition sees the event as it reached the filters."""
    destination = filters(
        {
            "name": "allow",
            "if": "all",
            "actions": [{"type": "ALLOW_PROPERTIES", "fields": {"properties": ["email", "total"]}}],
        },
        {
            "name": "strip",
            "if": "properties.address.city = 'Paris'",
            "actions": [{"type": "DROP_PROPERTIES", "fields": {"properties": ["email"]}}],
        },
        {"name": "drop", "if": "properties.total > 100", "actions": [{"type": "DROP"}]},
        {
            "name": "sample",
            "if": "all",
            "actions": [{"type": "SAMPLE", "percent": 0.0, "path": "userId"}],
        },
    )
    result = run(destination)
    assert result == Dropped('filter 4 ("sample"): SAMPLE 0% on userId (all events): not sampled')
    assert [s.matched for s in destination.stats] == [0, 0, 0, 1]

    destination = filters(*[dict(c) for c in _configs_without_sample(destination)])
    result = run(destination)
    event = modified(result)
    # the drop ran before the allow, and "strip" matched on the city the allow removes
    assert event["properties"] == {"total": 30}
    assert isinstance(result, Modified)
    assert [c.split(":")[0] for c in result.changes] == ['filter 2 ("strip")', 'filter 1 ("allow")']
    assert run(destination, EVENT | {"properties": {"total": 101}}) == Dropped(
        'filter 3 ("drop"): DROP where properties.total > 100'
    )


def _configs_without_sample(destination: DestinationFilters) -> list[dict[str, Any]]:
    return [
        c.model_dump(by_alias=True)
        for c in destination.configs
        if not any(isinstance(a, SampleAction) for a in c.actions)
    ]


def test_sampling_is_deterministic_per_value() -> None:
    destination = filters(
        {"if": "all", "actions": [{"type": "SAMPLE", "percent": 0.3, "path": "userId"}]}
    )
    kept = {
        user: isinstance(destination.apply(EVENT | {"userId": user}), type(KEPT))
        for user in (f"user-{i}" for i in range(2000))
    }
    share = sum(kept.values()) / len(kept)
    assert 0.26 < share < 0.34
    again = filters(
        {"if": "all", "actions": [{"type": "SAMPLE", "percent": 0.3, "path": "userId"}]}
    )
    for user, was_kept in kept.items():
        assert (again.apply(EVENT | {"userId": user}) is KEPT) is was_kept
    assert destination.stats[0].sampled_out == 2000 - sum(kept.values())


def test_sampling_is_nested_across_percentages() -> None:
    """A user in the 10% sample is in the 50% sample too (same hash, larger threshold)."""
    small = filters(
        {"if": "all", "actions": [{"type": "SAMPLE", "percent": 0.1, "path": "userId"}]}
    )
    large = filters(
        {"if": "all", "actions": [{"type": "SAMPLE", "percent": 0.5, "path": "userId"}]}
    )
    for i in range(500):
        event = EVENT | {"userId": f"u{i}"}
        if small.apply(event) is KEPT:
            assert large.apply(event) is KEPT


def test_sampling_falls_back_to_message_id() -> None:
    destination = filters(
        {"if": "all", "actions": [{"type": "SAMPLE", "percent": 0.5, "path": "userId"}]}
    )
    by_id = filters({"if": "all", "actions": [{"type": "SAMPLE", "percent": 0.5}]})
    reasons = []
    for i in range(200):
        event = {"type": "track", "messageId": f"m{i}"}
        result = destination.apply(event)
        assert (result is KEPT) is (by_id.apply(event) is KEPT)
        if isinstance(result, Dropped):
            reasons.append(result.reason)
    assert reasons
    assert reasons[0] == (
        "filter 1: SAMPLE 50% on userId (all events): not sampled"
        " (userId is null or absent: sampled by messageId)"
    )


def test_sampling_edges() -> None:
    keep_all = filters({"if": "all", "actions": [{"type": "SAMPLE", "percent": 1}]})
    keep_none = filters({"if": "all", "actions": [{"type": "SAMPLE", "percent": 0}]})
    odd_events: list[dict[str, Any]] = [
        {},
        {"messageId": None, "x": 10**40},
        {"messageId": ["a", {"b": None}]},
        {"x": "\ud800"},
    ]
    for event in odd_events:
        assert keep_all.apply(event) is KEPT
        assert isinstance(keep_none.apply(event), Dropped)


def test_condition_not_met_touches_nothing() -> None:
    destination = filters(
        {"if": "type = 'identify'", "actions": [{"type": "DROP"}]},
        {
            "if": "type = 'identify'",
            "actions": [{"type": "DROP_PROPERTIES", "fields": {"properties": ["email"]}}],
        },
    )
    assert run(destination) is KEPT
    assert all(s.matched == 0 for s in destination.stats)


def test_snapshot() -> None:
    destination = filters({"name": "d", "if": "all", "actions": [{"type": "DROP"}]})
    destination.apply(EVENT)
    assert destination.snapshot() == [
        {
            "filter": 1,
            "name": "d",
            "enabled": True,
            "matched": 1,
            "dropped": 1,
            "sampled_out": 0,
            "modified": 0,
        }
    ]


def test_actions_parse_to_their_models() -> None:
    config = FilterConfig.model_validate(
        {
            "if": "all",
            "actions": [
                {"type": "DROP"},
                {"type": "SAMPLE", "percent": 0.5},
                {"type": "DROP_PROPERTIES", "fields": {"properties": ["a"]}},
                {"type": "ALLOW_PROPERTIES", "fields": {"traits": ["b"]}},
            ],
        }
    )
    kinds = [type(a) for a in config.actions]
    assert kinds == [DropAction, SampleAction, DropPropertiesAction, AllowPropertiesAction]
    assert config.if_ == "all"
    assert FilterConfig(if_="all", actions=[DropAction(type="DROP")]).condition({}) is True


@pytest.mark.parametrize(
    ("config", "location", "message"),
    [
        ({"if": "type = ", "actions": [{"type": "DROP"}]}, ("if",),
         "column 8: expected a value after '=' (in: type = )"),
        ({"actions": [{"type": "DROP"}]}, ("if",), "Field required"),
        ({"if": "all", "actions": []}, ("actions",), "at least 1 item"),
        ({"if": "all", "actions": [{"type": "drop"}]}, ("actions", 0),
         "does not match any of the expected tags: 'DROP', 'SAMPLE'"),
        ({"if": "all", "actions": [{"type": "SAMPLE", "percent": 10}]},
         ("actions", 0, "SAMPLE", "percent"), "less than or equal to 1"),
        ({"if": "all", "actions": [{"type": "SAMPLE", "percent": 0.1, "path": "user id"}]},
         ("actions", 0, "SAMPLE", "path"), "expected one field path"),
        ({"if": "all", "actions": [{"type": "DROP_PROPERTIES", "fields": {"userId": ["x"]}}]},
         ("actions", 0, "DROP_PROPERTIES", "fields"),
         "'userId' cannot be filtered: name properties, traits or context"),
        ({"if": "all", "actions": [{"type": "DROP_PROPERTIES", "fields": {"properties": []}}]},
         ("actions", 0, "DROP_PROPERTIES", "fields"), "properties: list at least one field"),
        ({"if": "all", "actions": [{"type": "ALLOW_PROPERTIES", "fields": {}}]},
         ("actions", 0, "ALLOW_PROPERTIES", "fields"), "name at least one object"),
        ({"if": "all", "actions": [{"type": "DROP"}], "iff": "x"}, ("iff",), "Extra inputs"),
    ],
)  # fmt: skip
def test_invalid_configurations_name_the_field(
    config: dict[str, Any], location: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        FilterConfig.model_validate(config)
    [error] = caught.value.errors()
    assert error["loc"] == location
    assert message in error["msg"]


def test_at_most_ten_filters() -> None:
    config = FilterConfig.model_validate({"if": "all", "actions": [{"type": "DROP"}]})
    DestinationFilters([config] * MAX_FILTERS)
    with pytest.raises(ValueError, match="at most 10 filters, not 11"):
        DestinationFilters([config] * (MAX_FILTERS + 1))


# --- docs/fql.md: its examples run as written ----------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "fql.md"


def _docs_yaml() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S):
        merged |= yaml.safe_load(block)
    return merged


def test_docs_fql_examples_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- fql-examples")[1].split("\n\n")[0]
    rows = re.findall(r"^\| `(.+)` \| (true|false) \|$", table, flags=re.M)
    assert len(rows) == 11
    event = {
        "event": "Button Clicked",
        "type": "track",
        "context": {"library": {"name": "analytics.js", "version": "1.0"}},
        "properties": {"features": ["discounts", "dark-mode"]},
    }
    for expression, expected in rows:
        assert compile_condition(expression)(event) is (expected == "true"), expression


def test_docs_filters_example() -> None:
    [destination] = _docs_yaml()["destinations"]
    configs = [FilterConfig.model_validate(f) for f in destination["filters"]]
    text = DOCS.read_text(encoding="utf-8")
    assert [c.enabled for c in configs] == [True, True, True, True, False]
    sampled = DestinationFilters(configs[2:3])
    user = next(f"u{i}" for i in range(100) if sampled.apply({"userId": f"u{i}"}) is KEPT)
    debug = run(
        DestinationFilters(configs), {"type": "track", "event": "Debug tap", "userId": user}
    )
    assert isinstance(debug, Dropped)
    assert f"\n{debug.reason}\n" in text
    reasons = {
        r.reason.replace("filter 1", "filter 3")
        for i in range(50)
        if isinstance(r := sampled.apply({"userId": f"u{i}"}), Dropped)
    }
    [reason] = reasons
    assert f"\n{reason}\n" in text
    order = {
        "type": "track",
        "event": "Order Completed",
        "properties": {"email": "a@b.c", "total": 3, "products": [{"customer_email": "x"}]},
        "context": {"ip": "1.2.3.4", "traits": {"email": "a@b.c"}},
    }
    kept = DestinationFilters([configs[0], configs[1], configs[3]])
    assert modified(run(kept, order))["properties"] == {"total": 3, "products": [{}]}
    assert isinstance(run(kept, order | {"event": "Page Viewed"}), Dropped)


def test_docs_transformations_example() -> None:
    configs = [TransformationConfig.model_validate(t) for t in _docs_yaml()["transformations"]]
    source = Transformer.for_source(configs, "website")
    event = {"type": "track", "event": "order_completed", "properties": {"revenue": 3}}
    result = source.apply(event)
    assert isinstance(result, Changed)
    assert result.event["properties"] == {"total": 3}
    assert f"`{result.changes[0]}`" in DOCS.read_text(encoding="utf-8")
    ads = Transformer.for_destination(configs, "amplitude")
    result = ads.apply(
        {"type": "identify", "traits": {"email": "Ada@X.io"}, "context": {"ip": "1"}}
    )
    assert isinstance(result, Changed)
    assert result.event["traits"]["email"] == hashlib.sha256(b"ada@x.io").hexdigest()
    assert result.event["properties"] == {"source": "web"}
    assert result.event["context"] == {}
