"""analytics-python → ``headwater serve`` → the mixpanel destination → the fake Mixpanel:
each call arrives in Mixpanel's documented shape, its ``$insert_id`` the messageId."""

from __future__ import annotations

import time
from typing import Any

import pytest
from segment.analytics import Client  # type: ignore[import-untyped]

from tests.e2e.conftest import WRITE_KEY
from tests.fakes.mixpanel import FakeMixpanel

TOKEN, SECRET = "mp-e2e-token-0001", "mp-e2e-secret-0002"


def wait(condition: Any, what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within}s")
        time.sleep(0.05)


@pytest.mark.e2e
def test_sdk_events_arrive_in_mixpanel(make_server: Any) -> None:
    mp = FakeMixpanel(TOKEN, SECRET)
    with mp:
        server = make_server(
            "destinations:\n"
            "  - name: mixpanel\n    type: mixpanel\n    sources: [website]\n"
            f"    settings: {{endpoint: '{mp.url}', project_token: '{TOKEN}',"
            f" api_secret: '{SECRET}'}}\n"
        )
        client = Client(WRITE_KEY, host=server.url, sync_mode=True, max_retries=2)
        user, anon = "user-4242", "anon-4242-e2e"
        ok1, track = client.track(user, "Signed Up", {"plan": "pro"}, anonymous_id=anon)
        ok2, page = client.page(user, name="Pricing", anonymous_id=anon)
        ok3, _ = client.identify(user, {"email": "ada@example.com", "plan": "pro"})
        ok4, _ = client.group(user, "acme-inc", {"seats": 12})
        assert ok1 and ok2 and ok3 and ok4

        wait(lambda: len(mp.records) >= 2 and mp.profiles and mp.group_profiles, "all calls")
        by_id = {r["properties"]["$insert_id"]: r for r in mp.records}
        assert set(by_id) == {track["messageId"], page["messageId"]}
        t = by_id[track["messageId"]]
        assert t["event"] == "Signed Up"
        props = t["properties"]
        assert (props["distinct_id"], props["$device_id"], props["$user_id"]) == (user, anon, user)
        assert props["plan"] == "pro" and isinstance(props["time"], int)
        assert by_id[page["messageId"]]["event"] == "Viewed Pricing"
        assert all(q.get("strict") == "1" for q in mp.queries)
        [profile] = mp.profiles
        assert profile["$distinct_id"] == user
        assert profile["$set"] == {"$email": "ada@example.com", "plan": "pro"}
        [group] = mp.group_profiles
        assert (group["$group_id"], group["$set"]) == ("acme-inc", {"seats": 12})
