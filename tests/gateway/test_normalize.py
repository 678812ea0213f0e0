"""Point 4 of the Tracking API issue: what normalisation does to each event."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from tests.gateway.conftest import Api, MakeApi


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_batch_context_and_integrations_merge_into_items(api: Api) -> None:
    body = {
        "batch": [
            {"type": "track", "userId": "u", "event": "A"},
            {"type": "track", "userId": "u", "event": "B",
             "context": {"locale": "fr-FR"}, "integrations": {"Amplitude": False}},
        ],
        "context": {"locale": "en-US", "library": {"name": "custom", "version": "1"}},
        "integrations": {"All": True, "Amplitude": True},
    }  # fmt: skip
    assert (await api.post("/v1/batch", body)).status_code == 200
    first, second = await api.stored()
    assert first["context"]["locale"] == "en-US"
    assert first["context"]["library"] == {"name": "custom", "version": "1"}
    assert first["integrations"] == {"All": True, "Amplitude": True}
    assert second["context"]["locale"] == "fr-FR", "the item's own context wins"
    assert second["context"]["library"]["name"] == "custom"
    assert second["integrations"] == {"All": True, "Amplitude": False}


async def test_message_id_is_assigned_when_missing_and_kept_when_given(api: Api) -> None:
    await api.post("/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "event": "A"},
        {"type": "track", "userId": "u", "event": "B", "messageId": "mine-1"},
    ]})  # fmt: skip
    first, second = await api.stored()
    uuid.UUID(first["messageId"])
    assert second["messageId"] == "mine-1"


async def test_clock_skew_is_corrected(api: Api) -> None:
    # the client's clock is 1 h fast: it stamped the event 5 s before it sent the batch
    body = {
        "batch": [{"type": "track", "userId": "u", "event": "A",
                   "timestamp": "2030-01-01T13:00:00.000Z"}],
        "sentAt": "2030-01-01T13:00:05.000Z",
    }  # fmt: skip
    await api.post("/v1/batch", body)
    [event] = await api.stored()
    assert event["originalTimestamp"] == "2030-01-01T13:00:00.000Z"
    assert event["sentAt"] == "2030-01-01T13:00:05.000Z"
    received = ts(event["receivedAt"])
    assert ts(event["timestamp"]) == received - timedelta(seconds=5)
    assert abs(received - datetime.now(received.tzinfo)) < timedelta(seconds=30)


async def test_item_sent_at_wins_over_the_batch(api: Api) -> None:
    body = {
        "batch": [{"type": "track", "userId": "u", "event": "A",
                   "timestamp": "2030-01-01T13:00:00Z", "sentAt": "2030-01-01T13:00:02Z"}],
        "sentAt": "2030-01-01T13:00:09Z",
    }  # fmt: skip
    await api.post("/v1/batch", body)
    [event] = await api.stored()
    assert ts(event["timestamp"]) == ts(event["receivedAt"]) - timedelta(seconds=2)


async def test_timestamp_without_sent_at_is_kept(api: Api) -> None:
    await api.post("/v1/track", {"userId": "u", "event": "A", "timestamp": "2020-05-01T10:00:00Z"})
    [event] = await api.stored()
    assert event["timestamp"] == "2020-05-01T10:00:00.000Z"
    assert event["originalTimestamp"] == "2020-05-01T10:00:00Z"


async def test_no_timestamp_means_received_at(api: Api) -> None:
    await api.post("/v1/track", {"userId": "u", "event": "A"})
    [event] = await api.stored()
    assert event["timestamp"] == event["receivedAt"]
    assert "originalTimestamp" not in event


async def test_timestamps_with_offsets_are_understood(api: Api) -> None:
    await api.post("/v1/track", {"userId": "u", "event": "A",
                                 "timestamp": "2030-01-01T14:00:00+01:00",
                                 "sentAt": "2030-01-01T13:00:01.000Z"})  # fmt: skip
    [event] = await api.stored()
    assert ts(event["timestamp"]) == ts(event["receivedAt"]) - timedelta(seconds=1)


async def test_context_ip_from_the_connection(api: Api) -> None:
    await api.post("/v1/track", {"userId": "u", "event": "A"},
                   headers={"x-forwarded-for": "203.0.113.9"})  # fmt: skip
    [event] = await api.stored()
    assert event["context"]["ip"] == "127.0.0.1", "untrusted peers cannot set the ip"


async def test_context_ip_given_by_the_sender_is_kept(api: Api) -> None:
    await api.post("/v1/track", {"userId": "u", "event": "A", "context": {"ip": "198.51.100.7"}})
    [event] = await api.stored()
    assert event["context"]["ip"] == "198.51.100.7"


async def test_forwarded_for_from_a_trusted_proxy(make_api: MakeApi) -> None:
    api = await make_api(gateway={"trusted_proxies": ["127.0.0.0/8", "10.0.0.0/8"]})
    headers = {"x-forwarded-for": "198.51.100.1, 203.0.113.9, 10.1.2.3"}
    await api.post("/v1/track", {"userId": "u", "event": "A"}, headers=headers)
    [event] = await api.stored()
    assert event["context"]["ip"] == "203.0.113.9", "the right-most address not of a proxy"


async def test_numeric_ids_become_text(api: Api) -> None:
    await api.post("/v1/track", {"userId": 42, "event": "A", "messageId": 7})
    [event] = await api.stored()
    assert (event["userId"], event["messageId"]) == ("42", "7")


async def test_received_at_is_one_per_request(api: Api) -> None:
    await api.post("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "A"}] * 5})
    events = await api.stored()
    assert len({e["receivedAt"] for e in events}) == 1
