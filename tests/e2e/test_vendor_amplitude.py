"""analytics-python → ``headwater serve`` → the amplitude destination → the fake Amplitude:
each call arrives in Amplitude's documented shape, its ``insert_id`` the messageId."""

from __future__ import annotations

import time
from typing import Any

import pytest
from segment.analytics import Client  # type: ignore[import-untyped]

from tests.e2e.conftest import WRITE_KEY
from tests.fakes.amplitude import FakeAmplitude

KEY = "amp-e2e-key-0001"


def wait(condition: Any, what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within}s")
        time.sleep(0.05)


@pytest.mark.e2e
def test_sdk_events_arrive_in_amplitude(make_server: Any) -> None:
    amp = FakeAmplitude(KEY)
    with amp:
        server = make_server(
            "destinations:\n"
            "  - name: amplitude\n    type: amplitude\n    sources: [website]\n"
            f"    settings: {{endpoint: '{amp.url}', api_key: '{KEY}'}}\n"
        )
        client = Client(WRITE_KEY, host=server.url, sync_mode=True, max_retries=2)
        user, anon = "user-4242", "anon-4242-e2e"
        ok1, track = client.track(user, "Order Completed", {"revenue": 19.99}, anonymous_id=anon)
        ok2, page = client.page(user, name="Pricing", anonymous_id=anon)
        ok3, ident = client.identify(user, {"plan": "pro"}, anonymous_id=anon)
        ok4, group = client.group(user, "acme-inc", {"seats": 12}, anonymous_id=anon)
        assert ok1 and ok2 and ok3 and ok4

        wait(lambda: len(amp.accepted) >= 2 and amp.identifies and amp.groups, "all calls")
        by_id = {e["insert_id"]: e for e in amp.accepted}
        assert set(by_id) == {track["messageId"], page["messageId"]}
        t = by_id[track["messageId"]]
        assert (t["event_type"], t["user_id"], t["device_id"]) == ("Order Completed", user, anon)
        assert t["event_properties"] == {"revenue": 19.99}
        assert isinstance(t["time"], int) and t["library"] == "analytics-python"
        assert by_id[page["messageId"]]["event_type"] == "Viewed Pricing"
        assert {"user_id": user, "device_id": anon, "user_properties": {"plan": "pro"}} in [
            {k: i.get(k) for k in ("user_id", "device_id", "user_properties")}
            for i in amp.identifies
        ]
        assert {
            "user_id": user,
            "device_id": anon,
            "groups": {"group": "acme-inc"},
        } in amp.identifies
        assert amp.groups == [
            {"group_type": "group", "group_value": "acme-inc", "group_properties": {"seats": 12}}
        ]
        assert set(amp.paths) == {"/2/httpapi", "/identify", "/groupidentify"}
        assert ident["messageId"] and group["messageId"]
