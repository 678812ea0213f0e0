"""The customerio destination against the fake Customer.io Track API (v2 batch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from headwater.delivery.http import HttpClient
from headwater.delivery.outcomes import Delivered, Discard, EventState, Retry
from headwater.mapping.actions import ActionConfig
from tests.delivery.conftest import FAST, event, make_pipeline  # noqa: F401 (fixture)
from tests.destinations.conftest import outbound
from tests.destinations.vendor_helpers import vendor
from tests.fakes.customerio import FakeCustomerio


@pytest.fixture
def cio() -> Iterator[FakeCustomerio]:
    with FakeCustomerio() as fake:
        yield fake


def dest(fake: FakeCustomerio, http: HttpClient, batch: int = 10, actions: Any = None) -> Any:
    settings = {"site_id": fake.site_id, "api_key": fake.api_key, "endpoint": fake.url}
    return vendor("customerio", settings, http, batch, actions)


async def test_each_type_becomes_its_entity_in_one_batch(
    cio: FakeCustomerio, http: HttpClient
) -> None:
    sent = [
        outbound(
            1, type="identify", traits={"email": "a@x.io", "created_at": "2024-01-01T00:00:00Z"}
        ),
        outbound(2, properties={"revenue": 9.99}),
        outbound(
            3,
            type="page",
            userId=None,
            anonymousId="anon-1",
            context={"page": {"url": "https://x.io/p"}},
        ),
        outbound(4, type="screen", name="Home"),
        outbound(5, type="group", groupId="g1", traits={"name": "Acme"}),
    ]
    attempt = await dest(cio, http).deliver(sent)
    assert attempt.outcome == Delivered(200)
    assert len(cio.requests) == 1
    assert cio.accepted == [
        {"type": "person", "action": "identify", "identifiers": {"id": "u1"},
         "attributes": {"email": "a@x.io", "created_at": 1704067200}},
        {"type": "person", "action": "event", "identifiers": {"id": "u1"}, "name": "Order Completed",
         "attributes": {"revenue": 9.99}, "id": sent[1].message_id, "timestamp": 1714557600},
        {"type": "person", "action": "page", "identifiers": {"anonymous_id": "anon-1"}, "name": "https://x.io/p",
         "attributes": {"revenue": 9.99, "offset": 3}, "id": sent[2].message_id, "timestamp": 1714557600},
        {"type": "person", "action": "screen", "identifiers": {"id": "u1"}, "name": "Home",
         "attributes": {"revenue": 9.99, "offset": 4}, "id": sent[3].message_id, "timestamp": 1714557600},
        {"type": "object", "action": "identify", "identifiers": {"object_type_id": "1", "object_id": "g1"},
         "attributes": {"name": "Acme"}, "cio_relationships": [{"identifiers": {"id": "u1"}}]},
    ]  # fmt: skip


async def test_a_workspace_override_changes_the_event_name(
    cio: FakeCustomerio, http: HttpClient
) -> None:
    actions = (ActionConfig(name="track_event", mapping={"name": {"@template": "web: {{event}}"}}),)
    await dest(cio, http, actions=actions).deliver([outbound(1)])
    assert cio.accepted[0]["name"] == "web: Order Completed"


async def test_errors(cio: FakeCustomerio, http: HttpClient) -> None:
    d = dest(cio, http)
    cio.reject_key = True
    assert (await d.deliver([outbound(1)])).outcome == Discard(
        "Customer.io 401: Unauthorized request", 401
    )
    cio.reject_key, cio.throttle = False, 1
    throttled = await d.deliver([outbound(2)])
    assert throttled.outcome == Retry("Customer.io 429: rate limit exceeded", 429, 1.0)
    missing = await d.deliver([outbound(3, userId=None)])
    assert isinstance(missing.outcome, Discard)
    assert missing.outcome.reason.startswith("missing required field id or anonymous_id")


async def test_a_207_discards_exactly_the_refused_entries(
    cio: FakeCustomerio, http: HttpClient
) -> None:
    sent = [outbound(i, properties={"n": i, "bad": i in (1, 3)}) for i in range(5)]
    cio.refuse = {'"bad":true'}
    attempt = await dest(cio, http).deliver(sent)
    assert attempt.outcome == Delivered(207)
    assert sorted(attempt.per_event) == [sent[1].offset, sent[3].offset]
    assert attempt.per_event[sent[3].offset] == Discard(
        "Customer.io 207 invalid: attributes (entry 3): refused by the test", 207
    )
    assert [e["attributes"]["n"] for e in cio.events] == [0, 2, 4]


async def test_partial_batch_through_the_engine(cio: FakeCustomerio, make_pipeline: Any) -> None:  # noqa: F811
    cio.refuse = {'"bad":true'}
    pipeline = await make_pipeline([{
        "name": "cio", "type": "customerio", "sources": ["website"],
        "settings": {"site_id": cio.site_id, "api_key": cio.api_key, "endpoint": cio.url},
        "delivery": {**FAST, "batch_max_events": 10}}])  # fmt: skip
    ids = await pipeline.send([event(properties={"n": i, "bad": i == 2}) for i in range(6)])
    good = [m for i, m in enumerate(ids) if i != 2]
    await pipeline.wait_states("cio", good, EventState.DELIVERED, within=30)
    await pipeline.wait_states("cio", [ids[2]], EventState.DISCARDED, within=30)
    assert sorted(e["id"] for e in cio.events) == sorted(good)  # each delivered once
    assert len(cio.accepted) == 5
