"""``POST /api/v1/destinations/{name}/test`` and ``POST /api/v1/event-tester`` on the real app
in process, with a webhook and an http destination pointed at the fake destination server:
the admin token is needed, errors say what was wrong, secrets never come back, and a tested
event is neither in the log nor in the delivery ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from headwater.app import Headwater
from headwater.config.workspace import parse_workspace
from headwater.state.admin_token import AdminToken, _digest
from tests.fakes import FakeDestination

TOKEN = "hwa_destination_test_token_01234"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
KEY = "wk_tester_website_key_1"
SIGNING = "webhook-signing-secret-77"
API_KEY = "vendor-api-key-3f9c2"
ORDER_RULE = {
    "type": "TRACK", "key": "Order Completed",
    "jsonSchema": {"type": "object", "properties": {"properties": {
        "type": "object", "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"]}}},
}  # fmt: skip


def workspace(fake: FakeDestination) -> dict[str, Any]:
    return {
        "sources": [{"name": "website", "write_key": KEY}, {"name": "backend"}],
        "destinations": [
            {"name": "hook", "type": "webhook", "sources": ["website"],
             "settings": {"url": f"{fake.url}/hook", "shared_secret": SIGNING,
                          "headers": {"Authorization": f"Bearer {API_KEY}"}},
             "filters": [{"name": "Debug events", "if": 'match(event, "Debug *")',
                          "actions": [{"type": "DROP"}]}]},
            {"name": "api", "type": "http", "sources": ["website"],
             "settings": {"url": f"{fake.url}/api", "headers": {"X-Api-Key": API_KEY},
                          "mapping": {"id": {"@path": "$.userId"}, "what": {"@path": "$.event"},
                                      "order": {"@path": "$.properties.order_id"}}}},
            {"name": "sink", "type": "devsink", "sources": ["website"]},
            {"name": "other", "type": "devsink", "sources": ["backend"]},
        ],
        "tracking_plans": [{"name": "shop", "sources": ["website"], "rules": [ORDER_RULE],
                            "enforcement": {"on_violation": "block"}}],
        "transformations": [
            {"name": "fix-name", "source": "website", "if": 'event = "Order Done"',
             "rename_event": "Order Completed"},
            {"name": "hash-order", "destination": "api", "hash_properties": ["properties.order_id"]},
        ],
        "status": {"canary_enabled": False},
    }  # fmt: skip


@pytest.fixture
async def app(tmp_path: Path, fake: FakeDestination) -> AsyncIterator[Headwater]:
    hw = Headwater(parse_workspace(workspace(fake)), tmp_path,
                   admin_token=AdminToken(_digest(TOKEN), "env"))  # fmt: skip
    await hw.start()
    try:
        yield hw
    finally:
        await hw.stop()


@pytest.fixture
async def api(app: Headwater) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
        yield client


ORDER = {"type": "track", "event": "Order Done", "userId": "u7", "messageId": "order-1",
         "properties": {"order_id": "A-1", "revenue": 5}}  # fmt: skip


async def ledger_rows(app: Headwater) -> int:
    assert app.delivery is not None
    rows = await app.delivery.store.run(
        lambda db: db.conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
    )
    return int(rows)


async def test_both_routes_need_the_admin_token(api: httpx.AsyncClient) -> None:
    for path, body in (("/api/v1/destinations/hook/test", {}),
                       ("/api/v1/event-tester", {"source": "website", "event": ORDER})):  # fmt: skip
        response = await api.post(path, json=body)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"


async def test_sending_a_test_event_shows_request_and_answer_and_stores_nothing(
    api: httpx.AsyncClient, app: Headwater, fake: FakeDestination
) -> None:
    response = await api.post("/api/v1/destinations/hook/test", headers=ADMIN,
                              json={"event": ORDER, "send": True})  # fmt: skip
    assert response.status_code == 200, response.text
    doc = response.json()
    [received] = fake.requests
    assert received.path == "/hook" and received.headers["Authorization"] == f"Bearer {API_KEY}"
    assert doc["mode"] == "send" and doc["outcome"]["result"] == "delivered"
    [shown] = doc["requests"]
    assert orjson.loads(shown["request"]["body"]) == received.json()
    assert shown["response"]["status"] == 200
    assert API_KEY not in response.text and SIGNING not in response.text
    assert "not written to the log" in doc["note"]
    assert app.log is not None and await app.log.get("order-1") is None
    assert await ledger_rows(app) == 0


async def test_without_send_it_is_a_dry_run_of_a_sample(
    api: httpx.AsyncClient, fake: FakeDestination
) -> None:
    response = await api.post("/api/v1/destinations/api/test", headers=ADMIN)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["sample"] is True and doc["mode"] == "dry_run" and doc["sent"] is False
    assert fake.requests == []
    [action] = doc["mapping"]["actions"]
    assert action["decision"] == "built" and action["payload"]["id"] == "headwater-test-user"
    assert doc["requests"][0]["request"]["headers"]["X-Api-Key"] == "[redacted]"


async def test_a_filter_that_drops_the_event_is_named(api: httpx.AsyncClient) -> None:
    event = {**ORDER, "event": "Debug click"}
    doc = (await api.post("/api/v1/destinations/hook/test", headers=ADMIN,
                          json={"event": event, "send": True})).json()  # fmt: skip
    assert doc["outcome"]["result"] == "filtered" and "Debug events" in doc["outcome"]["reason"]


async def test_errors_say_what_was_wrong(api: httpx.AsyncClient) -> None:
    missing = await api.post("/api/v1/destinations/nope/test", headers=ADMIN, json={})
    assert missing.status_code == 404
    assert missing.json()["message"].startswith("no destination is named 'nope'")
    assert "hook" in missing.json()["message"]
    bad = await api.post("/api/v1/destinations/hook/test", headers=ADMIN,
                         json={"event": {"type": "track", "userId": "u1"}})  # fmt: skip
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_event"
    assert "'event'" in bad.json()["message"]  # the field a track call needs
    typed = await api.post("/api/v1/destinations/hook/test", headers=ADMIN,
                           json={"event": {"type": "nonsense", "userId": "u1"}})  # fmt: skip
    assert typed.status_code == 400 and "type" in typed.json()["message"]
    shape = await api.post("/api/v1/destinations/hook/test", headers=ADMIN, json={"event": [1]})
    assert shape.status_code == 400 and "event" in shape.json()["message"]
    no_source = await api.post("/api/v1/event-tester", headers=ADMIN,
                               json={"source": "nope", "event": ORDER})  # fmt: skip
    assert no_source.status_code == 404 and "website" in no_source.json()["message"]
    elsewhere = await api.post("/api/v1/event-tester", headers=ADMIN,
                               json={"source": "website", "event": ORDER, "send": "other"})  # fmt: skip
    assert elsewhere.status_code == 404 and "does not take events from" in elsewhere.text


async def test_the_event_tester_shows_each_stage(
    api: httpx.AsyncClient, app: Headwater, fake: FakeDestination
) -> None:
    response = await api.post("/api/v1/event-tester", headers=ADMIN,
                              json={"source": "website", "event": ORDER})  # fmt: skip
    assert response.status_code == 200, response.text
    doc = response.json()
    stages = {s["stage"]: s for s in doc["stages"]}
    assert stages["normalised"]["event"]["receivedAt"]
    assert (
        stages["tracking plan"]["decision"] == "passed"
    )  # "Order Done" has no rule: unplanned, allowed
    assert stages["source transformations"]["decision"] == "transformed"
    assert doc["event"]["event"] == "Order Completed"
    views = {v["destination"]: v for v in doc["destinations"]}
    assert set(views) == {"hook", "api", "sink"}
    api_view = views["api"]
    assert api_view["routing"]["decision"] == "routed"
    assert api_view["transformations"]["decision"] == "transformed"
    [action] = api_view["mapping"]["actions"]
    assert action["payload"]["what"] == "Order Completed"
    assert action["payload"]["order"] != "A-1"  # hashed by the destination's transformation
    assert api_view["requests"][0]["response"] is None
    assert fake.requests == [] and doc["test"] is None
    assert app.log is not None and await app.log.get("order-1") is None
    violations = await api.get("/api/v1/sources/website/violations", headers=ADMIN)
    assert violations.json()["total"] == 0  # nothing counted


async def test_the_event_tester_stops_where_the_plan_blocks(api: httpx.AsyncClient) -> None:
    event = {**ORDER, "event": "Order Completed", "properties": {"revenue": 5}}
    doc = (await api.post("/api/v1/event-tester", headers=ADMIN,
                          json={"source": "website", "event": event})).json()  # fmt: skip
    plan = next(s for s in doc["stages"] if s["stage"] == "tracking plan")
    assert plan["decision"] == "blocked" and "order_id" in plan["detail"]
    assert doc["blocked"] is True and doc["destinations"] == []


async def test_the_event_tester_routes_and_sends_on_request(
    api: httpx.AsyncClient, fake: FakeDestination
) -> None:
    event = {**ORDER, "integrations": {"hook": False}}
    doc = (await api.post("/api/v1/event-tester", headers=ADMIN,
                          json={"source": "website", "event": event})).json()  # fmt: skip
    hook = next(v for v in doc["destinations"] if v["destination"] == "hook")
    assert hook["reaches"] is False and "integrations.hook is false" in hook["stoppedBy"]
    refused = await api.post("/api/v1/event-tester", headers=ADMIN,
                             json={"source": "website", "event": event, "send": "hook"})  # fmt: skip
    assert refused.status_code == 409 and fake.requests == []
    sent = await api.post("/api/v1/event-tester", headers=ADMIN,
                          json={"source": "website", "event": ORDER, "send": "api"})  # fmt: skip
    assert sent.status_code == 200, sent.text
    test = sent.json()["test"]
    [received] = fake.requests
    assert received.path == "/api" and received.json()["what"] == "Order Completed"
    assert test["outcome"]["result"] == "delivered" and API_KEY not in sent.text
