"""The intercom destination against the fake Intercom API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headwater.delivery.http import HttpClient
from headwater.delivery.outcomes import Delivered, Discard, Retry
from tests.destinations.conftest import outbound
from tests.destinations.vendor_helpers import vendor
from tests.fakes.intercom import FakeIntercom


@pytest.fixture
def intercom() -> Iterator[FakeIntercom]:
    with FakeIntercom() as fake:
        yield fake


def dest(fake: FakeIntercom, http: HttpClient) -> object:
    return vendor("intercom", {"access_token": fake.token, "endpoint": fake.url}, http)


async def test_track_is_a_data_event(intercom: FakeIntercom, http: HttpClient) -> None:
    event = outbound(
        1, properties={"revenue": 9.99, "currency": "EUR", "email": "a@x.io", "plan": "pro"}
    )
    attempt = await dest(intercom, http).deliver([event])  # type: ignore[attr-defined]
    assert attempt.outcome == Delivered(202)
    assert intercom.events == [{
        "event_name": "Order Completed", "user_id": "u1", "email": "a@x.io", "created_at": 1714557600,
        "metadata": {"plan": "pro", "price": {"amount": 999, "currency": "EUR"}, "message_id": event.message_id},
    }]  # fmt: skip
    assert intercom.requests[0].headers["Intercom-Version"] == "2.11"


async def test_identify_creates_then_updates_on_conflict(
    intercom: FakeIntercom, http: HttpClient
) -> None:
    d = dest(intercom, http)
    first = outbound(1, type="identify", traits={"email": "a@x.io", "name": "Ann"})
    again = outbound(2, type="identify", traits={"email": "a@x.io", "name": "Ann B"})
    assert (await d.deliver([first])).outcome == Delivered(200)  # type: ignore[attr-defined]
    assert (await d.deliver([again])).outcome == Delivered(200)  # type: ignore[attr-defined]
    [(contact_id, contact)] = intercom.contacts.items()
    assert contact["name"] == "Ann B" and contact["external_id"] == "u1"
    assert [(r.method, r.path) for r in intercom.requests][-3:] == [
        ("POST", "/contacts"),
        ("POST", "/contacts/search"),
        ("PUT", f"/contacts/{contact_id}"),
    ]


async def test_more_than_ten_metadata_keys_is_refused_locally(
    intercom: FakeIntercom, http: HttpClient
) -> None:
    event = outbound(1, properties={f"k{i}": i for i in range(11)})
    attempt = await dest(intercom, http).deliver([event])  # type: ignore[attr-defined]
    assert intercom.requests == []
    assert isinstance(attempt.outcome, Discard) and "(metadata)" in attempt.outcome.reason


async def test_errors(intercom: FakeIntercom, http: HttpClient) -> None:
    d = dest(intercom, http)
    intercom.reject_key = True
    rejected = await d.deliver([outbound(1)])  # type: ignore[attr-defined]
    assert rejected.outcome == Discard("Intercom 401 unauthorized: Access Token Invalid", 401)
    intercom.reject_key, intercom.throttle = False, 1
    throttled = await d.deliver([outbound(2)])  # type: ignore[attr-defined]
    assert throttled.outcome == Retry(
        "Intercom 429 rate_limit_exceeded: Exceeded rate limit (limit 10000 per minute)", 429, 3.0
    )
    missing = await d.deliver([outbound(3, userId=None)])  # type: ignore[attr-defined]
    assert isinstance(missing.outcome, Discard) and "user_id or email" in missing.outcome.reason
