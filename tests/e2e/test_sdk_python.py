"""The real ``segment-analytics-python`` SDK, unchanged, against a running ``headwater serve``.

Issue requirement: gzip on and off, single calls and large batches; every event the SDK sends
is in the log exactly once, normalised (SEGMENT_FACTS.md, "Tracking API" and "The Spec").

The SDK is used as an application would use it: a ``Client`` pointed at the server's URL. The
only SDK internals touched are ``Client.queue`` (to bound how long a flush may take) and, for
the retry test, ``segment.analytics.request.post`` — the function the SDK's consumer calls for
every attempt, so calling it twice with one batch is exactly what an SDK retry sends.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from segment.analytics import Client
from segment.analytics.request import DatetimeSerializer, post

from tests.e2e.conftest import WRITE_KEY, Server, assert_stored_once, parse_z

SOURCE = "website"  # the source WRITE_KEY belongs to
LIBRARY = "analytics-python"
LOCAL_IP = "127.0.0.1"
DRAIN_TIMEOUT_S = 20.0
Message = dict[str, Any]


# ---------------------------------------------------------------------------- SDK harness


@dataclass
class Sdk:
    """One SDK client, what it was asked to send, and every error it reported."""

    client: Client
    sent: list[Message] = field(default_factory=list)  # as serialised on the wire
    errors: list[str] = field(default_factory=list)

    def record(self, result: tuple[bool, Message]) -> Message:
        ok, msg = result
        assert ok, f"the SDK dropped {msg.get('messageId')} (queue full?): raise max_queue_size"
        wire = json.loads(json.dumps(msg, cls=DatetimeSerializer))
        self.sent.append(wire)
        return wire

    def drain(self) -> None:
        """``client.flush()``, but fail instead of hanging if the queue never empties."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.client.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the SDK still had {self.client.queue.unfinished_tasks} events unsent "
                    f"after {DRAIN_TIMEOUT_S}s; errors so far: {self.errors[:3]}"
                )
            time.sleep(0.01)
        self.client.flush()

    def assert_no_errors(self) -> None:
        assert not self.errors, f"the SDK reported {len(self.errors)} errors: {self.errors[:5]}"


@contextmanager
def sdk(server: Server, **options: Any) -> Iterator[Sdk]:
    """A ``Client`` for ``server``; drained on success and its consumer thread always stopped."""
    errors: list[str] = []

    def on_error(exc: Exception, batch: list[Message]) -> None:
        first = batch[0].get("messageId") if batch else None
        errors.append(f"{exc!r} on a batch of {len(batch)} (first messageId {first})")

    options.setdefault("max_retries", 3)  # fail within seconds, not the default ~minutes
    client = Client(WRITE_KEY, host=server.url, on_error=on_error, **options)
    harness = Sdk(client, errors=errors)
    try:
        yield harness
        if not client.sync_mode:
            harness.drain()
    finally:
        if client.consumers:  # None in sync_mode
            client.join()


# ---------------------------------------------------------------------------- what to send


