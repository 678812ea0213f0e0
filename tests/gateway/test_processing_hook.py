"""The gateway with a tracking plan: what a request is answered when the processor blocks
events, and when it cannot keep them."""

from __future__ import annotations

import json
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


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"d": value}
    return value


@pytest.mark.parametrize("plan", [False, True], ids=["plain source", "source with a plan"])
async def test_an_event_too_deep_to_store_is_refused_alone(make_api: MakeApi, plan: bool) -> None:
    api = await make_api(tracking_plans=[PLAN] if plan else [])
    deep = {**track("Order Completed", "deep-1"), "properties": {"x": nested(300)}}
    body = json.dumps({"batch": [track("Order Completed", "fine-1"), deep]}).encode()
    answer = await api.post("/v1/batch", body)
    assert answer.status_code == 200, answer.text
    [refusal] = answer.json()["rejected"]
    assert refusal["index"] == 1 and refusal["code"] == "invalid_event"
    assert "255 levels" in refusal["message"]
    assert [e["messageId"] for e in await api.stored()] == ["fine-1"]


async def test_a_blocked_event_obeys_the_size_limit(make_api: MakeApi) -> None:
    api = await make_api(tracking_plans=[PLAN])
    big = {**track("Debug Ping", "big-1"), "properties": {"blob": "x" * 40_000}}
    answer = await api.post("/v1/batch", {"batch": [big]})
    assert answer.status_code == 200
    assert answer.json()["rejected"][0]["code"] == "event_too_large"
    assert await api.app.protocols.blocked("website", 0, None, 10) == []


FORWARDING = {
    **PLAN,
    "enforcement": {"unplanned_events": "block", "on_violation": "block",
                    "forward_blocked_to": "shop", "forward_violations_to": "shop"},
    "rules": [{"type": "TRACK", "key": "Order Completed", "jsonSchema": {
        "type": "object", "properties": {"properties": {
            "type": "object", "required": ["order_id"]}}}}],
}  # fmt: skip


async def test_forwarded_events_count_for_the_source_they_went_to(make_api: MakeApi) -> None:
    api = await make_api(tracking_plans=[FORWARDING])
    batch = [  # the forwarded events come in the middle of the request's records
        {**track("Order Completed", "good-1"), "properties": {"order_id": "o1"}},
        {**track("Order Completed", "bad-1"), "properties": {}},
        {**track("Order Completed", "good-2"), "properties": {"order_id": "o2"}},
    ]
    answer = await api.post("/v1/batch", {"batch": batch})
    assert answer.status_code == 200
    stored = {e["messageId"]: e for e in await api.stored()}
    forwarded = [e for e in stored.values() if e["event"] == "Order Completed"
                 and not e["messageId"].startswith("good")]  # fmt: skip
    assert len(forwarded) == 1 and forwarded[0]["messageId"].startswith("blk-")
    assert forwarded[0]["context"]["protocols"]["blocked_message_id"] == "bad-1"
    stats = api.app.stats.received
    assert stats["website"] == 2  # good-1, good-2
    assert stats["shop"] == 2  # the forwarded copy and one Violation Generated


async def test_a_forwarded_blocked_event_can_be_resent_to_its_own_source(
    make_api: MakeApi,
) -> None:
    api = await make_api(tracking_plans=[FORWARDING])
    bad = {**track("Order Completed", "bad-2"), "properties": {}}
    assert (await api.post("/v1/track", bad)).status_code == 200
    admin = api.app.admin
    assert admin is not None
    allowing = {**FORWARDING, "enforcement": {"on_violation": "allow"}}
    admin.put_plan("shop", allowing)
    result = await admin.resend_blocked("website", 0, None)
    assert (result["resent"], result["alreadyInLog"]) == (1, 0)
    assert api.app.log is not None
    found = await api.app.log.get("bad-2")
    assert found is not None and found.source == "website"
    assert await api.app.protocols.blocked("website", 0, None, 10) == []
