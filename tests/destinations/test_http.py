"""The http destination (Webhooks (Actions)): mapped payloads to any URL, end to end."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from headwater.delivery.http import REDACTED, HttpClient
from headwater.delivery.outcomes import Delivered, Discard, Filtered
from headwater.destinations.http import Http
from headwater.destinations.http.settings import HttpSettings
from tests.destinations.conftest import build, outbound, outbounds
from tests.fakes import FakeDestination


def http_dest(
    fake: FakeDestination, http: HttpClient, batch_events: int = 1, **settings: Any
) -> Any:
    return build("http", {"url": f"{fake.url}/api", **settings}, http, batch_events=batch_events)


async def test_by_default_the_whole_event_is_the_body(
    fake: FakeDestination, http: HttpClient
) -> None:
    event = outbound(1)
    attempt = await http_dest(fake, http).deliver([event])
    assert attempt.outcome == Delivered(200)
    [request] = fake.requests
    assert request.method == "POST" and request.path == "/api"
    assert request.json() == event.event
    assert request.headers["Content-Type"] == "application/json"
    assert HttpSettings(url="http://x.example/").mapping == {"@path": "$."}


async def test_a_mapping_shapes_the_body(fake: FakeDestination, http: HttpClient) -> None:
    mapping = {"id": {"@path": "$.userId"}, "what": {"@template": "did {{event}}"},
               "cents": {"@path": "$.properties.revenue"}, "source": "headwater"}  # fmt: skip
    destination = http_dest(fake, http, mapping=mapping, method="PUT",
                            headers={"X-Api-Token": "tok-1"})  # fmt: skip
    attempt = await destination.deliver([outbound(1)])
    [request] = fake.requests
    assert request.method == "PUT"
    assert request.json() == {"id": "u1", "what": "did Order Completed", "cents": 9.99,
                              "source": "headwater"}  # fmt: skip
    assert request.headers["X-Api-Token"] == "tok-1"
    assert attempt.exchange.request["headers"]["X-Api-Token"] == REDACTED  # type: ignore[index]


async def test_batch_sends_one_json_array(fake: FakeDestination, http: HttpClient) -> None:
    destination = http_dest(fake, http, batch_events=50, batch=True,
                            mapping={"m": {"@path": "$.messageId"}})  # fmt: skip
    assert destination.batch_events == 50
    sent = outbounds(3)
    attempt = await destination.deliver(sent)
    assert attempt.outcome == Delivered(200)
    [request] = fake.requests
    assert request.json() == [{"m": e.message_id} for e in sent]


async def test_without_batch_each_event_is_its_own_request(
    fake: FakeDestination, http: HttpClient
) -> None:
    destination = http_dest(fake, http, batch_events=50)
    assert destination.batch_events == 1  # the engine cuts batches of one
    sent = outbounds(2)
    await destination.deliver(sent)  # given two anyway, it still sends each alone
    assert [r.json()["messageId"] for r in fake.requests] == [e.message_id for e in sent]


async def test_signature_is_over_the_body(fake: FakeDestination, http: HttpClient) -> None:
    await http_dest(fake, http, shared_secret="s3cret-x", mapping={"a": 1}).deliver([outbound()])
    [request] = fake.requests
    expected = hmac.new(b"s3cret-x", request.body, hashlib.sha1).hexdigest()
    assert request.headers["X-Signature"] == expected


async def test_actions_choose_events_and_mappings(fake: FakeDestination, http: HttpClient) -> None:
    from headwater.destinations.base import Context
    from headwater.mapping.actions import ActionConfig

    actions = (
        ActionConfig(name="send", trigger='type = "track"'),
        ActionConfig(name="people", kind="send", trigger='type = "identify"',
                     inherit_mapping=False,
                     mapping={"email": {"@path": "$.traits.email"}}),
    )  # fmt: skip
    settings = HttpSettings(url=f"{fake.url}/api", mapping={"event": {"@path": "$.event"}})
    destination = Http("api", settings, Context(http, 5.0, 1, actions))
    tracked = await destination.deliver([outbound(1)])
    identified = await destination.deliver([outbound(2, type="identify", traits={"email": "e"})])
    skipped = await destination.deliver([outbound(3, type="page")])
    assert [r.json() for r in fake.requests] == [{"event": "Order Completed"}, {"email": "e"}]
    assert tracked.outcome == identified.outcome == Delivered(200)
    assert isinstance(skipped.outcome, Filtered)
    assert "no action's trigger matches (type=page" in skipped.outcome.reason


async def test_a_mapping_that_gives_nothing_is_discarded_unsent(
    fake: FakeDestination, http: HttpClient
) -> None:
    destination = http_dest(fake, http, mapping={"@path": "$.traits"})
    attempt = await destination.deliver([outbound(1)])
    assert fake.requests == []
    assert attempt.outcome == Discard("the mapping of action send gives nothing for this event")


def test_payloads_with_integers_beyond_64_bits_still_encode() -> None:
    from headwater.destinations.mapped import json_body

    assert orjson.loads(json_body({"n": 2**70})) == {"n": 2**70}
