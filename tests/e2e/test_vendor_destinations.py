"""analytics-python -> a real ``headwater serve`` -> the customerio, hubspot, intercom and
slack fakes: the events arrive in each vendor's documented shape, dedupe keys = messageIds."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from segment.analytics import Client

from headwater.destinations.hubspot.encoder import dedupe_uuid
from tests.e2e.conftest import WRITE_KEY
from tests.fakes.customerio import FakeCustomerio
from tests.fakes.hubspot import FakeHubspot
from tests.fakes.intercom import FakeIntercom
from tests.fakes.slack import FakeSlack
from tests.fakes.vendor import VendorFake

pytestmark = pytest.mark.e2e


def settings_of(name: str, fake: Any) -> dict[str, Any]:
    if name == "customerio":
        return {"site_id": fake.site_id, "api_key": fake.api_key, "endpoint": fake.url}
    if name == "hubspot":
        return {"access_token": fake.token, "endpoint": fake.url, "hub_id": 42}
    if name == "intercom":
        return {"access_token": fake.token, "endpoint": fake.url}
    return {"webhook_url": fake.webhook_url, "templates": {"Order Completed": "{{messageId}} paid"}}


def check_customerio(fake: Any, ids: dict[str, str]) -> bool:
    events = {e["action"]: e for e in fake.accepted}
    if set(events) != {"identify", "event", "page"} or len(fake.accepted) != 3:
        return False
    assert events["event"]["id"] == ids["track"] and events["page"]["id"] == ids["page"]
    assert isinstance(events["event"]["timestamp"], int)
    assert events["identify"]["identifiers"] == {"id": "u-42"}
    return True


def check_hubspot(fake: Any, ids: dict[str, str]) -> bool:
    if len(fake.accepted) != 2:
        return False
    assert fake.contacts == {"a@x.io": {"email": "a@x.io", "firstname": "Ann"}}
    [ev] = fake.events
    assert ev["eventName"] == "pe42_order_completed" and ev["uuid"] == dedupe_uuid(ids["track"])
    assert ev["uuid"] == ids["track"]  # the SDK's messageIds are UUIDs
    return True


def check_intercom(fake: Any, ids: dict[str, str]) -> bool:
    if len(fake.accepted) != 2:
        return False
    [ev] = fake.events
    assert ev["metadata"]["message_id"] == ids["track"] and isinstance(ev["created_at"], int)
    assert [c["external_id"] for c in fake.contacts.values()] == ["u-42"]
    return True


def check_slack(fake: Any, ids: dict[str, str]) -> bool:
    return [m["text"] for m in fake.accepted] == [f"{ids['track']} paid"]


CHECKS: dict[str, tuple[Callable[[], VendorFake], Callable[[Any, dict[str, str]], bool]]] = {
    "customerio": (FakeCustomerio, check_customerio),
    "hubspot": (FakeHubspot, check_hubspot),
    "intercom": (FakeIntercom, check_intercom),
    "slack": (FakeSlack, check_slack),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_sdk_events_arrive_in_the_vendors_shape(make_server: Any, name: str) -> None:
    make_fake, check = CHECKS[name]
    with make_fake() as fake:
        destination = {"name": name, "type": name, "sources": ["website"],
                       "settings": settings_of(name, fake)}  # fmt: skip
        server = make_server("destinations:\n  - " + json.dumps(destination) + "\n")
        client = Client(WRITE_KEY, host=server.url, sync_mode=True)
        ids = {"identify": str(uuid.uuid4()), "track": str(uuid.uuid4()), "page": str(uuid.uuid4())}
        client.identify(
            "u-42", {"email": "a@x.io", "first_name": "Ann"}, message_id=ids["identify"]
        )
        client.track(
            "u-42",
            "Order Completed",
            {"revenue": 9.99},
            message_id=ids["track"],
            context={"traits": {"email": "a@x.io"}},
        )
        client.page(
            "u-42", name="Home", properties={"url": "https://x.io/"}, message_id=ids["page"]
        )
        client.flush()
        deadline = time.monotonic() + 60
        while not check(fake, ids):
            assert time.monotonic() < deadline, f"{name} got only {fake.accepted}"
            time.sleep(0.1)
