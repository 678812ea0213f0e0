"""Audiences kept as events arrive: each condition's entry and exit, windows that move,
nested audiences, merges, the member's trait, the explanation, and load-time errors with
their place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headwater.config.workspace import parse_workspace
from headwater.engage.audiences import legacy_key
from headwater.errors import ConfigError
from tests.unify.helpers import T0, Feeder, space

pytestmark = pytest.mark.usefixtures("profile_backend")  # SQLite and PostgreSQL

DAY = 86_400_000
HOUR = 3_600_000

BIG_SPENDERS = {
    "key": "big_spenders",
    "where": {"all": [
        {"performed": {"event": "Order Completed", "at_least": 2, "within": "30d",
                       "where": "properties.revenue > 10"}},
        {"trait": {"name": "plan", "op": "!=", "value": "free"}},
        {"not": {"member_of": "churned"}},
    ]},
}  # fmt: skip
CHURNED = {"key": "churned", "where": {"trait": {"name": "churned", "op": "=", "value": True}}}


def feeder(tmp_path: Path, *audiences: dict[str, Any], now: list[int] | None = None) -> Feeder:
    return Feeder(tmp_path, space(audiences=list(audiences)), now)


def members(feed: Feeder, key: str) -> set[str]:
    found = feed.store.audience_members(key, 1000)
    users = {}
    for segment_id, _ in found:
        ids = feed.ids(segment_id)
        users[segment_id] = next((i.split(":", 1)[1] for i in ids if i.startswith("user_id")),
                                 segment_id)  # fmt: skip
    return set(users.values())


def order(user: str, revenue: float, **extra: Any) -> dict[str, Any]:
    return {"userId": user, "event": "Order Completed", "properties": {"revenue": revenue},
            **extra}  # fmt: skip


def test_an_audience_of_counts_traits_and_another_audience(tmp_path: Path) -> None:
    feed = feeder(tmp_path, BIG_SPENDERS, CHURNED)
    feed.send({"type": "identify", "userId": "ann", "traits": {"plan": "pro"}},
              order("ann", 25))  # fmt: skip
    assert members(feed, "big_spenders") == set(), "one order is not two"
    feed.send(order("ann", 5))
    assert members(feed, "big_spenders") == set(), "the where: 5 is not above 10"
    feed.send(order("ann", 11))
    assert members(feed, "big_spenders") == {"ann"}
    ann = feed.profile_of("user_id", "ann")
    assert ann is not None and feed.traits(ann)["big_spenders"] is True, "the member's trait"

    feed.send({"type": "identify", "userId": "ann", "traits": {"churned": True}})
    assert members(feed, "churned") == {"ann"} and members(feed, "big_spenders") == set()
    assert "big_spenders" not in feed.traits(ann), "the trait goes with the membership"
    changes = feed.store.audience_changes("big_spenders", 10)
    assert [entered for _, _, entered, _ in changes] == [False, True], "an entry, then an exit"
    assert feed.processor.counts.entered == 2 and feed.processor.counts.exited == 1


def test_a_window_moving_past_the_events_is_an_exit(tmp_path: Path) -> None:
    now = [T0]
    recent = {"key": "recent_buyers",
              "where": {"performed": {"event": "Order Completed", "within": "2d"}}}  # fmt: skip
    feed = feeder(tmp_path, recent, now=now)
    feed.send(order("bob", 3))
    assert members(feed, "recent_buyers") == {"bob"}
    now[0] = T0 + DAY
    feed.processor.expire()
    assert members(feed, "recent_buyers") == {"bob"}, "still inside the window"
    now[0] = T0 + 2 * DAY + HOUR
    feed.processor.expire()
    assert members(feed, "recent_buyers") == set(), "the recompute is the exit"
    (_, _, entered, message_id), *_ = feed.store.audience_changes("recent_buyers", 10)
    assert not entered and message_id is None, "no event caused it: the window did"


@pytest.mark.parametrize(
    ("condition", "traits", "holds"),
    [
        ({"name": "plan", "op": "=", "value": "pro"}, {"plan": "pro"}, True),
        ({"name": "age", "op": ">", "value": 30}, {"age": 41}, True),
        ({"name": "age", "op": "<=", "value": 30}, {"age": 41}, False),
        ({"name": "age", "op": ">", "value": 30}, {"age": "41"}, False),
        ({"name": "email", "op": "exists"}, {"email": "a@b.io"}, True),
        ({"name": "email", "op": "not_exists"}, {"email": "a@b.io"}, False),
        ({"name": "email", "op": "contains", "value": "@b.io"}, {"email": "a@b.io"}, True),
        ({"name": "tags", "op": "contains", "value": "vip"}, {"tags": ["new", "vip"]}, True),
        ({"name": "plan", "op": "!=", "value": "free"}, {}, False),
    ],
)
def test_trait_conditions(
    tmp_path: Path, condition: dict[str, Any], traits: dict[str, Any], holds: bool
) -> None:
    feed = feeder(tmp_path, {"key": "a", "where": {"trait": condition}})
    feed.send({"type": "identify", "userId": "u", "traits": traits})
    assert members(feed, "a") == ({"u"} if holds else set())


def test_did_not_and_exactly(tmp_path: Path) -> None:
    never = {"key": "never_bought", "where": {"performed": {"event": "Order Completed",
                                                            "at_most": 0}}}  # fmt: skip
    twice = {"key": "twice", "where": {"performed": {"event": "Order Completed",
                                                     "exactly": 2}}}  # fmt: skip
    feed = feeder(tmp_path, never, twice)
    feed.send({"userId": "cy", "event": "Signed Up"})
    assert members(feed, "never_bought") == {"cy"}
    feed.send(order("cy", 1), order("cy", 1))
    assert members(feed, "never_bought") == set() and members(feed, "twice") == {"cy"}
    feed.send(order("cy", 1))
    assert members(feed, "twice") == set()


def test_a_merge_counts_both_profiles_events(tmp_path: Path) -> None:
    two = {"key": "two_orders", "where": {"performed": {"event": "Order Completed",
                                                        "at_least": 2}}}  # fmt: skip
    feed = feeder(tmp_path, two)
    feed.send({"anonymousId": "anon-1", "event": "Order Completed", "properties": {}})
    feed.send(order("dee", 1))
    assert members(feed, "two_orders") == set()
    feed.send({"type": "identify", "userId": "dee", "anonymousId": "anon-1"})  # the merge
    assert members(feed, "two_orders") == {"dee"}, "the counters merged with the profiles"
    assert len(feed.store.audience_members("two_orders", 10)) == 1


def test_why_a_profile_is_or_is_not_a_member(tmp_path: Path) -> None:
    feed = feeder(tmp_path, BIG_SPENDERS, CHURNED)
    feed.send({"type": "identify", "userId": "eve", "traits": {"plan": "free"}},
              order("eve", 30), order("eve", 40))  # fmt: skip
    eve = feed.profile_of("user_id", "eve")
    assert eve is not None
    audience = feed.processor.audiences.audiences[1]
    assert audience.key == "big_spenders"
    why = feed.processor.audiences.explain(feed.store, audience, eve, T0).as_dict()
    assert why["holds"] is False and why["says"] == "2 of 3 hold"
    assert [p["says"] for p in why["parts"]] == [
        "Order Completed at least 2 times within 30d where properties.revenue > 10: 2 times",
        "plan != 'free': plan is 'free'",
        "the condition inside does not hold",
    ]
    assert why["parts"][2]["parts"][0]["says"] == "not a member of churned"


@pytest.mark.parametrize(
    ("audiences", "message"),
    [
        (
            [{"key": "a", "where": {"member_of": "nope"}}],
            "spaces[0].audiences[0].where: member_of 'nope' is not an audience of this space",
        ),
        (
            [{"key": "a", "where": {"member_of": "b"}}, {"key": "b", "where": {"member_of": "a"}}],
            "audiences depend on themselves through member_of: a → b → a",
        ),
        ([CHURNED, CHURNED], "spaces[0].audiences[1].key: 'churned' is used by audiences[0]"),
        (
            [{"key": "a", "where": {"performed": {"event": "E", "within": "90m"}}}],
            "not a whole number of hours",
        ),
        (
            [{"key": "a", "where": {"performed": {"event": "E", "where": "properties.x >"}}}],
            "where:",
        ),
        (
            [{"key": "a", "where": {"trait": {"name": "plan", "op": "exists"}, "member_of": "b"}}],
            "a condition is exactly one of",
        ),
        (
            [{"key": "a", "where": {"funnel": {"steps": ["A"], "within": "1h"}}}],
            "spaces[0].audiences[0].where.funnel.steps",
        ),
        (
            [
                {
                    "key": "a",
                    "where": {"performed": {"event": "E"}},
                    "destinations": [{"name": "braze"}],
                }
            ],
            "spaces[0].audiences[0].destinations[0].name",
        ),
    ],
)
def test_a_bad_audience_stops_the_load_with_its_place(
    audiences: list[dict[str, Any]], message: str
) -> None:
    ws = {"sources": [{"name": "website", "write_key": "wk_website_aud_1"}],
          "spaces": [space(sources=["website"], audiences=audiences)]}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_workspace(ws)
    assert message in str(caught.value), str(caught.value)


def test_one_count_asked_twice_is_counted_once(tmp_path: Path) -> None:
    between = {"key": "between", "where": {"all": [
        {"performed": {"event": "Order Completed", "at_least": 2}},
        {"performed": {"event": "Order Completed", "at_most": 3}},
    ]}}  # fmt: skip
    feed = feeder(tmp_path, between)
    feed.send(order("fay", 1), order("fay", 1))
    assert members(feed, "between") == {"fay"}
    feed.send(order("fay", 1), order("fay", 1))
    assert members(feed, "between") == set(), "four orders: not at most three"


def test_a_new_audience_is_backfilled_from_the_log_then_kept_live(tmp_path: Path) -> None:
    before = Feeder(tmp_path, space())  # a space that has run for a while, no audiences
    before.send({"type": "identify", "userId": "ann", "traits": {"plan": "pro"}},
                order("ann", 20), order("ann", 30), order("bob", 99),
                {"type": "identify", "userId": "cy", "traits": {"plan": "pro"}})  # fmt: skip
    history = before.records
    before.store.close()

    feed = feeder(tmp_path, BIG_SPENDERS, CHURNED)  # the same store, now with audiences
    backfills = feed.processor.backfills
    assert backfills is not None and backfills.waiting() == {"big_spenders", "churned"}
    feed.send(order("cy", 50), order("cy", 60))  # live, while the backfill has not run
    assert members(feed, "big_spenders") == set(), "not evaluated from a half-counted history"

    assert feed.processor.backfill_after() == 0
    feed.processor.backfill(history[:2])
    assert feed.processor.backfill_after() == 2, "the progress is kept"
    feed.processor.backfill(history[2:])
    assert feed.processor.backfill_after() is None and set(backfills.sweeping()) == {
        "big_spenders", "churned"}  # fmt: skip
    feed.processor.sweep()
    assert backfills.waiting() == set()
    assert members(feed, "big_spenders") == {"ann", "cy"}, "history and live, each counted once"
    ann = feed.profile_of("user_id", "ann")
    assert ann is not None
    why = feed.processor.audiences.explain(feed.store, feed.processor.audiences.audiences[1],
                                           ann, T0).as_dict()  # fmt: skip
    assert why["parts"][0]["says"].endswith(": 2 times"), why

    feed.send(order("bob", 40), {"type": "identify", "userId": "bob", "traits": {"plan": "pro"}})
    assert members(feed, "big_spenders") == {"ann", "bob", "cy"}, "live again"
    feed.store.close()
    again = feeder(tmp_path, BIG_SPENDERS, CHURNED)
    assert again.processor.backfills is not None
    assert again.processor.backfills.waiting() == set(), "a restart does not backfill again"


def test_an_edited_audience_is_backfilled_again_and_a_new_store_is_not(tmp_path: Path) -> None:
    fresh = feeder(tmp_path, CHURNED)
    assert fresh.processor.backfills is not None and fresh.processor.backfills.waiting() == set()
    fresh.send({"type": "identify", "userId": "dee", "traits": {"churned": True}})
    assert members(fresh, "churned") == {"dee"}
    fresh.store.close()
    edited = {"key": "churned", "where": {"trait": {"name": "churned", "op": "exists"}}}
    feed = feeder(tmp_path, edited)
    assert feed.processor.backfills is not None
    assert feed.processor.backfills.waiting() == {"churned"}
    assert feed.processor.backfill_after() is None, "no new counter: straight to the sweep"
    feed.processor.sweep()
    assert feed.processor.backfills.waiting() == set() and members(feed, "churned") == {"dee"}


def test_an_audience_deleted_then_added_again_unchanged_is_backfilled_again(
    tmp_path: Path,
) -> None:
    """Nobody counted for it while it was gone: its old counts and progress would say ann
    ordered twice and cy never did."""
    twice = {"key": "twice", "where": {"performed": {"event": "Order Completed", "at_least": 2}}}
    first = feeder(tmp_path, twice)
    first.send(order("ann", 1), order("ann", 1))
    assert members(first, "twice") == {"ann"}
    history = list(first.records)
    first.store.close()
    gone = feeder(tmp_path)  # deleted: these orders are counted by nobody
    gone.send(order("cy", 1), order("cy", 1))
    history += gone.records
    gone.store.close()

    back = feeder(tmp_path, twice)
    backfills = back.processor.backfills
    assert backfills is not None and backfills.waiting() == {"twice"}
    assert back.processor.backfill_after() == 0, "counted again from the log's start"
    back.processor.backfill(history)
    back.processor.sweep()
    assert backfills.waiting() == set()
    assert members(back, "twice") == {"ann", "cy"}, "each order counted once"
    cy = back.profile_of("user_id", "cy")
    assert cy is not None
    why = back.processor.audiences.explain(back.store, back.processor.audiences.audiences[0],
                                           cy, T0).as_dict()  # fmt: skip
    assert why["says"].endswith(": 2 times"), why


def test_audiences_counting_the_same_events_share_one_counter_and_adopt_a_legacy_one(
    tmp_path: Path,
) -> None:
    twice = {"key": "twice", "where": {"performed": {"event": "Order Completed", "at_least": 2}}}
    once = {"key": "once", "where": {"performed": {"event": "Order Completed", "at_least": 1}}}
    first = feeder(tmp_path, twice)
    first.send(order("ann", 1), order("ann", 1))
    [key] = first.processor.audiences.counters_of(first.processor.audiences.audiences[0])
    # as a store written before counters were shared keeps it: under the audience's name
    legacy = legacy_key("twice", key)
    first.store.begin()
    first.store.rename_states(key, legacy)
    first.store.set_meta(f"counter:{legacy}", first.store.meta(f"counter:{key}"))
    first.store.forget([f"counter:{key}"], [])
    first.store.commit()
    first.store.close()

    both = feeder(tmp_path, twice, once)
    engine = both.processor.audiences
    assert len(engine.computations) == 1, "two audiences, one count"
    assert both.store.meta(f"counter:{legacy}") is None and both.store.meta(f"counter:{key}")
    assert both.processor.backfill_after() is None, "the adopted counter is complete"
    both.processor.sweep()
    assert both.processor.backfills is not None and both.processor.backfills.waiting() == set()
    assert members(both, "twice") == {"ann"} and members(both, "once") == {"ann"}
    both.send(order("bob", 1))
    assert members(both, "once") == {"ann", "bob"} and members(both, "twice") == {"ann"}


def test_windowed_audiences_exit_within_a_minute() -> None:
    recent = {"key": "recent", "where": {"performed": {"event": "E", "within": "1d"}}}
    ws = {"sources": [{"name": "website", "write_key": "wk_website_aud_1"}],
          "spaces": [space(sources=["website"], audiences=[recent],
                           recompute_interval_secs=300)]}  # fmt: skip
    with pytest.raises(ConfigError, match="its exits would wait that long"):
        parse_workspace(ws)


MINUTE = 60_000


def test_a_funnel_holds_once_its_steps_happen_in_order_within_the_time(tmp_path: Path) -> None:
    bought = {"key": "viewed_then_bought", "where": {"funnel": {"within": "1h", "steps": [
        "Product Viewed", {"event": "Order Completed", "where": "properties.revenue > 10"}]}}}  # fmt: skip
    feed = feeder(tmp_path, bought)

    def event(user: str, name: str, at: int, revenue: float = 20) -> dict[str, Any]:
        return {"userId": user, "event": name, "at": at, "properties": {"revenue": revenue}}

    feed.send(event("ann", "Product Viewed", T0), event("ann", "Order Completed", T0 + 30 * MINUTE))
    feed.send(event("bob", "Product Viewed", T0), event("bob", "Order Completed", T0 + 90 * MINUTE))
    feed.send(event("cy", "Order Completed", T0), event("cy", "Product Viewed", T0 + MINUTE))
    feed.send(event("dee", "Product Viewed", T0),
              event("dee", "Order Completed", T0 + MINUTE, revenue=5))  # fmt: skip
    assert members(feed, "viewed_then_bought") == {"ann"}, "in order, in time, with the where"
    # bob views again: a new run, whose order comes in time
    feed.send(event("bob", "Product Viewed", T0 + 100 * MINUTE),
              event("bob", "Order Completed", T0 + 120 * MINUTE))  # fmt: skip
    assert members(feed, "viewed_then_bought") == {"ann", "bob"}
    audience = feed.processor.audiences.audiences[0]
    dee = feed.profile_of("user_id", "dee")
    assert dee is not None
    why = feed.processor.audiences.explain(feed.store, audience, dee, T0).as_dict()
    assert why["says"] == ("Product Viewed → Order Completed where properties.revenue > 10 "
                           "within 1h: reached step 1 of 2")  # fmt: skip


def test_one_event_never_serves_two_steps(tmp_path: Path) -> None:
    twice = {"key": "viewed_twice", "where": {"funnel": {"within": "1d",
                                                         "steps": ["Viewed", "Viewed"]}}}  # fmt: skip
    feed = feeder(tmp_path, twice)
    feed.send({"userId": "eve", "event": "Viewed"})
    assert members(feed, "viewed_twice") == set()
    feed.send({"userId": "eve", "event": "Viewed"})
    assert members(feed, "viewed_twice") == {"eve"}


def test_an_event_the_sources_plans_block_is_unknown() -> None:
    plan = {"name": "web", "sources": ["website"], "enforcement": {"unplanned_events": "block"},
            "rules": [{"type": "TRACK", "key": "Order Completed", "jsonSchema": {}}]}  # fmt: skip

    def workspace(event: str, enforcement: str = "block") -> dict[str, Any]:
        audience = {"key": "a", "where": {"performed": {"event": event}}}
        return {"sources": [{"name": "website", "write_key": "wk_website_aud_1"}],
                "tracking_plans": [{**plan, "enforcement": {"unplanned_events": enforcement}}],
                "spaces": [space(sources=["website"], audiences=[audience])]}  # fmt: skip

    with pytest.raises(ConfigError, match=r"spaces\[0\]\.audiences\[0\]\.where: event 'Order "
                       r"Complted' never reaches this space"):  # fmt: skip
        parse_workspace(workspace("Order Complted"))
    parse_workspace(workspace("Order Completed"))
    parse_workspace(workspace("Page Viewed"))
    parse_workspace(workspace("Order Complted", "allow"))  # unplanned events get through


def test_members_page_in_the_order_they_entered(tmp_path: Path) -> None:
    now = [T0]
    feed = feeder(tmp_path, CHURNED, now=now)
    for i, user in enumerate(["cy", "al", "bo"]):
        now[0] = T0 + i * 1000
        feed.send({"type": "identify", "userId": user, "traits": {"churned": True}})
    pages, after = [], (-1, "")
    while page := feed.store.audience_members("churned", 2, after):
        pages.append([feed.ids(seg) for seg, _ in page])
        since = [at for _, at in page]
        assert since == sorted(since)
        after = (page[-1][1], page[-1][0])
    assert [len(p) for p in pages] == [2, 1]
    users = [next(i for i in ids if i.startswith("user_id")) for p in pages for ids in p]
    assert users == ["user_id:cy", "user_id:al", "user_id:bo"], "entry order, not by id"


def test_a_store_that_kept_audience_traits_drops_them_once(tmp_path: Path) -> None:
    feed = feeder(tmp_path, {**CHURNED, "key": "gone"})
    feed.send({"type": "identify", "userId": "al", "traits": {"churned": True}})
    al = feed.profile_of("user_id", "al")
    assert al is not None
    store = feed.store
    # what a store written before 2026-12-07 holds: the membership as a stored trait too
    store.begin()
    store.set_computed([(al, "churned_before", True, T0, "audience", "m-1")])
    store.set_meta("audience_traits", None)
    store.commit()
    assert feed.traits(al)["churned_before"] is True
    store.derive_audience_traits()
    traits = feed.traits(al)
    assert "churned_before" not in traits and traits["gone"] is True, "read from the members"
    assert store.meta("audience_traits") == "derived"
