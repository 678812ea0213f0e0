"""Identity resolution: the scenarios of Segment's identity-resolution docs, on a real store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headwater.unify.identifiers import Extractor
from tests.unify.helpers import Feeder, space

pytestmark = pytest.mark.usefixtures("profile_backend")  # SQLite and PostgreSQL


@pytest.fixture
def feed(tmp_path: Path) -> Feeder:
    return Feeder(tmp_path, space())


def test_anonymous_browsing_then_login(feed: Feeder) -> None:
    feed.send({"type": "page", "anonymousId": "a1", "messageId": "p1"},
              {"event": "Product Viewed", "anonymousId": "a1", "messageId": "t1"})  # fmt: skip
    anon = feed.profile_of("anonymous_id", "a1")
    assert anon is not None
    feed.send({"type": "identify", "anonymousId": "a1", "userId": "u-42", "messageId": "i1",
               "traits": {"email": " Jane@Example.COM ", "name": "Jane"}})  # fmt: skip
    assert feed.profile_of("user_id", "u-42") == anon
    assert feed.profile_of("email", "jane@example.com") == anon, "emails are trimmed, lowered"
    assert feed.ids(anon) == {"anonymous_id:a1", "user_id:u-42", "email:jane@example.com"}
    assert feed.traits(anon) == {"email": " Jane@Example.COM ", "name": "Jane"}
    assert [e.message_id for e in feed.store.events(anon, 10)] == ["i1", "t1", "p1"]
    assert feed.kinds(anon) == ["created"]


def test_two_devices_then_login_merges_with_the_message_that_linked_them(feed: Feeder) -> None:
    feed.send({"anonymousId": "web-1", "event": "Viewed"})
    feed.send({"anonymousId": "app-1", "event": "Opened"}, source="mobile")
    web, app = feed.profile_of("anonymous_id", "web-1"), feed.profile_of("anonymous_id", "app-1")
    assert web and app and web != app
    feed.send({"type": "identify", "anonymousId": "app-1", "userId": "u1", "messageId": "login-app"},
              source="mobile")  # fmt: skip
    assert feed.profile_of("user_id", "u1") == app
    feed.send(
        {"type": "identify", "anonymousId": "web-1", "userId": "u1", "messageId": "login-web"}
    )
    survivor = feed.profile_of("user_id", "u1")
    assert survivor == web, "the older profile survives"
    assert feed.profile_of("anonymous_id", "app-1") == web
    assert feed.store.resolve(app) == web, "the merged-away segment_id still finds the profile"
    assert feed.ids(web) == {"anonymous_id:web-1", "anonymous_id:app-1", "user_id:u1"}
    merges = [h for h in feed.store.history(web) if h.kind == "merged"]
    assert len(merges) == 1
    assert (merges[0].segment_id, merges[0].other_id, merges[0].message_id) == (
        web,
        app,
        "login-web",
    )
    assert set(merges[0].detail["identifiers"]) == {"anonymous_id:web-1", "user_id:u1"}
    assert len(feed.store.events(web, 10)) == 4
    assert feed.store.profile(web).merges == 1  # type: ignore[union-attr]


def test_user_id_conflict_does_not_merge_and_is_recorded(feed: Feeder) -> None:
    feed.send({"type": "identify", "userId": "u1", "anonymousId": "kiosk"})
    first = feed.profile_of("user_id", "u1")
    feed.send({"type": "identify", "userId": "u2", "anonymousId": "kiosk", "messageId": "clash"})
    second = feed.profile_of("user_id", "u2")
    assert second is not None and second != first, "a second user_id starts a new profile"
    assert feed.ids(first) == {"user_id:u1", "anonymous_id:kiosk"}  # type: ignore[arg-type]
    assert feed.ids(second) == {"user_id:u2"}
    refusals = feed.store.history_of_message("clash")
    refused = [h for h in refusals if h.kind == "refused"]
    assert refused and refused[0].detail["dropped"] == "anonymous_id:kiosk"
    assert "user_id (limit 1)" in refused[0].detail["reason"]
    assert ("refused", "anonymous_id", "kiosk", 1, "clash") in feed.store.counters()


def test_segments_documented_conflict_drops_the_email_and_starts_a_profile(feed: Feeder) -> None:
    feed.send({"type": "identify", "userId": "abc123", "traits": {"email": "jane@x.com"}})
    feed.send({"type": "identify", "userId": "abc456", "traits": {"email": "jane@x.com"}})
    p1, p2 = feed.profile_of("user_id", "abc123"), feed.profile_of("user_id", "abc456")
    assert p1 != p2
    assert feed.ids(p2) == {"user_id:abc456"}, "the email is not attached to the new profile"  # type: ignore[arg-type]
    assert feed.profile_of("email", "jane@x.com") == p1


def test_shared_email_never_links_two_users_and_a_sixth_email_is_over_the_limit(
    feed: Feeder,
) -> None:
    for n in range(3):
        feed.send({"type": "identify", "userId": f"u{n}", "traits": {"email": "team@co.com"}})
    owners = {feed.profile_of("user_id", f"u{n}") for n in range(3)}
    assert len(owners) == 3
    for n in range(6):
        feed.send({"type": "identify", "userId": "many", "messageId": f"e{n}",
                   "traits": {"email": f"me{n}@x.com"}})  # fmt: skip
    many = feed.profile_of("user_id", "many")
    assert sum(i.startswith("email:") for i in feed.ids(many)) == 5  # type: ignore[arg-type]
    assert feed.profile_of("email", "me5@x.com") is None
    limit = [h for h in feed.store.history_of_message("e5") if h.kind == "limit"]
    assert limit and limit[0].detail["dropped"] == "email:me5@x.com"
    assert len(feed.store.events(many, 10)) == 6, "the event still joins the profile"  # type: ignore[arg-type]


def test_blocked_values_link_nothing(feed: Feeder) -> None:
    feed.send({"type": "identify", "anonymousId": "a1", "traits": {"email": "TEST@example.com"}},
              {"type": "identify", "anonymousId": "a2", "traits": {"email": "test@example.com"}},
              {"userId": "0", "anonymousId": "a3", "event": "X"},
              {"userId": "null", "anonymousId": "a4", "event": "X"})  # fmt: skip
    profiles = {feed.profile_of("anonymous_id", f"a{n}") for n in range(1, 5)}
    assert len(profiles) == 4
    assert feed.profile_of("email", "test@example.com") is None
    assert feed.profile_of("user_id", "0") is None
    blocked = {(k, t, v): n for k, t, v, n, _ in feed.store.counters() if k == "blocked"}
    assert blocked[("blocked", "email", "test@example.com")] == 2


def test_merges_across_sources(feed: Feeder) -> None:
    feed.send({"anonymousId": "w1", "event": "Viewed"}, source="website")
    feed.send({"type": "identify", "userId": "u9", "traits": {"email": "u9@x.com"}},
              source="backend")  # fmt: skip
    feed.send({"event": "Opened", "anonymousId": "m1", "context": {"traits": {"email": "U9@x.com"}}},
              source="mobile")  # fmt: skip
    feed.send({"type": "identify", "userId": "u9", "anonymousId": "w1"}, source="website")
    p = feed.profile_of("user_id", "u9")
    assert feed.profile_of("anonymous_id", "w1") == p == feed.profile_of("anonymous_id", "m1")
    assert {e.source for e in feed.store.events(p, 10)} == {"website", "backend", "mobile"}  # type: ignore[arg-type]
    external = {e.type + ":" + e.value: e.source for e in feed.store.external_ids(p)}  # type: ignore[arg-type]
    assert external == {"anonymous_id:w1": "website", "user_id:u9": "backend",
                        "email:u9@x.com": "backend", "anonymous_id:m1": "mobile"}  # fmt: skip


def test_a_flood_of_identifiers_stops_at_the_limit(tmp_path: Path) -> None:
    feed = Feeder(tmp_path, space(identity={"identifiers": [
        {"type": "user_id", "limit": 1}, {"type": "anonymous_id", "limit": 3}]}))  # fmt: skip
    for n in range(10):
        feed.send({"userId": "shared-ipad", "anonymousId": f"a{n}", "event": "Tap"})
    p = feed.profile_of("user_id", "shared-ipad")
    assert len(feed.ids(p)) == 4  # type: ignore[arg-type]
    limits = [h for h in feed.store.history(p) if h.kind == "limit"]  # type: ignore[arg-type]
    assert len(limits) == 7
    assert feed.store.id_counts(p) == {"user_id": 1, "anonymous_id": 3}  # type: ignore[arg-type]


def test_too_long_values_are_refused_not_truncated(feed: Feeder) -> None:
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    feed.send({"anonymousId": "s1", "userId": long_a, "event": "X"},
              {"anonymousId": "s2", "userId": long_b, "event": "X"})  # fmt: skip
    assert feed.profile_of("anonymous_id", "s1") != feed.profile_of("anonymous_id", "s2")
    assert any(k == "too_long" for k, *_ in feed.store.counters())


def test_custom_identifier_by_fql_path_and_external_ids(tmp_path: Path) -> None:
    feed = Feeder(tmp_path, space(identity={"identifiers": [
        {"type": "user_id", "limit": 1}, {"type": "phone", "limit": 2, "path": "properties.phone"},
        {"type": "anonymous_id"}, {"type": "crm_id", "path": "traits.crm"}]}))  # fmt: skip
    feed.send({"anonymousId": "a1", "event": "Call", "properties": {"phone": "+4912345"}})
    feed.send({"anonymousId": "a2", "type": "identify", "traits": {}, "context": {
        "externalIds": [{"id": "+4912345", "type": "phone", "collection": "users",
                         "encoding": "none"}]}})  # fmt: skip
    assert feed.profile_of("anonymous_id", "a1") == feed.profile_of("anonymous_id", "a2")


def test_merge_keeps_the_newest_value_of_each_trait(feed: Feeder) -> None:
    feed.send({"type": "identify", "anonymousId": "a", "traits": {"plan": "free", "city": "Oslo"},
               "at": 1_000_000_000_000})  # fmt: skip
    feed.send(
        {"type": "identify", "userId": "u", "traits": {"plan": "pro"}, "at": 1_000_000_500_000}
    )
    feed.send({"type": "identify", "userId": "u", "anonymousId": "a", "traits": {},
               "at": 1_000_000_900_000})  # fmt: skip
    p = feed.profile_of("user_id", "u")
    assert feed.traits(p) == {"plan": "pro", "city": "Oslo"}  # type: ignore[arg-type]
    feed.send({"type": "identify", "userId": "u", "traits": {"city": None}})
    assert feed.traits(p) == {"plan": "pro"}, "a trait set to null is removed"  # type: ignore[arg-type]


def test_delete_removes_profile_identifiers_and_computed_traits(tmp_path: Path) -> None:
    feed = Feeder(tmp_path, space(computed_traits=[
        {"name": "Orders", "type": "event_counter", "event": "Order Completed"}]))  # fmt: skip
    feed.send({"anonymousId": "a", "event": "Order Completed"},
              {"userId": "u-42", "anonymousId": "b", "event": "Order Completed"},
              {"userId": "u-42", "anonymousId": "a", "event": "Order Completed"})  # fmt: skip
    p = feed.profile_of("user_id", "u-42")
    assert feed.traits(p) == {"orders": 3}  # type: ignore[arg-type]
    feed.store.begin()
    assert feed.store.delete(p) == 3  # type: ignore[arg-type]
    feed.store.commit()
    for ident in (("user_id", "u-42"), ("anonymous_id", "a"), ("anonymous_id", "b")):
        assert feed.store.find(ident) is None
    assert feed.store.traits(p) == [] and feed.store.trait_states(p) == {}  # type: ignore[arg-type]
    assert feed.store.history(p) == [] and feed.store.resolve(p) is None  # type: ignore[arg-type]
    feed.send({"userId": "u-42", "event": "Order Completed"})
    again = feed.profile_of("user_id", "u-42")
    assert again not in (None, p) and feed.traits(again) == {"orders": 1}  # type: ignore[arg-type]


def test_store_survives_reopening(tmp_path: Path) -> None:
    feed = Feeder(tmp_path, space())
    feed.send({"type": "identify", "userId": "u1", "anonymousId": "a1"})
    p = feed.profile_of("user_id", "u1")
    feed.store.close()
    again = Feeder(tmp_path, space())
    assert again.profile_of("anonymous_id", "a1") == p
    assert again.store.position() == 1


def test_api_names_of_profiles_are_checked() -> None:
    extractor = Extractor(Feeder.__new__(Feeder).__class__ and _identity())
    assert extractor.parse("email:Jane@X.com") == ("email", "jane@x.com")
    with pytest.raises(ValueError, match="valid ones are segment_id, user_id, email"):
        extractor.parse("phone:123")
    with pytest.raises(ValueError, match="<type>:<value>"):
        extractor.parse("nocolon")


def _identity():  # type: ignore[no-untyped-def]
    from headwater.unify.config import SpaceConfig

    return SpaceConfig.model_validate(space()).identity


def test_an_event_that_fails_is_rolled_back_alone_with_its_merge(
    feed: Feeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed.send({"anonymousId": "a1", "event": "Viewed"}, {"anonymousId": "a2", "event": "Viewed"})
    p1, p2 = feed.profile_of("anonymous_id", "a1"), feed.profile_of("anonymous_id", "a2")
    assert p1 is not None and p2 is not None
    observe = feed.processor.traits.observe

    def failing(store: Any, segment_id: str, event: dict[str, Any], *rest: Any) -> Any:
        if event["messageId"] == "bad":
            raise RuntimeError("a bug in a trait")
        return observe(store, segment_id, event, *rest)

    monkeypatch.setattr(feed.processor.traits, "observe", failing)
    feed.send(
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "login-1"},
        {"type": "identify", "userId": "u1", "anonymousId": "a2", "messageId": "bad"},
        {"anonymousId": "a2", "event": "Viewed", "messageId": "after"},
    )
    assert feed.processor.counts.errors == 1
    assert feed.store.resolve(p2) == p2, "the failed event's merge was rolled back"
    assert feed.profile_of("user_id", "u1") == p1
    assert feed.store.events(p2, 10)[0].message_id == "after"
    assert feed.store.profile_of_event(3) == p1 and feed.store.profile_of_event(4) is None
    assert ("error", "", "", 1, "bad") in feed.store.counters()
    assert feed.store.position() == 5
