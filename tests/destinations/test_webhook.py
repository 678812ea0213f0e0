"""The webhook destination: the event's JSON as it is, signed, with the user's headers."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import REDACTED, HttpClient
from headwater.delivery.outcomes import Delivered, Discard
from headwater.destinations.webhook.settings import WebhookSettings
from tests.destinations.conftest import build, outbound, outbounds
from tests.fakes import FakeDestination, always

SECRET = "whsec-0123456789"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "destinations.md"


def webhook(fake: FakeDestination, http: HttpClient, batch_events: int = 1, **settings: Any) -> Any:
    return build(
        "webhook", {"url": f"{fake.url}/hook", **settings}, http, batch_events=batch_events
    )


def expected_signature(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


async def test_one_event_is_its_json_unchanged(fake: FakeDestination, http: HttpClient) -> None:
    # spacing, key order and escapes that re-encoding would change: the bytes must pass as they are
    payload = b'{"messageId":"m-1", "type":"track","z":1,"a":"caf\\u00e9","properties":{}}'
    attempt = await webhook(fake, http).deliver([OutboundEvent(1, "m-1", 0, payload)])
    assert isinstance(attempt.outcome, Delivered)
    [request] = fake.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.body == payload
    assert request.headers["Content-Type"] == "application/json"
    assert "X-Signature" not in request.headers  # no shared_secret, no signature


async def test_without_batching_each_event_is_one_request(
    fake: FakeDestination, http: HttpClient
) -> None:
    destination = webhook(fake, http)
    sent = outbounds(3)
    for event in sent:
        await destination.deliver([event])
    assert [r.body for r in fake.requests] == [e.payload for e in sent]
    assert all(isinstance(r.json(), dict) for r in fake.requests)


async def test_a_batch_is_a_json_array_of_the_events(
    fake: FakeDestination, http: HttpClient
) -> None:
    sent = outbounds(3)
    attempt = await webhook(fake, http, batch_events=10).deliver(sent)
    assert isinstance(attempt.outcome, Delivered)
    [request] = fake.requests
    assert request.body == b"[" + b",".join(e.payload for e in sent) + b"]"
    assert request.json() == [e.event for e in sent]


async def test_with_batching_a_lone_event_is_still_an_array(
    fake: FakeDestination, http: HttpClient
) -> None:
    """The receiver sees one shape whatever the traffic."""
    event = outbound()
    await webhook(fake, http, batch_events=10).deliver([event])
    assert fake.requests[0].json() == [event.event]


@pytest.mark.parametrize("batch_events", [1, 5])
async def test_x_signature_is_the_hex_hmac_sha1_of_the_exact_body(
    fake: FakeDestination, http: HttpClient, batch_events: int
) -> None:
    destination = webhook(fake, http, batch_events=batch_events, shared_secret=SECRET)
    await destination.deliver(outbounds(batch_events))
    [request] = fake.requests
    signature = request.headers["X-Signature"]
    assert signature == expected_signature(request.body)
    assert signature != expected_signature(request.body, "another-secret")
    assert hmac.compare_digest(
        signature, hmac.new(SECRET.encode(), request.body, "sha1").hexdigest()
    )


async def test_custom_headers_are_sent(fake: FakeDestination, http: HttpClient) -> None:
    headers = {"X-Team": "growth", "Authorization": "Bearer tok-123", "User-Agent": "mine/1"}
    await webhook(fake, http, headers=headers).deliver([outbound()])
    got = fake.requests[0].headers
    assert {k: got[k] for k in headers} == headers
    assert got["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_method(fake: FakeDestination, http: HttpClient, method: str) -> None:
    await webhook(fake, http, method=method).deliver([outbound()])
    assert fake.requests[0].method == method


async def test_failure_keeps_the_exchange_without_header_values_or_secret(
    fake: FakeDestination, http: HttpClient
) -> None:
    fake.script = always(401, body=b'{"error":"nope"}')
    headers = {"X-Team": "growth", "authorization": "Bearer tok-123", "X-Api-Key": "key-456"}
    attempt = await webhook(fake, http, headers=headers, shared_secret=SECRET).deliver([outbound()])
    assert isinstance(attempt.outcome, Discard) and attempt.outcome.status == 401
    sent = attempt.exchange.request
    assert sent["headers"] == {
        "X-Team": REDACTED, "authorization": REDACTED, "X-Api-Key": REDACTED,
        "Content-Type": "application/json", "X-Signature": expected_signature(fake.requests[0].body),
    }  # fmt: skip
    assert SECRET not in orjson.dumps(attempt.exchange.request).decode()
    assert attempt.exchange.response["status"] == 401
    assert attempt.exchange.response["body"] == '{"error":"nope"}'


# -- settings


def test_settings_defaults() -> None:
    settings = WebhookSettings.model_validate({"url": "https://example.com/hook"})
    assert settings.method == "POST" and settings.headers == {} and settings.shared_secret is None
    assert SECRET not in repr(WebhookSettings(url="https://h/", shared_secret=SECRET))


@pytest.mark.parametrize(
    "name", ["Content-Type", "content-length", "X-Signature", "x-signature", "Host",
             "Transfer-Encoding", "Content-Encoding"],
)  # fmt: skip
def test_reserved_headers_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="is set by Headwater and cannot be overridden"):
        WebhookSettings.model_validate({"url": "https://h/", "headers": {name: "x"}})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X Team": "growth"}, "'X Team' is not a valid header name"),
        ({"X-Team:": "growth"}, "is not a valid header name"),
        ({"": "growth"}, "is not a valid header name"),
        ({"X-Team": "growth\r\nX-Injected: 1"}, "contains control characters"),
        ({"X-Team": "a\nb"}, "contains control characters"),
    ],
)
def test_headers_that_cannot_be_sent_are_refused(headers: dict[str, str], message: str) -> None:
    """Sending them would raise inside the HTTP client or make every request a 400."""
    with pytest.raises(ValidationError, match=message):
        WebhookSettings.model_validate({"url": "https://h/", "headers": headers})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("example.com/hook", "is not an http:// or https:// URL"),
        ("ftp://example.com/hook", "is not an http:// or https:// URL"),
        ("http://", "is not an http:// or https:// URL"),
        ("http:///hook", "is not an http:// or https:// URL"),
        ("http://example.com:99999/hook", "is not a valid URL"),
        ("http://[::1/hook", "is not a valid URL"),
        ("http://exa mple.com/hook", "white space"),
        ("https://user:pass@example.com/hook", "credentials in it .* headers"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WebhookSettings.model_validate({"url": url})


@pytest.mark.parametrize("method", ["GET", "DELETE", "post"])
def test_other_methods_are_refused(method: str) -> None:
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"url": "https://h/", "method": method})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook?team=growth", "https://[::1]:443/"])
def test_good_urls_are_kept_as_written(url: str) -> None:
    assert WebhookSettings.model_validate({"url": url}).url == url


async def test_the_receiver_check_in_the_docs_accepts_the_signature(
    fake: FakeDestination, http: HttpClient
) -> None:
    """docs/destinations.md shows receivers how to check X-Signature; run that line."""
    [check] = re.findall(r"`(hmac\.compare_digest\(.*?\))`", DOCS.read_text(encoding="utf-8"))
    await webhook(fake, http, shared_secret=SECRET).deliver([outbound()])
    request = fake.requests[0]
    scope = {"hmac": hmac, "hashlib": hashlib, "request": request, "body": request.body}
    assert eval(check, {**scope, "secret": SECRET.encode()})
    assert not eval(check, {**scope, "secret": b"not-the-secret"})


async def test_unbatched_refuses_more_than_one_event(
    fake: FakeDestination, http: HttpClient
) -> None:
    """Sending only the first would report the others delivered; the engine never asks this."""
    with pytest.raises(ValueError, match="1 event per request, not 2"):
        await webhook(fake, http).deliver(outbounds(2))
    assert fake.requests == []