def call(client: Client, i: int, run: str, *, explicit_id: bool) -> tuple[bool, Message]:
    """Call number ``i``: cycles the six types with varied, realistic payloads."""
    kind = ("track", "identify", "page", "screen", "group", "alias")[i % 6]
    common: dict[str, Any] = {"message_id": f"py-{run}-{i}" if explicit_id else None}
    if i % 5 == 0:  # a client-chosen time; some with a non-UTC offset
        zone = timezone(timedelta(hours=5, minutes=30)) if i % 10 == 0 else UTC
        common["timestamp"] = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=zone)
    context: dict[str, Any] = {"locale": "de-DE", "page": {"path": f"/p/{i}"}}
    if i % 11 == 0:
        context["ip"] = "203.0.113.7"  # the sender's ip wins over the connection's
    if i % 7 == 0:
        common["integrations"] = {"All": False, "Webhook": True}
    user = f"py-{run}-user-{i % 13}"
    if kind == "track":
        return client.track(
            user_id=user,
            event="Order Completed",
            properties={
                "order_id": f"o-{i}",
                "revenue": Decimal("10.25") + i,
                "currency": "EUR",
                "products": [{"sku": "a-1", "quantity": 2, "price": 3.5}, {"sku": "b"}],
                "note": "naïve café ☕ 日本",
                "shipped_at": datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
                "gift": i % 2 == 0,
                "coupon": None,
            },
            context=context,
            **common,
        )
    if kind == "identify":
        traits = {"email": f"u{i}@example.com", "name": f"User {i}", "logins": i, "vip": True}
        return client.identify(user_id=user, traits=traits, context=context, **common)
    if kind == "page":  # anonymous only: the SDK sends "userId": null
        return client.page(
            anonymous_id=f"py-{run}-anon-{i}",
            category="Docs",
            name="Pricing",
            properties={"url": "https://example.com/pricing?x=1", "title": "Pricing"},
            context=context,
            **common,
        )
    if kind == "screen":
        return client.screen(
            user_id=user, name="Home", properties={"variant": "b"}, context=context, **common
        )
    if kind == "group":
        return client.group(
            user_id=user,
            group_id=f"py-{run}-org-{i % 3}",
            traits={"name": "Acme", "employees": 42},
            context=context,
            **common,
        )
    return client.alias(previous_id=f"py-{run}-anon-{i}", user_id=user, context=context, **common)


# ---------------------------------------------------------------------------- checks


def assert_each_once(server: Server, sent: list[Message]) -> dict[str, tuple[str, Message]]:
    """Every sent messageId is stored exactly once and nothing else is in the log."""
    return assert_stored_once(server, [m["messageId"] for m in sent])


def assert_normalised(sent: Message, source: str, stored: Message) -> None:
    """``stored`` is ``sent`` as the server must store it (SEGMENT_FACTS.md, "The Spec")."""
    mid = sent["messageId"]
    assert source == SOURCE, f"{mid}: stored under source {source!r}, expected {SOURCE!r}"
    assert stored["type"] == sent["type"], f"{mid}: type {stored['type']!r} != {sent['type']!r}"
    assert "writeKey" not in stored, f"{mid}: the write key leaked into the stored event"
    # Every field arrives as sent; the SDK's explicit top-level nulls ("userId": null on an
    # anonymous call, "category": null) may be kept or dropped.
    changed = {
        key: (value, stored.get(key, "<absent>"))
        for key, value in sent.items()
        if key not in ("timestamp", "context")
        and stored.get(key, "<absent>") != value
        and not (value is None and key not in stored)
    }
    assert not changed, f"{mid}: fields changed on the way in (sent, stored): {changed}"
    context = stored.get("context")
    assert isinstance(context, dict), f"{mid}: no context stored"
    assert context.get("library", {}).get("name") == LIBRARY, f"{mid}: library {context}"
    expected_context = {"ip": LOCAL_IP, **sent["context"]}
    assert context == expected_context, f"{mid}: context {context} != {expected_context}"
    assert stored.get("originalTimestamp") == sent["timestamp"], (
        f"{mid}: originalTimestamp {stored.get('originalTimestamp')!r} should be the SDK's "
        f"timestamp {sent['timestamp']!r}"
    )
    received = parse_z(stored.get("receivedAt"), f"{mid}: receivedAt")
    sent_at = parse_z(stored.get("sentAt"), f"{mid}: sentAt")
    timestamp = parse_z(stored.get("timestamp"), f"{mid}: timestamp")
    original = datetime.fromisoformat(sent["timestamp"])
    assert sent_at <= received + timedelta(milliseconds=1), (
        f"{mid}: sentAt {stored['sentAt']} is after receivedAt {stored['receivedAt']} "
        "(SDK and server share one clock here)"
    )
    # timestamp = receivedAt − (sentAt − originalTimestamp); the stored sentAt is rounded
    # to milliseconds while the server used the SDK's microseconds, hence the tolerance.
    expected_ts = received - (sent_at - original)
    assert abs(timestamp - expected_ts) <= timedelta(milliseconds=2), (
        f"{mid}: timestamp {stored['timestamp']} is not receivedAt − (sentAt − "
        f"originalTimestamp) = {expected_ts.isoformat()}"
    )


