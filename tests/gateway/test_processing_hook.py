"""The gateway with a tracking plan: what a request is answered when the processor blocks
events, and when it cannot keep them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import MakeApi

PLAN = {
    "name": "shop",
    "sources": ["website"],
    "rules": [{"type": "TRACK", "key": "Order Completed", "jsonSchema": {}}],
    "enforcement": {"unplanned_events": "block"},
}


def track(name: str, message_id: str) -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": "u1", "messageId": message_id}


async def test_blocked_events_are_listed_in_the_answer_and_not_stored(make_api: MakeApi) -> None:
    api = await make_api(tracking_plans=[PLAN])
    answer = await api.post("/v1/batch", {"batch": [track("Order Completed", "ok-1"),
                                                    track("Debug Ping", "no-1")]})  # fmt: skip
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == 1
    assert [(b["index"], b["messageId"], b["code"]) for b in body["blocked"]] == [
        (1, "no-1", "unplanned_event")
    ]
    assert "not in tracking plan 'shop'" in body["blocked"][0]["message"]
    assert [e["messageId"] for e in await api.stored()] == ["ok-1"]


async def test_a_processor_that_cannot_keep_blocked_events_answers_503(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_api(tracking_plans=[PLAN])
    store = api.app.protocols

    async def broken(items: Any) -> list[int]:
        raise OSError("disk full")

    monkeypatch.setattr(store, "put_blocked", broken)
    answer = await api.post("/v1/batch", {"batch": [track("Order Completed", "ok-2"),
                                                    track("Debug Ping", "no-2")]})  # fmt: skip
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["code"] == "unavailable"
    assert "blocked events could not be kept (disk full)" in answer.json()["message"]

    monkeypatch.undo()  # the sender retries the whole batch once the store works again
    again = await api.post("/v1/batch", {"batch": [track("Order Completed", "ok-2"),
                                                   track("Debug Ping", "no-2")]})  # fmt: skip
    assert again.status_code == 200
    assert [e["messageId"] for e in await api.stored()] == ["ok-2"]  # stored once
    kept = await store.blocked("website", 0, None, 10)
    assert [b.message_id for b in kept] == ["no-2"]
