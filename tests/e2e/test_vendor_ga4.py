"""End to end: analytics-python -> ``headwater serve`` -> the ga4 destination -> the fake GA4.

Tracks and pages arrive at ``/mp/collect`` in GA4's documented shape (client_id, user_id,
events with GA4 names and params, timestamp_micros), each carrying its messageId in the
``message_id`` param; an event GA4 would drop silently never reaches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from segment.analytics import Client

from tests.e2e.conftest import WRITE_KEY
from tests.fakes.ga4 import FakeGa4

MID = "G-E2ETEST1"
SECRET = "ga4-e2e-s3cret"


@pytest.fixture
def ga4() -> Iterator[FakeGa4]:
    fake = FakeGa4(MID, SECRET)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def workspace(url: str) -> str:
    return (
        "destinations:\n"
        "  - name: analytics\n    type: ga4\n    sources: [website]\n"
        f"    settings: {{measurement_id: {MID}, api_secret: {SECRET}, endpoint: '{url}'}}\n"
        "    delivery: {batch_max_events: 25}\n"
    )


@pytest.mark.e2e
def test_tracks_and_pages_arrive_in_gas_shape(make_server: Any, ga4: FakeGa4) -> None:
    server = make_server(workspace(ga4.url))
    client = Client(WRITE_KEY, host=server.url, sync_mode=True)
    _, track = client.track(user_id="u1", anonymous_id="anon-1", event="Video Played",
                            properties={"title": "Intro", "secs": 12})  # fmt: skip
    _, order = client.track(anonymous_id="anon-1", event="Order Completed",
                            properties={"order_id": "o1", "revenue": 20, "currency": "EUR",
                                        "products": [{"product_id": "p1", "price": 20}]})  # fmt: skip
    _, page = client.page(anonymous_id="anon-2", name="Pricing",
                          context={"page": {"url": "https://x.test/pricing", "title": "Pricing"}})  # fmt: skip
    _, refused = client.track(anonymous_id="anon-1", event="session_start")
    _, identify = client.identify(user_id="u1", traits={"plan": "pro"})

    ga4.wait_for(lambda f: len(f.accepted) >= 3, timeout=60)
    by_id = {e["params"]["message_id"]: e for e in ga4.accepted}
    assert set(by_id) == {track["messageId"], order["messageId"], page["messageId"]}

    got = by_id[track["messageId"]]
    assert (got["client_id"], got["user_id"], got["name"]) == ("anon-1", "u1", "video_played")
    assert got["params"] == {"title": "Intro", "secs": 12, "engagement_time_msec": 1,
                             "message_id": track["messageId"]}  # fmt: skip
    assert isinstance(got["timestamp_micros"], int) and got["timestamp_micros"] > 1.7e15

    got = by_id[order["messageId"]]
    assert got["name"] == "purchase" and got["params"]["transaction_id"] == "o1"
    assert got["params"]["items"] == [{"item_id": "p1", "price": 20}]

    got = by_id[page["messageId"]]
    assert (got["client_id"], got["name"]) == ("anon-2", "page_view")
    assert got["params"]["page_location"] == "https://x.test/pricing"

    for request in ga4.requests:
        assert request.path == "/mp/collect"
        assert request.query == {"measurement_id": MID, "api_secret": SECRET}
    assert ga4.dropped == []  # what GA4 would drop was refused by Headwater instead
    sent = [e["params"]["message_id"] for r in ga4.requests for e in r.json()["events"]]
    assert refused["messageId"] not in sent and identify["messageId"] not in sent
