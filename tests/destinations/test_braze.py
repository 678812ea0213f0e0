"""The braze destination against the fake Braze (tests/fakes/braze.py): default mappings of
identify, track and Order Completed, 75 per array, Braze's answers (partial errors, 400,
401/403, 429 with X-RateLimit-*, 5xx), workspace overrides, and partial batches through
the real delivery engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpClient
from headwater.delivery.outcomes import Delivered, Discard, EventState, Retry
from headwater.destinations.base import Context
from headwater.destinations.braze import Braze
from headwater.mapping.actions import ActionConfig
from tests.delivery.conftest import FAST, Pipeline, make_pipeline
from tests.delivery.conftest import event as record
from tests.delivery.test_partial import settled
from tests.fakes import always
from tests.fakes.braze import FakeBraze

__all__ = ["make_pipeline"]  # the in-process pipeline fixture, for the engine tests

KEY = "braze-s3cret-test"
APP = "3f2b6c1e-1111-4222-8333-944445555666"
TS = "2024-05-01T10:00:00.000Z"


def ev(offset: int, **fields: Any) -> OutboundEvent:
    body = {"type": "track", "event": "Video Played", "userId": "u1", "messageId": f"m{offset}",
            "timestamp": TS, "properties": {"title": "Intro"}, **fields}  # fmt: skip
    return OutboundEvent(offset, body["messageId"], 0, orjson.dumps(body))


@pytest.fixture
def braze() -> Iterator[FakeBraze]:
    fake = FakeBraze(KEY)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def make(
    fake: FakeBraze,
    http: HttpClient,
    actions: tuple[ActionConfig, ...] | None = None,
    key: str = KEY,
    app_id: str | None = APP,
) -> Braze:
    settings = Braze.settings_model.model_validate(
        {"api_key": key, "endpoint": fake.url, "app_id": app_id}
    )
    return Braze("braze", settings, Context(http, 5.0, 75, actions))


def order(offset: int, products: list[dict[str, Any]], **fields: Any) -> OutboundEvent:
    props = {"order_id": "o1", "currency": "eur", "products": products}
    return ev(offset, event="Order Completed", properties=props, **fields)


# -- default mappings


async def test_a_track_is_an_event(braze: FakeBraze, http: HttpClient) -> None:
    attempt = await make(braze, http).deliver([ev(1, context={"traits": {"email": "a@x.test"}})])
    assert isinstance(attempt.outcome, Delivered) and attempt.outcome.status == 201
    [request] = braze.requests
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.json() == {"events": [{
        "external_id": "u1", "email": "a@x.test", "app_id": APP, "name": "Video Played",
        "time": TS, "properties": {"title": "Intro", "message_id": "m1"},
    }]}  # fmt: skip


async def test_an_identify_sets_attributes(braze: FakeBraze, http: HttpClient) -> None:
    traits = {"email": "a@x.test", "firstName": "Ada", "lastName": "L", "plan": "pro",
              "address": {"city": "Paris"}, "avatar": "https://i.test/a.png"}  # fmt: skip
    body = {"type": "identify", "userId": "u1", "messageId": "m1", "traits": traits,
            "context": {"location": {"country": "FR", "latitude": 48.8, "longitude": 2.3}}}  # fmt: skip
    attempt = await make(braze, http, app_id=None).deliver(
        [OutboundEvent(1, "m1", 0, orjson.dumps(body))]
    )
    assert isinstance(attempt.outcome, Delivered)
    [attrs] = braze.accepted["attributes"]
    assert attrs == {
        **traits, "external_id": "u1", "first_name": "Ada", "last_name": "L",
        "home_city": "Paris", "country": "FR", "image_url": "https://i.test/a.png",
        "current_location": {"latitude": 48.8, "longitude": 2.3},
    }  # fmt: skip


async def test_order_completed_is_one_purchase_per_product(
    braze: FakeBraze, http: HttpClient
) -> None:
    products: list[dict[str, Any]] = [
        {"product_id": "p1", "price": 10, "quantity": 2},
        {"product_id": 7, "price": 5.5},
    ]
    attempt = await make(braze, http).deliver([order(1, products)])
    assert isinstance(attempt.outcome, Delivered)
    assert braze.accepted["events"] == []
    props = {"order_id": "o1", "currency": "eur", "message_id": "m1"}
    assert braze.accepted["purchases"] == [
        {"external_id": "u1", "app_id": APP, "product_id": "p1", "price": 10, "currency": "EUR",
         "quantity": 2, "time": TS, "properties": props},
        {"external_id": "u1", "app_id": APP, "product_id": "7", "price": 5.5, "currency": "EUR",
         "quantity": 1, "time": TS, "properties": props},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("event", "reason"),
    [(order(1, []), "Braze would refuse: products: an Order Completed without products"),
     (order(1, [{"product_id": "p"}]), "Braze would refuse: products[0].price: Braze needs it"),
     (ev(1, userId=None, anonymousId="a"), "missing required field external_id or braze_id or user_alias or email"),
     (order(1, [{"product_id": "p", "price": 1}] * 76), "Braze would refuse: products: 76")],
)  # fmt: skip
async def test_what_braze_cannot_take_is_not_sent(
    braze: FakeBraze, http: HttpClient, event: OutboundEvent, reason: str
) -> None:
    attempt = await make(braze, http).deliver([event, ev(2)])
    assert isinstance(attempt.per_event[1], Discard)
    assert attempt.per_event[1].reason.startswith(reason), attempt.per_event[1].reason
    assert [e["properties"]["message_id"] for e in braze.accepted["events"]] == ["m2"]
    assert braze.accepted["purchases"] == []


# -- batching


async def test_at_most_75_objects_per_array(braze: FakeBraze, http: HttpClient) -> None:
    products = [{"product_id": f"p{i}", "price": 1} for i in range(40)]
    events = [ev(i) for i in range(1, 74)] + [order(74, products), order(75, products)]
    attempt = await make(braze, http).deliver(events)
    assert isinstance(attempt.outcome, Delivered), attempt.outcome
    sizes = [{k: len(v) for k, v in r.json().items()} for r in braze.requests]
    assert sizes == [{"events": 73, "purchases": 40}, {"purchases": 40}]
    assert len(braze.accepted["events"]) == 73 and len(braze.accepted["purchases"]) == 80


# -- answers


async def test_partial_errors_discard_exactly_the_named_objects(
    braze: FakeBraze, http: HttpClient
) -> None:
    braze.refuse = lambda array, obj: (
        "'name' is invalid" if obj.get("properties", {}).get("title") == "bad" else None
    )
    events = [ev(1), ev(2, properties={"title": "bad"}), ev(3), ev(4, properties={"title": "bad"})]
    attempt = await make(braze, http).deliver(events)
    assert isinstance(attempt.outcome, Delivered)
    assert attempt.per_event == {
        2: Discard("Braze 201 invalid object: 'name' is invalid (events[1])", 201),
        4: Discard("Braze 201 invalid object: 'name' is invalid (events[3])", 201),
    }
    assert [e["properties"]["message_id"] for e in braze.accepted["events"]] == ["m1", "m3"]


async def test_a_400_naming_every_object_discards_each_with_its_reason(
    braze: FakeBraze, http: HttpClient
) -> None:
    braze.refuse = lambda _a, _o: "'time' is not valid"
    attempt = await make(braze, http).deliver([ev(1), ev(2)])
    assert isinstance(attempt.outcome, Discard) and attempt.outcome.status == 400
    assert attempt.outcome.reason.startswith("Braze 400: Valid data must be provided")
    assert attempt.per_event == {
        1: Discard("Braze 400 invalid object: 'time' is not valid (events[0])", 400),
        2: Discard("Braze 400 invalid object: 'time' is not valid (events[1])", 400),
    }


async def test_a_rejected_key_discards_and_names_the_setting(
    braze: FakeBraze, http: HttpClient
) -> None:
    attempt = await make(braze, http, key="wrong-key").deliver([ev(1)])
    assert isinstance(attempt.outcome, Discard) and attempt.outcome.status == 401
    assert attempt.outcome.reason.startswith("Braze 401: Invalid API key")
    assert "check api_key" in attempt.outcome.reason
    assert "wrong-key" not in orjson.dumps(attempt.exchange.request).decode()
    braze.forbidden = True
    attempt = await make(braze, http).deliver([ev(1)])
    assert isinstance(attempt.outcome, Discard) and attempt.outcome.status == 403
    assert Braze.key_settings == ("api_key", "endpoint") and Braze.vendor == "Braze"


async def test_429_retries_after_the_rate_limit_reset(braze: FakeBraze, http: HttpClient) -> None:
    braze.throttle(1, reset_in_secs=30)
    attempt = await make(braze, http).deliver([ev(1)])
    assert isinstance(attempt.outcome, Retry) and attempt.outcome.status == 429
    assert attempt.outcome.after_secs is not None and 25 <= attempt.outcome.after_secs <= 31
    assert attempt.outcome.reason.startswith("Braze 429 rate limited (3000 requests per window")
    assert attempt.outcome.reason.endswith("API rate limit exceeded")
    attempt = await make(braze, http).deliver([ev(1)])  # the throttle is over
    assert isinstance(attempt.outcome, Delivered)


async def test_5xx_and_unparseable_answers(braze: FakeBraze, http: HttpClient) -> None:
    braze.script = always(503, body=b"<html>busy</html>")
    attempt = await make(braze, http).deliver([ev(1)])
    assert attempt.outcome == Retry("Braze 503: <html>busy</html>", 503, None)
    braze.script = always(422, body=b"x" * 300)
    attempt = await make(braze, http).deliver([ev(1)])
    assert isinstance(attempt.outcome, Discard)
    assert attempt.outcome.reason == "Braze 422: " + "x" * 200 + "…"


# -- the workspace's overrides


async def test_workspace_override_of_a_presets_mapping(braze: FakeBraze, http: HttpClient) -> None:
    alias = ActionConfig(
        name="track_event",
        mapping={"external_id": {"@path": "$.no_such"},
                 "user_alias": {"alias_name": {"@path": "$.anonymousId"}, "alias_label": "anon"},
                 "time": {"@path": "$.receivedAt"}},
    )  # fmt: skip
    event = ev(1, userId=None, anonymousId="a-9", receivedAt="2024-05-01T10:00:01.000Z")
    await make(braze, http, (alias,)).deliver([event])
    [got] = braze.accepted["events"]
    assert got["user_alias"] == {"alias_name": "a-9", "alias_label": "anon"}
    assert got["_update_existing_only"] is True and "external_id" not in got
    assert got["time"] == "2024-05-01T10:00:01.000Z"


def test_settings_refuse_a_key_in_app_id_and_a_query_in_endpoint() -> None:
    with pytest.raises(ValueError, match="if this is the REST API key, put it in api_key"):
        Braze.settings_model.model_validate({"api_key": "k", "app_id": "not-a-uuid"})
    with pytest.raises(ValueError, match="query or fragment"):
        Braze.settings_model.model_validate({"api_key": "k", "endpoint": "https://b.test/?k=1"})
    settings = Braze.settings_model.model_validate(
        {"api_key": "k", "endpoint": "https://rest.fra-01.braze.eu/users/track"}
    )
    assert settings.endpoint == "https://rest.fra-01.braze.eu"


# -- through the delivery engine


def _braze_dest(url: str, **delivery: Any) -> dict[str, Any]:
    return {"name": "bz", "type": "braze", "sources": ["website"],
            "settings": {"api_key": KEY, "endpoint": url},
            "delivery": {**FAST, "batch_max_events": 10, **delivery}}  # fmt: skip


async def test_partial_batch_through_the_engine(make_pipeline: Any, braze: FakeBraze) -> None:
    braze.refuse = lambda _a, obj: "'name' is invalid" if obj["properties"].get("bad") else None
    pipeline: Pipeline = await make_pipeline([_braze_dest(braze.url)])
    records = [record(event="Video Played", timestamp=TS, properties={"bad": i in (2, 5)})
               for i in range(10)]  # fmt: skip
    ids = await pipeline.send(records)
    bad = [ids[2], ids[5]]
    good = [m for m in ids if m not in bad]
    await pipeline.wait_states("bz", good, EventState.DELIVERED, within=30)
    await pipeline.wait_states("bz", bad, EventState.DISCARDED, within=30)
    await settled(pipeline, "bz")
    delivered = [e["properties"]["message_id"] for e in braze.accepted["events"]]
    assert sorted(delivered) == sorted(good)  # each once
    rows = await pipeline.ledger("bz", bad[0])
    assert "Braze 201 invalid object: 'name' is invalid" in str(rows[-1])


async def test_throttling_through_the_engine_delivers_after_the_reset(
    make_pipeline: Any, braze: FakeBraze
) -> None:
    braze.throttle(1, reset_in_secs=1)
    pipeline: Pipeline = await make_pipeline([_braze_dest(braze.url)])
    ids = await pipeline.send([record(event="Video Played", timestamp=TS) for _ in range(3)])
    await pipeline.wait_states("bz", ids, EventState.DELIVERED, within=60)
    assert braze.requests[0].status == 429
    assert sorted(e["properties"]["message_id"] for e in braze.accepted["events"]) == sorted(ids)