def assert_all_stored_normalised(server: Server, sent: list[Message]) -> dict[str, Message]:
    by_id = assert_each_once(server, sent)
    for msg in sent:
        source, stored = by_id[msg["messageId"]]
        assert_normalised(msg, source, stored)
    return {mid: event for mid, (_, event) in by_id.items()}


def run_id() -> str:
    return uuid.uuid4().hex[:8]


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_queued_batches_of_all_types_are_stored_once_normalised(server: Server, gzip: bool) -> None:
    run = run_id()
    with sdk(server, gzip=gzip) as s:  # default upload_size=100: several batches
        for i in range(600):
            s.record(call(s.client, i, run, explicit_id=i % 2 == 0))
    s.assert_no_errors()

    assert {m["type"] for m in s.sent} == {"track", "identify", "page", "screen", "group", "alias"}
    sdk_ids = [m["messageId"] for m in s.sent[1::2]]
    assert all(uuid.UUID(m) for m in sdk_ids), "the SDK should assign UUID messageIds"
    stored = assert_all_stored_normalised(server, s.sent)

    page = stored[s.sent[2]["messageId"]]
    assert page.get("userId") is None and page["anonymousId"] == f"py-{run}-anon-2", page
    track = stored[f"py-{run}-0"]
    assert track["properties"]["revenue"] == 10.25, "Decimal should arrive as a number"
    assert track["properties"]["shipped_at"] == "2025-06-01T12:00:00+00:00"
    assert track["context"]["ip"] == "203.0.113.7", "the sender's context.ip must be kept"
    assert track["integrations"] == {"All": False, "Webhook": True}
    # A client-chosen time far in the past is kept as originalTimestamp and, corrected for
    # the (here zero) clock skew, is still that moment.
    assert track["originalTimestamp"] == "2025-01-02T03:04:05.678+05:30"
    corrected = parse_z(track["timestamp"], "timestamp")
    assert (
        timedelta(0)
        <= corrected - datetime.fromisoformat(track["originalTimestamp"])
        < (timedelta(seconds=5))
    ), track


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_sync_mode_single_calls_of_every_type_are_durable_on_return(
    server: Server, gzip: bool
) -> None:
    """sync_mode posts each call on its own, without retries: once it returns, it's stored."""
    run = run_id()
    with sdk(server, gzip=gzip, sync_mode=True) as s:
        for i in range(12):  # each type once with an explicit id, once with the SDK's
            s.record(call(s.client, i, run, explicit_id=i < 6))
            assert_stored_once(server, [m["messageId"] for m in s.sent])  # this one included
    s.assert_no_errors()
    assert [m["type"] for m in s.sent[:6]] == ["track", "identify", "page", "screen", "group",
                                              "alias"]  # fmt: skip
    assert_all_stored_normalised(server, s.sent)


