"""The hubspot destination against the fake HubSpot API, and its 207s through the engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from headwater.delivery.http import HttpClient
from headwater.delivery.outcomes import Delivered, Discard, EventState, Retry
from headwater.destinations.hubspot.encoder import dedupe_uuid
from tests.delivery.conftest import FAST, event, make_pipeline  # noqa: F401 (fixture)
from tests.destinations.conftest import outbound
from tests.destinations.vendor_helpers import vendor
from tests.fakes.hubspot import FakeHubspot

EMAIL = {"context": {"traits": {"email": "a@x.io"}}}


@pytest.fixture
def hubspot() -> Iterator[FakeHubspot]:
    with FakeHubspot() as fake:
        yield fake


def dest(fake: FakeHubspot, http: HttpClient, batch: int = 1, **settings: Any) -> Any:
    return vendor(
        "hubspot",
        {"access_token": fake.token, "endpoint": fake.url, "hub_id": 42, **settings},
        http,
        batch,
    )


async def test_track_is_a_custom_behavioral_event(hubspot: FakeHubspot, http: HttpClient) -> None:
    e = outbound(1, properties={"revenue": 9.99, "cart": {"size": 2}}, **EMAIL)
    attempt = await dest(hubspot, http).deliver([e])
    assert attempt.outcome == Delivered(204)
    assert hubspot.events == [{"eventName": "pe42_order_completed", "email": "a@x.io",
                               "occurredAt": "2024-05-01T10:00:00.000Z", "uuid": dedupe_uuid(e.message_id),
                               "properties": {"revenue": 9.99, "cart_size": 2}}]  # fmt: skip
    assert (
        dedupe_uuid("0b5a7b2e-0000-4000-8000-000000000001")
        == "0b5a7b2e-0000-4000-8000-000000000001"
    )


async def test_identify_upserts_the_contact_by_email(
    hubspot: FakeHubspot, http: HttpClient
) -> None:
    traits = {
        "email": " A@x.io",
        "first_name": "Ann",
        "address": {"city": "Oslo"},
        "lifecycle_stage": "Lead",
    }
    attempt = await dest(hubspot, http).deliver([outbound(1, type="identify", traits=traits)])
    assert attempt.outcome == Delivered(200)
    assert hubspot.accepted == [{"idProperty": "email", "id": "A@x.io", "properties": {
        "firstname": "Ann", "city": "Oslo", "lifecyclestage": "lead", "email": "A@x.io"}}]  # fmt: skip


async def test_identify_without_email_is_discarded_unsent(
    hubspot: FakeHubspot, http: HttpClient
) -> None:
    attempt = await dest(hubspot, http).deliver(
        [outbound(1, type="identify", traits={"name": "x"})]
    )
    assert hubspot.requests == []
    assert isinstance(attempt.outcome, Discard)
    assert attempt.outcome.reason.startswith("missing required field email")


async def test_an_event_without_a_qualified_name_is_discarded(
    hubspot: FakeHubspot, http: HttpClient
) -> None:
    attempt = await dest(hubspot, http, hub_id=None).deliver([outbound(1, **EMAIL)])
    assert hubspot.requests == []
    assert isinstance(attempt.outcome, Discard) and "(eventName)" in attempt.outcome.reason
    named = dest(hubspot, http, hub_id=None, event_names={"Order Completed": "pe7_bought"})
    assert (await named.deliver([outbound(2, **EMAIL)])).outcome == Delivered(204)
    assert hubspot.events[0]["eventName"] == "pe7_bought"


async def test_errors(hubspot: FakeHubspot, http: HttpClient) -> None:
    d = dest(hubspot, http)
    hubspot.reject_key = True
    rejected = await d.deliver([outbound(1, **EMAIL)])
    assert isinstance(rejected.outcome, Discard) and rejected.outcome.status == 401
    assert rejected.outcome.reason.startswith("HubSpot 401 EXPIRED_AUTHENTICATION: The OAuth token")
    hubspot.reject_key, hubspot.throttle = False, 1
    throttled = await d.deliver([outbound(2, **EMAIL)])
    assert throttled.outcome == Retry(
        "HubSpot 429 RATE_LIMITS: You have reached your secondly limit. (limit 110 per 10 s)",
        429,
        10.0,
    )


async def test_a_207_discards_exactly_the_refused_events(
    hubspot: FakeHubspot, http: HttpClient
) -> None:
    sent = [outbound(i, properties={"n": i, "bad": i == 2}, **EMAIL) for i in range(4)]
    hubspot.refuse = {'"bad":true'}
    attempt = await dest(hubspot, http, batch=4).deliver(sent)
    assert attempt.outcome == Delivered(207)
    assert list(attempt.per_event) == [sent[2].offset]
    assert attempt.per_event[sent[2].offset] == Discard(
        "HubSpot 207 VALIDATION_ERROR: refused by the test", 207
    )
    assert [e["properties"]["n"] for e in hubspot.events] == [0, 1, 3]


async def test_partial_contacts_through_the_engine(
    hubspot: FakeHubspot,
    make_pipeline: Any,  # noqa: F811
) -> None:
    hubspot.refuse = {"bad@x.io"}
    pipeline = await make_pipeline([{
        "name": "hs", "type": "hubspot", "sources": ["website"],
        "settings": {"access_token": hubspot.token, "endpoint": hubspot.url},
        "delivery": {**FAST, "batch_max_events": 10}}])  # fmt: skip
    emails = ["a@x.io", "bad@x.io", "c@x.io"]
    ids = await pipeline.send([event(type="identify", traits={"email": m}) for m in emails])
    await pipeline.wait_states("hs", [ids[0], ids[2]], EventState.DELIVERED, within=30)
    await pipeline.wait_states("hs", [ids[1]], EventState.DISCARDED, within=30)
    assert sorted(hubspot.contacts) == ["a@x.io", "c@x.io"]
    assert [i["id"] for i in hubspot.accepted] == ["a@x.io", "c@x.io"]  # each delivered once
