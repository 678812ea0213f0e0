"""End to end: analytics-python -> ``headwater serve`` -> the braze destination -> the fake
Braze: identify as attributes, tracks as events, Order Completed as purchases, in Braze's
documented ``/users/track`` shape, each object carrying its messageId
(``properties.message_id``; attributes are idempotent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from segment.analytics import Client

from tests.e2e.conftest import WRITE_KEY
from tests.fakes.braze import FakeBraze

KEY = "braze-e2e-s3cret"
APP = "3f2b6c1e-1111-4222-8333-944445555666"


@pytest.fixture
def braze() -> Iterator[FakeBraze]:
    fake = FakeBraze(KEY)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def workspace(url: str) -> str:
    return (
        "destinations:\n"
        "  - name: crm\n    type: braze\n    sources: [website]\n"
        f"    settings: {{api_key: {KEY}, app_id: {APP}, endpoint: '{url}'}}\n"
    )


@pytest.mark.e2e
def test_identify_track_and_purchases_arrive_in_brazes_shape(
    make_server: Any, braze: FakeBraze
) -> None:
    server = make_server(workspace(braze.url))
    client = Client(WRITE_KEY, host=server.url, sync_mode=True)
    _, identify = client.identify(user_id="u1", traits={"email": "a@x.test", "firstName": "Ada",
                                                        "plan": "pro"})  # fmt: skip
    _, track = client.track(user_id="u1", event="Video Played", properties={"title": "Intro"})
    _, order = client.track(user_id="u1", event="Order Completed",
                            properties={"order_id": "o1", "currency": "EUR",
                                        "products": [{"product_id": "p1", "price": 10, "quantity": 2},
                                                     {"product_id": "p2", "price": 5}]})  # fmt: skip
    _, anonymous = client.track(anonymous_id="a1", event="Video Played")

    accepted = braze.accepted
    braze.wait_for(
        lambda _f: len(accepted["attributes"]) >= 1 and len(accepted["events"]) >= 1
        and len(accepted["purchases"]) >= 2, timeout=60,
    )  # fmt: skip
    for request in braze.requests:
        assert request.path == "/users/track"
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.status == 201

    [attrs] = accepted["attributes"]
    assert attrs["external_id"] == "u1" and attrs["app_id"] == APP
    assert (attrs["email"], attrs["first_name"], attrs["plan"]) == ("a@x.test", "Ada", "pro")

    [event] = accepted["events"]
    assert (event["external_id"], event["name"], event["app_id"]) == ("u1", "Video Played", APP)
    assert event["properties"] == {"title": "Intro", "message_id": track["messageId"]}
    assert event["time"].endswith("Z") and event["time"].startswith("20")

    assert [(p["product_id"], p["price"], p["quantity"], p["currency"])
            for p in accepted["purchases"]] == [("p1", 10, 2, "EUR"), ("p2", 5, 1, "EUR")]  # fmt: skip
    assert {p["properties"]["message_id"] for p in accepted["purchases"]} == {order["messageId"]}
    sent = [e["properties"]["message_id"] for e in accepted["events"]]
    assert anonymous["messageId"] not in sent  # no Braze identifier: not sent
    assert identify["messageId"]