def test_large_gzip_batches_5000_tracks(server: Server) -> None:
    run = run_id()
    with sdk(server, gzip=True, upload_size=500, max_queue_size=20_000) as s:
        for i in range(5000):
            s.record(
                s.client.track(
                    user_id=f"py-{run}-user-{i % 97}",
                    event="Product Viewed",
                    properties={"product_id": f"p-{i}", "price": i / 100, "n": i},
                    message_id=f"py-{run}-{i}" if i % 3 else None,
                )
            )
    s.assert_no_errors()
    assert_all_stored_normalised(server, s.sent)
    batches = Counter(
        (event["sentAt"], event["receivedAt"]) for event in server.events()
    )  # events of one request share both
    assert max(batches.values()) > 100, f"expected batches of up to 500, saw {batches}"


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_largest_events_and_batches_the_sdk_makes_are_accepted(server: Server, gzip: bool) -> None:
    """The SDK allows 32 KB per event and cuts batches after 475,000 bytes, so its biggest
    request is ~507 KB of events: within Segment's 500 KB (512,000-byte) batch limit."""
    run = run_id()
    padding = 31_000  # ~31.6 KB per event: 15 events < 475,000 bytes, the 16th crosses it

    def big(client: Client, i: int) -> tuple[bool, Message]:
        return client.track(
            user_id=f"py-{run}-user",
            event="Big",
            properties={"blob": "x" * padding, "i": i},
            message_id=f"py-{run}-{i}",
        )

    with sdk(server, gzip=gzip, upload_size=2500) as s:
        for i in range(32):
            s.record(big(s.client, i))
    s.assert_no_errors()
    sizes = [len(json.dumps(m).encode()) for m in s.sent]
    assert min(sizes) > 31_000 and max(sizes) < 32 * 1024, sizes

    with sdk(server, gzip=gzip, sync_mode=True) as single:
        single.record(  # the largest event the SDK lets through, alone in a request
            single.client.track(
                user_id=f"py-{run}-user",
                event="Biggest",
                properties={"blob": "y" * (32 * 1024 - 400)},
                message_id=f"py-{run}-biggest",
            )
        )
    assert len(json.dumps(single.sent[0]).encode()) > 32 * 1024 - 300
    assert_all_stored_normalised(server, s.sent + single.sent)

    per_request: defaultdict[tuple[str, str], int] = defaultdict(int)
    for event in server.events():
        if event.get("event") == "Big":
            per_request[(event["sentAt"], event["receivedAt"])] += len(
                json.dumps(s.sent[event["properties"]["i"]]).encode()
            )
    assert max(per_request.values()) > 475_000, (
        f"expected the SDK to fill a batch past 475,000 bytes; request sizes {per_request}"
    )


def test_sdk_retry_of_a_delivered_batch_stores_each_event_once(server: Server) -> None:
    """The response to a delivered batch is lost; the SDK posts the same batch again."""
    run = run_id()
    builder = Client(WRITE_KEY, host=server.url, send=False)  # builds messages, sends nothing
    batch = [call(builder, i, run, explicit_id=True)[1] for i in range(120)]
    sent = json.loads(json.dumps(batch, cls=DatetimeSerializer))
    sent_at = datetime.now(UTC).isoformat()

    first = post(WRITE_KEY, server.url, gzip=True, batch=batch, sentAt=sent_at)
    assert first.status_code == 200, first.text
    retry = post(WRITE_KEY, server.url, gzip=True, retry_count=1, batch=batch, sentAt=sent_at)
    assert retry.status_code == 200, retry.text
    assert retry.json().get("duplicates") == len(batch), (
        f"the server should say the retried events were duplicates: {retry.text}"
    )
    assert_all_stored_normalised(server, sent)


def test_sending_the_same_events_twice_stores_each_once(server: Server) -> None:
    """An application re-sends events with explicit messageIds (e.g. after a crash); the
    second copies are dropped and the first ones kept, new events in the same batches kept."""
    run = run_id()
    with sdk(server, gzip=False, upload_size=50) as first:
        for i in range(200):
            first.record(call(first.client, i, run, explicit_id=True))
    first.assert_no_errors()
    between = datetime.now(UTC)

    with sdk(server, gzip=True, upload_size=50) as second:
        for i in range(100, 300):  # half already stored, half new
            second.record(call(second.client, i, run, explicit_id=True))
    second.assert_no_errors()

    firsts = {m["messageId"]: m for m in first.sent}
    news = [m for m in second.sent if m["messageId"] not in firsts]
    assert len(news) == 100
    stored = assert_all_stored_normalised(server, first.sent + news)
    kept_second = [
        mid for mid in firsts if parse_z(stored[mid]["receivedAt"], "receivedAt") >= between
    ]
    assert not kept_second, f"a re-sent copy replaced the first one: {kept_second[:5]}"
