"""Computed traits: incremental, windowed, merged with profiles, announced on change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headwater.config.workspace import parse_workspace
from headwater.errors import ConfigError
from tests.unify.helpers import T0, Feeder, space

pytestmark = pytest.mark.usefixtures("profile_backend")  # SQLite and PostgreSQL

DAY = 86_400_000
HOUR = 3_600_000


def traits(*configs: dict[str, Any]) -> dict[str, Any]:
    return space(computed_traits=list(configs))


def test_every_kind_of_trait(tmp_path: Path) -> None:
    feed = Feeder(tmp_path, traits(
        {"name": "Orders", "type": "event_counter", "event": "Order Completed"},
        {"name": "Cosmetics revenue", "type": "aggregation", "aggregation": "sum",
         "event": "Order Completed", "property": "revenue",
         "condition": 'properties.category = "cosmetics"'},
        {"name": "avg_order", "type": "aggregation", "aggregation": "avg",
         "event": "Order Completed", "property": "revenue"},
        {"name": "smallest order", "type": "aggregation", "aggregation": "min",
         "event": "Order Completed", "property": "properties.revenue"},
        {"name": "biggestOrder", "type": "aggregation", "aggregation": "max",
         "event": "Order Completed", "property": "revenue"},
        {"name": "favourite category", "type": "most_frequent", "event": "Order Completed",
         "property": "category"},
        {"name": "first category", "type": "first", "event": "Order Completed",
         "property": "category"},
        {"name": "last category", "type": "last", "event": "Order Completed",
         "property": "category"},
        {"name": "categories", "type": "unique_list", "event": "Order Completed",
         "property": "category"},
        {"name": "category count", "type": "unique_list_count", "event": "Order Completed",
         "property": "category"},
        {"name": "pages", "type": "event_counter", "event": "Page Viewed"},
    ))  # fmt: skip
    orders = [("shoes", 10), ("cosmetics", 25), ("shoes", 30), ("cosmetics", 5.5)]
    for n, (category, revenue) in enumerate(orders):
        feed.send({"userId": "u", "event": "Order Completed", "at": T0 - (4 - n) * HOUR,
                   "properties": {"category": category, "revenue": revenue}})  # fmt: skip
    feed.send({"userId": "u", "event": "Order Completed", "properties": {"category": "toys"}})
    feed.send({"userId": "u", "type": "page", "name": "Home"}, {"userId": "u", "event": "Other"})
    got = feed.traits(feed.profile_of("user_id", "u"))  # type: ignore[arg-type]
    assert got == {
        "orders": 5, "cosmetics_revenue": 30.5, "avg_order": 17.625, "smallest_order": 5.5,
        "biggest_order": 30, "favourite_category": "cosmetics", "first_category": "shoes",
        "last_category": "toys", "categories": ["cosmetics", "shoes", "toys"],
        "category_count": 3, "pages": 1,
    }  # fmt: skip
    computed = {t.name for t in feed.store.traits(feed.profile_of("user_id", "u")) if t.computed}  # type: ignore[arg-type]
    assert computed == set(got)


def test_most_frequent_needs_a_value_seen_twice(tmp_path: Path) -> None:
    feed = Feeder(tmp_path, traits({"name": "fav", "type": "most_frequent", "event": "V",
                                    "property": "page"}))  # fmt: skip
    feed.send({"userId": "u", "event": "V", "properties": {"page": "a"}},
              {"userId": "u", "event": "V", "properties": {"page": "b"}})  # fmt: skip
    assert "fav" not in feed.traits(feed.profile_of("user_id", "u"))  # type: ignore[arg-type]
    feed.send({"userId": "u", "event": "V", "properties": {"page": "b"}})
    assert feed.traits(feed.profile_of("user_id", "u"))["fav"] == "b"  # type: ignore[arg-type]


def test_windowed_counter_drops_old_events_on_the_schedule(tmp_path: Path) -> None:
    now = [T0]
    feed = Feeder(tmp_path, traits({"name": "logins 2 days", "type": "event_counter",
                                    "event": "Login", "window": "2d"}), now)  # fmt: skip
    feed.send({"userId": "u", "event": "Login", "at": T0 - 3 * DAY},  # outside: not counted
              {"userId": "u", "event": "Login", "at": T0 - DAY - HOUR},
              {"userId": "u", "event": "Login", "at": T0})  # fmt: skip
    p = feed.profile_of("user_id", "u")
    assert feed.traits(p)["logins_2_days"] == 2  # type: ignore[arg-type]
    now[0] = T0 + DAY
    changes = feed.processor.expire()
    assert [(c.key, c.old, c.new) for c in changes] == [("logins_2_days", 2, 1)]
    assert feed.traits(p)["logins_2_days"] == 1  # type: ignore[arg-type]
    assert feed.processor.expire() == [], "nothing more until the next bucket leaves"
    now[0] = T0 + 2 * DAY + HOUR
    feed.processor.expire()
    assert feed.traits(p)["logins_2_days"] == 0  # type: ignore[arg-type]
    assert feed.store.expiring(now[0] // HOUR + 1000, 10) == [], "an empty state never expires"


def test_merge_combines_trait_states_and_announces_changes(tmp_path: Path) -> None:
    feed = Feeder(tmp_path, traits(
        {"name": "orders", "type": "event_counter", "event": "Order"},
        {"name": "spent", "type": "aggregation", "aggregation": "sum", "event": "Order",
         "property": "total"}))  # fmt: skip
    seen: list[tuple[str, Any, Any]] = []
    feed.processor.traits.on_change.append(lambda c: seen.append((c.key, c.old, c.new)))
    feed.send({"anonymousId": "a", "event": "Order", "properties": {"total": 5}},
              {"anonymousId": "a", "event": "Order", "properties": {"total": 7}},
              {"userId": "u", "event": "Order", "properties": {"total": 100}})  # fmt: skip
    # a batch announces each trait's final value once per profile, not each event's
    assert seen == [("orders", None, 2), ("spent", None, 12),
                    ("orders", None, 1), ("spent", None, 100)]  # fmt: skip
    seen.clear()
    feed.send({"type": "identify", "userId": "u", "anonymousId": "a"})
    p = feed.profile_of("user_id", "u")
    assert feed.traits(p) == {"orders": 3, "spent": 112}  # type: ignore[arg-type]
    assert seen == [("orders", 2, 3), ("spent", 12, 112)]


def test_a_batch_announces_a_trait_once_per_profile_with_its_final_value(
    tmp_path: Path,
) -> None:
    feed = Feeder(tmp_path, traits(
        {"name": "orders", "type": "event_counter", "event": "Order"},
        {"name": "biggest", "type": "aggregation", "aggregation": "max", "event": "Order",
         "property": "total"}))  # fmt: skip
    changes = feed.send(*({"userId": "u", "event": "Order", "messageId": f"o{n}",
                           "properties": {"total": total}}
                          for n, total in enumerate([3, 9, 4])))  # fmt: skip
    assert [(c.key, c.old, c.new, c.message_id) for c in changes] == [
        ("orders", None, 3, "o2"), ("biggest", None, 9, "o2")]  # the batch's last event  # fmt: skip
    changes = feed.send({"userId": "u", "event": "Order", "properties": {"total": 1}},
                        {"userId": "u", "event": "Order", "properties": {"total": 2}})  # fmt: skip
    # the next batch starts from the value the last one settled; max did not change
    assert [(c.key, c.old, c.new) for c in changes] == [("orders", 3, 5)]
    assert feed.traits(feed.profile_of("user_id", "u")) == {"orders": 5, "biggest": 9}  # type: ignore[arg-type]


def test_changes_are_announced_only_when_the_value_changes(tmp_path: Path) -> None:
    feed = Feeder(tmp_path, traits({"name": "kinds", "type": "unique_list_count",
                                    "event": "E", "property": "k"}))  # fmt: skip
    changes = feed.send(*({"userId": "u", "event": "E", "properties": {"k": "x"}}
                          for _ in range(5)))  # fmt: skip
    assert [(c.old, c.new) for c in changes] == [(None, 1)]


@pytest.mark.parametrize(("trait", "message"), [
    ({"name": "x", "type": "aggregation", "event": "E", "property": "p"}, "'aggregation'"),
    ({"name": "x", "type": "first", "event": "E"}, "needs 'property'"),
    ({"name": "x", "type": "event_counter", "event": "E", "condition": "properties.a ="},
     "condition"),
    ({"name": "x", "type": "event_counter", "event": "E", "window": "5m"}, "window"),
])  # fmt: skip
def test_bad_trait_declarations_name_the_field(trait: dict[str, Any], message: str) -> None:
    data = {"sources": [{"name": "website"}], "spaces": [
        {"name": "main", "sources": ["website"], "computed_traits": [trait]}]}  # fmt: skip
    with pytest.raises(ConfigError, match=message) as caught:
        parse_workspace(data)
    assert "spaces[0]" in str(caught.value) or "spaces.0" in str(caught.value)


def test_spaces_name_known_sources() -> None:
    data = {"sources": [{"name": "website"}], "spaces": [{"name": "main", "sources": ["web"]}]}
    with pytest.raises(ConfigError, match=r"spaces\[0\].sources\[0\]: no source is named 'web'"):
        parse_workspace(data)
    with pytest.raises(ConfigError, match="give it a path"):
        parse_workspace({"sources": [{"name": "website"}], "spaces": [{
            "name": "main", "sources": ["website"],
            "identity": {"identifiers": [{"type": "phone"}]}}]})  # fmt: skip
