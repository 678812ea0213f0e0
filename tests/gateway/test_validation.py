"""Point 5 of the Tracking API issue: limits, required fields, errors, rejection records."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.gateway.conftest import Api, MakeApi


def track(**extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "u1", "event": "Clicked", **extra}


async def test_invalid_json(api: Api) -> None:
    response = await api.post("/v1/track", b'{"userId": "u1", ')
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == "invalid_json"


@pytest.mark.parametrize("raw", [b"", b"[1, 2]", b'"text"'])
async def test_body_must_be_an_object(api: Api, raw: bytes) -> None:
    response = await api.post("/v1/track", raw)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


async def test_single_request_over_32_kb(api: Api) -> None:
    response = await api.post("/v1/track", track(properties={"blob": "x" * 33_000}))
    assert response.status_code == 400
    assert response.json()["code"] == "payload_too_large"
    assert "one event must be under 32 KB" in response.json()["message"]


async def test_batch_request_over_500_kb(api: Api) -> None:
    batch = [track(properties={"blob": "x" * 20_000}) for _ in range(30)]
    response = await api.post("/v1/batch", {"batch": batch})
    assert response.status_code == 400
    assert response.json()["code"] == "payload_too_large"
    assert await api.stored() == []


async def test_batch_over_2500_events(api: Api) -> None:
    batch = [{"type": "track", "userId": "u", "event": "e"}] * 2501
    response = await api.post("/v1/batch", {"batch": batch})
    assert response.status_code == 400
    assert response.json()["code"] == "batch_too_large"
    assert "2500" in response.json()["message"]


async def test_2500_events_is_allowed(api: Api) -> None:
    batch = [{"type": "track", "userId": "u", "event": "e"}] * 2500
    response = await api.post("/v1/batch", {"batch": batch})
    assert response.status_code == 200
    assert len(await api.stored()) == 2500


async def test_one_event_over_32_kb_in_a_batch_is_rejected_alone(api: Api) -> None:
    batch = [track(messageId="ok-1"), track(messageId="big", properties={"b": "x" * 40_000}),
             track(messageId="ok-2")]  # fmt: skip
    response = await api.post("/v1/batch", {"batch": batch})
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    [rejected] = body["rejected"]
    assert (rejected["index"], rejected["messageId"], rejected["code"]) == (
        1,
        "big",
        "event_too_large",
    )
    assert [e["messageId"] for e in await api.stored()] == ["ok-1", "ok-2"]


BAD_EVENTS = [
    ("/v1/track", {"event": "Clicked"}, "missing_identity", "userId"),
    ("/v1/track", {"userId": None, "anonymousId": "", "event": "Clicked"}, "missing_identity", "anonymousId"),
    ("/v1/track", {"userId": "u1"}, "missing_field", "event"),
    ("/v1/track", {"userId": "u1", "event": ""}, "missing_field", "event"),
    ("/v1/group", {"userId": "u1"}, "missing_field", "groupId"),
    ("/v1/alias", {"userId": "u1"}, "missing_field", "previousId"),
    ("/v1/alias", {"previousId": "a1", "anonymousId": "a1"}, "missing_field", "userId"),
    ("/v1/track", {"userId": "u1", "event": "e", "messageId": "m" * 101}, "invalid_field", "100"),
    ("/v1/track", {"userId": {"id": 1}, "event": "e"}, "invalid_field", "userId"),
    ("/v1/track", {"userId": "u1", "event": "e", "properties": [1]}, "invalid_field", "properties"),
    ("/v1/identify", {"userId": "u1", "traits": "vip"}, "invalid_field", "traits"),
    ("/v1/track", {"userId": "u1", "event": "e", "context": "x"}, "invalid_field", "context"),
    ("/v1/track", {"userId": "u1", "event": "e", "timestamp": "yesterday"}, "invalid_timestamp", "ISO-8601"),
    ("/v1/track", {"userId": "u1", "event": "e", "timestamp": 1700000000}, "invalid_timestamp", "ISO-8601"),
    ("/v1/track", {"userId": "u1", "event": "e", "timestamp": "0001-01-01T00:00:00Z"}, "invalid_timestamp", "1000-9999"),
    ("/v1/track", {"userId": "u1", "event": "e", "timestamp": "1000-01-02T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"}, "invalid_timestamp", "corrected by sentAt"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "code", "hint"), BAD_EVENTS)
async def test_single_call_refusals(
    api: Api, path: str, body: dict[str, Any], code: str, hint: str
) -> None:
    response = await api.post(path, body)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == code
    assert hint in error["message"]
    assert await api.stored() == []


@pytest.mark.parametrize(("path", "body", "code", "hint"), BAD_EVENTS)
async def test_batch_refuses_the_bad_item_alone(
    api: Api, path: str, body: dict[str, Any], code: str, hint: str
) -> None:
    typ = path.rsplit("/", 1)[1]
    batch = [track(messageId="before"), {"type": typ, **body}, track(messageId="after")]
    response = await api.post("/v1/batch", {"batch": batch})
    assert response.status_code == 200
    [rejected] = response.json()["rejected"]
    assert rejected["index"] == 1 and rejected["code"] == code
    assert [e["messageId"] for e in await api.stored()] == ["before", "after"]


@pytest.mark.parametrize("item", [{"userId": "u"}, {"type": "Track", "userId": "u"}, "text", 5])
async def test_batch_items_need_a_known_type(api: Api, item: Any) -> None:
    response = await api.post("/v1/batch", {"batch": [item, track()]})
    assert response.status_code == 200
    [rejected] = response.json()["rejected"]
    assert rejected["code"] in {"invalid_type", "invalid_event"}
    assert len(await api.stored()) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [({"batch": {"a": 1}}, "invalid_batch"), ({"events": []}, "invalid_batch"),
     ({"batch": [], "context": []}, "invalid_field")],
)  # fmt: skip
async def test_malformed_batches(api: Api, body: dict[str, Any], code: str) -> None:
    response = await api.post("/v1/batch", body)
    assert response.status_code == 400
    assert response.json()["code"] == code


async def test_duplicates_answer_200_are_stored_once_and_counted(api: Api) -> None:
    batch = [track(messageId="m-1"), track(messageId="m-2")]
    first = await api.post("/v1/batch", {"batch": batch})
    second = await api.post("/v1/batch", {"batch": [*batch, track(messageId="m-3")]})
    assert first.json() == {"success": True}
    assert second.status_code == 200
    assert second.json() == {"success": True, "accepted": 3, "duplicates": 2}
    assert [e["messageId"] for e in await api.stored()] == ["m-1", "m-2", "m-3"]
    assert api.app.stats.duplicates["website"] == 2
    assert api.app.stats.received["website"] == 3


async def test_rejections_are_counted_and_sampled_per_source_and_reason(make_api: MakeApi) -> None:
    api = await make_api(gateway={"rejection_samples": 3})
    for i in range(5):
        await api.post(
            "/v1/batch", {"batch": [{"type": "track", "userId": "u", "messageId": f"x{i}"}]}
        )
    await api.post("/v1/track", b"{oops")
    await api.post("/v1/track", track(), key="wk_unknown_777")
    snapshot = {(r["scope"], r["code"]): r for r in api.app.stats.snapshot()["rejected"]}
    missing = snapshot[("website", "missing_field")]
    assert missing["count"] == 5
    assert [s["message_id"] for s in missing["samples"]] == ["x2", "x3", "x4"], "newest kept"
    assert missing["samples"][0]["index"] == 0 and missing["samples"][0]["ip"] == "127.0.0.1"
    assert snapshot[("website", "invalid_json")]["count"] == 1, "filed under the header's source"
    unknown = snapshot[("key:wk_u…", "invalid_write_key")]
    assert unknown["count"] == 1
    assert "wk_unknown_777" not in orjson.dumps(unknown).decode(), "keys are never kept whole"


async def test_body_faults_without_a_key_are_filed_as_unknown(api: Api) -> None:
    await api.post("/v1/track", b"{oops", key=None)
    await api.post("/v1/track", b"{oops", key="wk_stranger_55")
    scopes = {(r["scope"], r["code"]) for r in api.app.stats.snapshot()["rejected"]}
    assert scopes == {("unknown", "invalid_json"), ("key:wk_s…", "invalid_json")}


async def test_write_key_in_the_body_is_redacted_from_samples(api: Api) -> None:
    await api.post("/v1/track", {"userId": "u1", "writeKey": "wk_website_123"}, key=None)
    [rejected] = api.app.stats.snapshot()["rejected"]
    assert rejected["code"] == "missing_field"
    assert "wk_website_123" not in rejected["samples"][0]["excerpt"]


async def test_back_pressure_is_503_with_retry_after(make_api: MakeApi) -> None:
    api = await make_api(log={"durability": "os", "disk_budget_bytes": "100KB"})
    statuses = []
    for i in range(200):
        batch = [track(messageId=f"bp-{i}-{j}", properties={"pad": "x" * 400}) for j in range(20)]
        response = await api.post("/v1/batch", {"batch": batch})
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["code"] == "unavailable"
            assert "disk budget" in response.json()["message"]
            break
    assert statuses[-1] == 503, "the log never pushed back"
    stored = {e["messageId"] for e in await api.stored()}
    acked = {f"bp-{i}-{j}" for i, s in enumerate(statuses) if s == 200 for j in range(20)}
    assert acked <= stored
