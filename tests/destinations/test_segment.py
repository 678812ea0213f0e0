"""The segment destination: ``/v1/batch`` with the write key as HTTP Basic user name."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import REDACTED, HttpClient
from headwater.delivery.outcomes import Delivered, Discard
from headwater.destinations.segment.settings import SegmentSettings
from tests.destinations.conftest import build, outbound, outbounds
from tests.fakes import FakeDestination, always

WRITE_KEY = "wk_receiver_0123"


def segment(fake: FakeDestination, http: HttpClient, **settings: Any) -> Any:
    return build("segment", {"url": fake.url, "write_key": WRITE_KEY, **settings}, http,
                 batch_events=100)  # fmt: skip


async def test_posts_a_batch_to_v1_batch(fake: FakeDestination, http: HttpClient) -> None:
    sent = outbounds(3)
    attempt = await segment(fake, http).deliver(sent)
    assert isinstance(attempt.outcome, Delivered) and attempt.outcome.status == 200
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/batch")
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert list(body) == ["batch"]
    assert [e["messageId"] for e in body["batch"]] == [e.message_id for e in sent]


async def test_write_key_is_the_basic_auth_user_name(
    fake: FakeDestination, http: HttpClient
) -> None:
    await segment(fake, http).deliver([outbound()])
    scheme, token = fake.requests[0].headers["Authorization"].split(" ")
    assert scheme == "Basic"
    assert token == base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert base64.b64decode(token).decode() == f"{WRITE_KEY}:"


async def test_sent_at_is_removed_and_the_rest_kept(
    fake: FakeDestination, http: HttpClient
) -> None:
    """The receiver must not correct the timestamp for a clock skew already corrected."""
    event = outbound(properties={"sentAt": "kept: not the top-level field", "n": 1})
    await segment(fake, http).deliver([event])
    [got] = fake.requests[0].events()
    assert "sentAt" not in got
    assert got == {k: v for k, v in event.event.items() if k != "sentAt"}
    assert got["properties"]["sentAt"] == "kept: not the top-level field"
    assert got["timestamp"] == event.event["timestamp"]


async def test_events_without_sent_at_pass_unchanged(
    fake: FakeDestination, http: HttpClient
) -> None:
    payload = b'{"messageId":"m-1","type":"track", "event":"caf\\u00e9"}'
    await segment(fake, http).deliver([OutboundEvent(1, "m-1", 0, payload)])
    assert fake.requests[0].body == b'{"batch":[' + payload + b"]}"


@pytest.mark.parametrize(
    "path", ["", "/", "/v1", "/v1/", "/v1/batch", "/v1/batch/", "/prefix", "/prefix/v1/batch"]
)
async def test_url_is_normalised(fake: FakeDestination, http: HttpClient, path: str) -> None:
    destination = build("segment", {"url": fake.url + path, "write_key": WRITE_KEY}, http)
    await destination.deliver([outbound()])
    expected = "/prefix/v1/batch" if path.startswith("/prefix") else "/v1/batch"
    assert fake.requests[0].path == expected


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://api.segment.io", "https://api.segment.io"),
        ("https://api.segment.io/", "https://api.segment.io"),
        ("https://api.segment.io/v1", "https://api.segment.io"),
        ("https://api.segment.io/v1/batch", "https://api.segment.io"),
        ("https://api.segment.io/v1/batch/", "https://api.segment.io"),
        ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
        ("https://hosted.rudderlabs.com/", "https://hosted.rudderlabs.com"),
    ],
)
def test_url_setting_normalisation(url: str, normalised: str) -> None:
    assert SegmentSettings.model_validate({"url": url, "write_key": WRITE_KEY}).url == normalised


def test_defaults_to_segment_itself() -> None:
    assert SegmentSettings.model_validate({"write_key": WRITE_KEY}).url == "https://api.segment.io"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "write_key\n  Field required"),
        ({"write_key": WRITE_KEY, "url": "api.segment.io"}, "not an http:// or https:// URL"),
        ({"write_key": WRITE_KEY, "url": "http://"}, "not an http:// or https:// URL"),
        ({"write_key": WRITE_KEY, "url": "https://u:p@api.segment.io"}, "credentials in it"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SegmentSettings.model_validate(settings)


async def test_failure_keeps_the_exchange_without_the_write_key(
    fake: FakeDestination, http: HttpClient
) -> None:
    fake.script = always(401, body=b'{"code":"invalid_write_key"}')
    attempt = await segment(fake, http).deliver([outbound()])
    assert isinstance(attempt.outcome, Discard) and attempt.outcome.status == 401
    assert attempt.exchange.request["headers"]["Authorization"] == REDACTED
    assert attempt.exchange.request["url"] == f"{fake.url}/v1/batch"
    stored = orjson.dumps([attempt.exchange.request, attempt.exchange.response]).decode()
    assert WRITE_KEY not in stored
    assert base64.b64encode(f"{WRITE_KEY}:".encode()).decode() not in stored
