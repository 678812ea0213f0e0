"""The ga4 destination against the fake GA4 (tests/fakes/ga4.py): default mappings, names,
batching by user, the checks that stand in for GA4's silence, answers, the debug endpoint,
workspace overrides, and partial batches through the real delivery engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpClient, HttpResponse
from headwater.delivery.outcomes import Delivered, Discard, EventState, Filtered, Retry
from headwater.destinations.base import Context
from headwater.destinations.ga4 import Ga4
from headwater.destinations.ga4.encoder import event_name
from headwater.errors import MappingError
from headwater.mapping.actions import ActionConfig
from tests.delivery.conftest import FAST, Pipeline, make_pipeline
from tests.delivery.conftest import event as record
from tests.delivery.test_partial import settled
from tests.fakes import Reply, always
from tests.fakes.ga4 import FakeGa4

__all__ = ["make_pipeline"]  # the in-process pipeline fixture, for the engine test

SECRET = "ga4-s3cret-test"
MID = "G-TEST1234"


def now_iso(hours_ago: float = 0) -> str:
    when = datetime.now(UTC) - timedelta(hours=hours_ago)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def micros_of(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1_000_000)


def ev(offset: int, **fields: Any) -> OutboundEvent:
    body = {"type": "track", "event": "Video Played", "anonymousId": "anon-1",
            "messageId": f"m{offset}", "timestamp": now_iso(), "properties": {"title": "Intro"},
            **fields}  # fmt: skip
    return OutboundEvent(offset, body["messageId"], 0, orjson.dumps(body))


@pytest.fixture
def ga4() -> Iterator[FakeGa4]:
    fake = FakeGa4(MID, SECRET)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def make(fake: FakeGa4, http: HttpClient, actions: tuple[ActionConfig, ...] | None = None) -> Ga4:
    settings = Ga4.settings_model.model_validate(
        {"measurement_id": MID, "api_secret": SECRET, "endpoint": fake.url}
    )
    return Ga4("ga4", settings, Context(http, 5.0, 25, actions))


# -- default mappings


async def test_a_track_becomes_a_snake_cased_event_of_its_client(
    ga4: FakeGa4, http: HttpClient
) -> None:
    event = ev(1, userId="u1", event="Video Played", properties={"title": "Intro", "secs": 3})
    attempt = await make(ga4, http).deliver([event])
    assert isinstance(attempt.outcome, Delivered)
    [request] = ga4.requests
    assert request.path == "/mp/collect"
    assert request.query == {"measurement_id": MID, "api_secret": SECRET}
    assert request.json() == {
        "client_id": "anon-1", "user_id": "u1",
        "events": [{"name": "video_played", "timestamp_micros": micros_of(event.event["timestamp"]),
                    "params": {"title": "Intro", "secs": 3, "engagement_time_msec": 1,
                               "message_id": "m1"}}],
    }  # fmt: skip
    assert [e["name"] for e in ga4.accepted] == ["video_played"]


async def test_a_page_becomes_page_view(ga4: FakeGa4, http: HttpClient) -> None:
    page = {"url": "https://x.test/a", "referrer": "https://r.test/", "title": "A"}
    event = ev(1, type="page", name="A", context={"page": page})
    del event.event["event"]
    event = OutboundEvent(1, "m1", 0, orjson.dumps({k: v for k, v in event.event.items()}))
    await make(ga4, http).deliver([event])
    [got] = ga4.accepted
    assert got["name"] == "page_view"
    assert got["params"] == {"page_location": "https://x.test/a", "page_referrer": "https://r.test/",
                             "page_title": "A", "engagement_time_msec": 1, "message_id": "m1"}  # fmt: skip


async def test_order_completed_becomes_purchase_with_items(ga4: FakeGa4, http: HttpClient) -> None:
    props = {"order_id": "o1", "revenue": 25.5, "currency": "EUR", "tax": 2, "coupon": "X",
             "products": [{"product_id": "p1", "name": "Cap", "price": 10, "quantity": 2,
                           "category": "hats", "position": 1},
                          {"product_id": "p2", "price": 5.5}]}  # fmt: skip
    await make(ga4, http).deliver([ev(1, event="Order Completed", properties=props)])
    [got] = ga4.accepted
    assert got["name"] == "purchase"
    assert got["params"] == {
        "currency": "EUR", "value": 25.5, "transaction_id": "o1", "coupon": "X", "tax": 2,
        "items": [{"item_id": "p1", "item_name": "Cap", "index": 1, "item_category": "hats",
                   "price": 10, "quantity": 2}, {"item_id": "p2", "price": 5.5}],
        "engagement_time_msec": 1, "message_id": "m1",
    }  # fmt: skip


async def test_product_added_becomes_add_to_cart_with_one_item(
    ga4: FakeGa4, http: HttpClient
) -> None:
    props = {"product_id": "p1", "name": "Cap", "price": 10, "currency": "USD"}
    await make(ga4, http).deliver([ev(1, event="Product Added", properties=props)])
    [got] = ga4.accepted
    assert got["name"] == "add_to_cart"
    assert got["params"]["items"] == [{"item_id": "p1", "item_name": "Cap", "price": 10}]
    assert got["params"]["value"] == 10


async def test_an_identify_is_not_sent_and_says_why(ga4: FakeGa4, http: HttpClient) -> None:
    identify = OutboundEvent(1, "m1", 0, orjson.dumps({"type": "identify", "userId": "u1",
                                                        "messageId": "m1"}))  # fmt: skip
    attempt = await make(ga4, http).deliver([identify])
    assert isinstance(attempt.outcome, Filtered)  # as Segment shows unsubscribed events
    assert "no action's trigger matches (type=identify)" in attempt.outcome.reason
    assert ga4.requests == []


@pytest.mark.parametrize(
    ("segment", "ga4_name"),
    [("Order Completed", "purchase"), ("Signed Up", "sign_up"), ("Product Viewed", "view_item"),
     ("Video Played", "video_played"), ("videoPlayed", "video_played"),
     ("  Plan -- Upgraded!  ", "plan_upgraded"), ("already_snake", "already_snake")],
)  # fmt: skip
def test_event_names_are_gas_names(segment: str, ga4_name: str) -> None:
    assert event_name(segment) == ga4_name


# -- batching


async def test_one_users_events_share_requests_of_at_most_25(
    ga4: FakeGa4, http: HttpClient
) -> None:
    events = [ev(i) for i in range(30)]
    destination = make(ga4, http)
    attempt = await destination.deliver(events[:25])
    attempt2 = await destination.deliver(events[25:])
    assert isinstance(attempt.outcome, Delivered) and isinstance(attempt2.outcome, Delivered)
    assert [len(r.json()["events"]) for r in ga4.requests] == [25, 5]
    assert [e["params"]["message_id"] for e in ga4.accepted] == [f"m{i}" for i in range(30)]


async def test_events_of_different_users_go_in_different_requests(
    ga4: FakeGa4, http: HttpClient
) -> None:
    events = [ev(1, anonymousId="a"), ev(2, anonymousId="b"), ev(3, anonymousId="a"),
              ev(4, anonymousId="b", userId="u9")]  # fmt: skip
    attempt = await make(ga4, http).deliver(events)
    assert isinstance(attempt.outcome, Delivered)
    shapes = [(r.json()["client_id"], r.json().get("user_id"),
               [e["params"]["message_id"] for e in r.json()["events"]]) for r in ga4.requests]  # fmt: skip
    assert shapes == [("a", None, ["m1", "m3"]), ("b", None, ["m2"]), ("b", "u9", ["m4"])]


# -- what GA4 would drop silently: refused here, per event, naming the rule and the field

REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "reserved name": ({"event": "session_start"}, "GA4 NAME_RESERVED: name: 'session_start'"),
    "starts with a digit": ({"event": "1st Purchase"}, "GA4 NAME_INVALID: name: '1st_purchase'"),
    "reserved prefix": ({"event": "google_thing"}, "GA4 NAME_RESERVED: name: 'google_thing'"),
    "name too long": ({"event": "x" * 41}, "GA4 NAME_INVALID: name:"),
    "object param": ({"properties": {"plan": {"tier": 1}}}, "GA4 VALUE_INVALID: params.plan: is an object"),
    "null param": ({"properties": {"plan": None}}, "GA4 VALUE_INVALID: params.plan: is null"),
    "long value": ({"properties": {"note": "n" * 101}}, "GA4 VALUE_OUT_OF_BOUNDS: params.note: 101"),
    "bad param name": ({"properties": {"my-param": 1}}, "GA4 NAME_INVALID: params.my-param:"),
    "too many params": ({"properties": {f"p{i}": i for i in range(24)}},
                        "GA4 EXCEEDED_MAX_ENTITIES: params: 26 parameters"),
    "older than 72 h": ({"timestamp": now_iso(hours_ago=73)},
                        "GA4 VALUE_OUT_OF_BOUNDS: timestamp_micros: the event is more than 72 hours"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
async def test_what_ga4_would_drop_is_discarded_with_the_rule_and_the_field(
    ga4: FakeGa4, http: HttpClient, case: str
) -> None:
    fields, reason = REFUSED[case]
    attempt = await make(ga4, http).deliver([ev(1), ev(2, **fields), ev(3)])
    assert isinstance(attempt.outcome, Delivered)
    refused = attempt.per_event[2]
    assert isinstance(refused, Discard)
    assert refused.reason.startswith(reason), refused.reason
    assert "GA4 would accept the request and drop this event silently" in refused.reason
    assert set(attempt.per_event) == {2}
    assert [e["params"]["message_id"] for e in ga4.accepted] == ["m1", "m3"]
    assert ga4.dropped == []  # nothing reached GA4 that it would drop


async def test_a_long_page_location_is_allowed(ga4: FakeGa4, http: HttpClient) -> None:
    page = {"url": "https://x.test/" + "a" * 900}
    body = {"type": "page", "anonymousId": "a", "messageId": "m1", "timestamp": now_iso(),
            "context": {"page": page}}  # fmt: skip
    attempt = await make(ga4, http).deliver([OutboundEvent(1, "m1", 0, orjson.dumps(body))])
    assert isinstance(attempt.outcome, Delivered)
    assert len(ga4.accepted) == 1


async def test_user_property_limits(ga4: FakeGa4, http: HttpClient) -> None:
    over = ActionConfig(name="custom_event", mapping={"user_properties": {"@path": "$.traits"}})
    destination = make(ga4, http, (over,))
    ok = ev(1, traits={"tier": "gold"})
    long_name = ev(2, traits={"a_very_long_user_property_name": "x"})
    reserved = ev(3, traits={"first_open_time": 1})
    attempt = await destination.deliver([ok, long_name, reserved])
    assert attempt.per_event[2].reason.startswith(  # type: ignore[union-attr]
        "GA4 NAME_INVALID: user_properties.a_very_long_user_property_name"
    )
    assert attempt.per_event[3].reason.startswith(  # type: ignore[union-attr]
        "GA4 NAME_RESERVED: user_properties.first_open_time"
    )
    [got] = ga4.accepted
    assert got["user_properties"] == {"tier": {"value": "gold"}}


# -- answers


async def test_the_api_secret_never_reaches_the_exchange(ga4: FakeGa4, http: HttpClient) -> None:
    ga4.script = always(500, body=f"echo {SECRET}".encode())
    attempt = await make(ga4, http).deliver([ev(1)])
    assert isinstance(attempt.outcome, Retry)
    stored = orjson.dumps([attempt.exchange.request, attempt.exchange.response]).decode()
    assert SECRET not in stored
    assert "api_secret=%5Bredacted%5D" in str(attempt.exchange.request["url"]) or (
        "api_secret=[redacted]" in str(attempt.exchange.request["url"])
    )
    assert "measurement_id=G-TEST1234" in str(attempt.exchange.request["url"])
    assert attempt.outcome.reason.startswith("GA4 500:")


@pytest.mark.parametrize(
    ("reply", "kind", "after"),
    [(Reply(429, b"slow down", {"Retry-After": "9"}), Retry, 9.0),
     (Reply(503, b""), Retry, None), (Reply(400, b"bad"), Discard, None),
     (Reply(204, b""), Delivered, None)],
)  # fmt: skip
async def test_answers(
    ga4: FakeGa4, http: HttpClient, reply: Reply, kind: type, after: float | None
) -> None:
    ga4.script = lambda _r, _i: reply
    attempt = await make(ga4, http).deliver([ev(1)])
    assert isinstance(attempt.outcome, kind)
    if isinstance(attempt.outcome, Retry):
        assert attempt.outcome.after_secs == after
        assert attempt.outcome.reason.startswith(f"GA4 {reply.status}")
    if isinstance(attempt.outcome, Discard):
        assert attempt.outcome.reason == "GA4 400: bad"


async def test_a_wrong_secret_is_dropped_silently_by_ga4_as_the_fake_shows(
    ga4: FakeGa4, http: HttpClient
) -> None:
    ga4.api_secret = "another"
    attempt = await make(ga4, http).deliver([ev(1)])
    assert isinstance(attempt.outcome, Delivered)  # GA4 says 204 ...
    assert ga4.accepted == [] and ga4.dropped[0][1] == "unknown api_secret"  # ... and drops it


# -- test connection: the debug endpoint


async def test_test_request_goes_to_the_debug_endpoint(ga4: FakeGa4, http: HttpClient) -> None:
    destination = make(ga4, http)
    [request] = destination.test_request([ev(1), ev(2)])
    assert request.url.startswith(f"{ga4.url}/debug/mp/collect?")
    assert request.secret_query == frozenset({"api_secret"})
    assert len(orjson.loads(request.body)["events"]) == 2


def test_read_test_answer_shows_gas_validation_messages() -> None:
    body = {"validationMessages": [{"fieldPath": "events[0].name", "validationCode": "NAME_INVALID",
            "description": "Event at index: [0] has invalid name [_bad]."}]}  # fmt: skip
    answer = HttpResponse(200, {}, orjson.dumps(body))
    assert Ga4.read_test_answer(answer) == [
        "events[0].name: Event at index: [0] has invalid name [_bad]. (NAME_INVALID)"
    ]
    assert Ga4.read_test_answer(HttpResponse(200, {}, b'{"validationMessages":[]}')) == []
    assert Ga4.read_test_answer(HttpResponse(502, {}, b"gateway")) == ["GA4 502: gateway"]


async def test_validate_reports_local_refusals_and_the_debug_servers_messages(
    ga4: FakeGa4, http: HttpClient
) -> None:
    destination = make(ga4, http)
    assert await destination.validate([ev(1)]) == []
    assert ga4.debug_requests == 1 and ga4.accepted == []  # validated, not recorded
    lines = await destination.validate([ev(2, event="session_start")])
    assert len(lines) == 1 and "GA4 NAME_RESERVED: name: 'session_start'" in lines[0]


async def test_the_debug_servers_messages_come_back(ga4: FakeGa4, http: HttpClient) -> None:
    destination = make(ga4, http)
    [request] = destination.test_request([ev(1)])
    bad = orjson.loads(request.body)
    bad["events"][0]["name"] = "_bad"
    sent = await http.send(
        type(request)(request.method, request.url, request.headers, orjson.dumps(bad)), 5.0
    )
    [line] = Ga4.read_test_answer(sent)
    assert line.startswith("events[0].name: Event at index: [0] has invalid name [_bad].")
    assert line.endswith("(NAME_INVALID)")


# -- the workspace's overrides


async def test_workspace_override_of_a_presets_mapping(ga4: FakeGa4, http: HttpClient) -> None:
    override = ActionConfig(
        name="custom_event",
        mapping={"client_id": {"@path": "$.context.device.id"},
                 "params": {"title": {"@path": "$.properties.title"}}},
    )  # fmt: skip
    destination = make(ga4, http, (override,))
    with_device = ev(1, context={"device": {"id": "dev-7"}})
    attempt = await destination.deliver([with_device, ev(2)])
    assert ga4.requests[0].json()["client_id"] == "dev-7"
    assert ga4.accepted[0]["params"] == {"title": "Intro"}
    missing = attempt.per_event[2]
    assert isinstance(missing, Discard)
    assert missing.reason == (
        "missing required field client_id (mapped from $.context.device.id) for action custom_event"
    )


def test_a_malformed_override_names_its_place(http: HttpClient) -> None:
    settings = Ga4.settings_model.model_validate({"measurement_id": MID, "api_secret": SECRET})
    bad = ActionConfig(name="page_view", mapping={"name": {"@nope": 1}})
    with pytest.raises(MappingError, match=r"destination ga4.*name"):
        Ga4("ga4", settings, Context(http, 5.0, 25, (bad,)))


def test_settings_refuse_what_is_not_a_measurement_id() -> None:
    with pytest.raises(ValueError, match="is not a GA4 measurement ID") as caught:
        Ga4.settings_model.model_validate(
            {"measurement_id": "s3cr3t-in-wrong-field", "api_secret": "x"}
        )
    assert "s3cr3t-in-wrong-field" not in str(caught.value).split("input_value")[0]
    with pytest.raises(ValueError, match="query or fragment"):
        Ga4.settings_model.model_validate(
            {"measurement_id": MID, "api_secret": "x", "endpoint": "https://g.test/?api_secret=1"}
        )


# -- through the delivery engine: exactly the refused events discarded, the rest once


async def test_partial_batch_through_the_engine(make_pipeline: Any, ga4: FakeGa4) -> None:
    destination = {"name": "ga", "type": "ga4", "sources": ["website"],
                   "settings": {"measurement_id": MID, "api_secret": SECRET, "endpoint": ga4.url},
                   "delivery": {**FAST, "batch_max_events": 10}}  # fmt: skip
    pipeline: Pipeline = await make_pipeline([destination])
    records = [record(type="track", event="session_start" if i in (3, 7) else "Video Played",
                      anonymousId="a1", timestamp=now_iso(), properties={"i": i})
               for i in range(10)]  # fmt: skip
    ids = await pipeline.send(records)
    bad = [ids[3], ids[7]]
    good = [m for m in ids if m not in bad]
    await pipeline.wait_states("ga", good, EventState.DELIVERED, within=30)
    await pipeline.wait_states("ga", bad, EventState.DISCARDED, within=30)
    await settled(pipeline, "ga")
    assert sorted(e["params"]["message_id"] for e in ga4.accepted) == sorted(good)
    rows = await pipeline.ledger("ga", bad[0])
    assert "GA4 NAME_RESERVED: name: 'session_start'" in str(rows[-1])


def test_secret_query_values_are_redacted_in_failures_too() -> None:
    from headwater.delivery.http import HttpFailure, HttpRequest, exchange

    request = HttpRequest("POST", f"https://g.test/mp/collect?measurement_id={MID}&api_secret={SECRET}",
                          {}, b"{}", secret_query=frozenset({"api_secret"}))  # fmt: skip
    kept = exchange(request, HttpFailure("connect", f"refused for ...api_secret={SECRET}"))
    stored = orjson.dumps([kept.request, kept.response]).decode()
    assert SECRET not in stored and "[redacted]" in stored
    plain = HttpRequest("POST", "https://g.test/x?a=1", {}, b"")  # without secret_query: as before
    assert exchange(plain, HttpFailure("connect", "no")).request["url"] == "https://g.test/x?a=1"
