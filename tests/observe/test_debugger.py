"""The debugger: a bounded ring of each source's newest events and refusals, read newest
first, and live subscriptions that never slow ingestion down."""

from __future__ import annotations

import time

import orjson
import pytest

from headwater.gateway.normalize import iso_ms
from headwater.gateway.stats import Rejection
from headwater.log.base import AppendResult, Record
from headwater.observe.debugger import KEEP, SUBSCRIBER_QUEUE, Debugger

T0 = time.time_ns() // 1_000_000 - 60_000  # records were received a minute ago: refusals are newer


def record(n: int, source: str = "website", at_ms: int | None = None, **fields: object) -> Record:
    body = {"type": "track", "event": f"Event {n}", "userId": f"u{n}", "messageId": f"m{n}",
            **fields}  # fmt: skip
    return Record(f"m{n}", source, "track", T0 + n if at_ms is None else at_ms, orjson.dumps(body))


def stored(records: list[Record], duplicates: frozenset[int] = frozenset()) -> list[AppendResult]:
    return [AppendResult(i + 1, i in duplicates) for i in range(len(records))]


def refusal(
    scope: str, code: str = "invalid_write_key", message_id: str | None = None
) -> Rejection:
    return Rejection(
        at="2027-01-15T08:00:00.000Z", scope=scope, code=code, message=f"refused: {code}",
        status=401 if code.endswith("write_key") else 400, path="/v1/track", ip="10.0.0.1",
        user_agent="curl/8", message_id=message_id,
    )  # fmt: skip


def accept(
    debugger: Debugger, records: list[Record], duplicates: frozenset[int] = frozenset()
) -> None:
    debugger.accepted(records[0].source, records, stored(records, duplicates))


def test_keeps_the_newest_500_newest_first() -> None:
    debugger = Debugger()
    records = [record(n) for n in range(KEEP + 100)]
    for start in range(0, len(records), 50):
        accept(debugger, records[start : start + 50])
    entries = debugger.recent("website", limit=10_000)
    assert KEEP == 500
    assert [e["messageId"] for e in entries] == [f"m{n}" for n in range(599, 99, -1)]
    assert debugger.counts("website") == {"accepted": 500, "duplicate": 0, "rejected": 0}
    assert [e["messageId"] for e in debugger.recent("website", limit=3)] == ["m599", "m598", "m597"]


def test_an_entry_shows_the_event_and_its_label() -> None:
    debugger = Debugger()
    page = Record("p1", "website", "page", T0, orjson.dumps({"type": "page", "name": "Home",
                                                             "messageId": "p1"}))  # fmt: skip
    ident = Record("i1", "website", "identify", T0 + 1,
                   orjson.dumps({"type": "identify", "userId": "ada", "messageId": "i1"}))  # fmt: skip
    debugger.accepted("website", [page, ident], stored([page, ident]))
    newest, oldest = debugger.recent("website")
    assert newest == {
        "kind": "accepted", "at": iso_ms(T0 + 1), "messageId": "i1",
        "source": "website", "type": "identify", "name": "ada",
        "event": {"type": "identify", "userId": "ada", "messageId": "i1"},
    }  # fmt: skip
    assert oldest["name"] == "Home" and oldest["type"] == "page"


def test_duplicates_are_marked() -> None:
    debugger = Debugger()
    records = [record(1), record(2), record(3)]
    accept(debugger, records, duplicates=frozenset({1}))
    kinds = {e["messageId"]: e["kind"] for e in debugger.recent("website")}
    assert kinds == {"m1": "accepted", "m2": "duplicate", "m3": "accepted"}
    assert debugger.counts("website") == {"accepted": 2, "duplicate": 1, "rejected": 0}


def test_sources_do_not_see_each_others_events_or_refusals() -> None:
    debugger = Debugger()
    accept(debugger, [record(1, "website")])
    accept(debugger, [record(2, "backend")])
    debugger.refused(refusal("backend", "invalid_json"))
    assert [e["messageId"] for e in debugger.recent("website")] == ["m1"]
    backend = debugger.recent("backend")
    assert [e["kind"] for e in backend] == ["rejected", "accepted"]
    assert backend[0]["source"] == "backend" and backend[0]["rejection"]["code"] == "invalid_json"
    assert debugger.recent("nobody") == []


@pytest.mark.parametrize("scope", ["key:wk_wr…", "unknown"])
def test_unattributed_refusals_are_shown_in_every_sources_view(scope: str) -> None:
    debugger = Debugger()
    accept(debugger, [record(1, "website", at_ms=1)])  # older than the refusal
    accept(debugger, [record(2, "backend", at_ms=2)])
    debugger.refused(refusal(scope, message_id="lost-1"))
    for source in ("website", "backend"):
        newest = debugger.recent(source)[0]
        assert newest["kind"] == "rejected", source
        assert newest["source"] is None  # no source could be named
        assert newest["messageId"] == "lost-1"
        assert newest["rejection"]["scope"] == scope
        assert newest["rejection"]["message"] == "refused: invalid_write_key"
    # the counts are of the source's own ring: the refusal is nobody's
    assert debugger.counts("website") == {"accepted": 1, "duplicate": 0, "rejected": 0}


async def test_a_subscriber_gets_new_entries_of_its_source_live() -> None:
    debugger = Debugger()
    accept(debugger, [record(0)])  # before subscribing: not sent
    sub = debugger.subscribe("website")
    accept(debugger, [record(1), record(2)], duplicates=frozenset({1}))
    accept(debugger, [record(3, "backend")])  # another source: not sent
    debugger.refused(refusal("website", "invalid_json"))
    debugger.refused(refusal("key:wk_wr…"))  # nobody's: sent to every subscriber
    got = [await sub.next(1.0) for _ in range(4)]
    assert [(e["kind"], e["messageId"]) for e in got if e] == [
        ("accepted", "m1"), ("duplicate", "m2"), ("rejected", None), ("rejected", None),
    ]  # fmt: skip
    assert [e["rejection"]["scope"] for e in got[2:] if e] == ["website", "key:wk_wr…"]
    assert await sub.next(0.01) is None  # nothing more: time for a keep-alive
    sub.close()
    accept(debugger, [record(4)])
    assert sub.queue.empty(), "a closed subscription still receives entries"


async def test_a_slow_subscriber_loses_entries_counted_and_never_blocks_ingestion() -> None:
    debugger = Debugger()
    slow = debugger.subscribe("website")
    records = [record(n) for n in range(SUBSCRIBER_QUEUE + 250)]
    for start in range(0, len(records), 50):  # nobody reads meanwhile: a put that waited
        accept(debugger, records[start : start + 50])  # for room would never return
    assert slow.missed == 250
    assert slow.queue.qsize() == SUBSCRIBER_QUEUE
    first = await slow.next(0.1)
    assert first is not None and first["messageId"] == "m0"  # the oldest were kept, in order
    # the debugger itself still holds the newest
    assert debugger.recent("website", 1)[0]["messageId"] == f"m{len(records) - 1}"


async def test_the_stream_sends_entries_missed_counts_and_keepalives() -> None:
    debugger = Debugger()
    stream = debugger.stream("website", keepalive_secs=0.02)
    assert await anext(stream) == b"retry: 2000\n: connected\n\n"
    accept(debugger, [record(1)])
    chunk = await anext(stream)
    kind, data = chunk.split(b"\n", 1)
    assert kind == b"event: entry"
    assert orjson.loads(data.removeprefix(b"data: "))["messageId"] == "m1"
    assert await anext(stream) == b": keep-alive\n\n"
    # a reader that stopped reading: the queue fills, then entries are lost and counted
    for start in range(0, SUBSCRIBER_QUEUE + 7, 100):
        accept(debugger, [record(n) for n in range(start, min(start + 100, SUBSCRIBER_QUEUE + 7))])
    assert await anext(stream) == b"event: missed\ndata: 7\n\n"
    assert (await anext(stream)).startswith(b"event: entry\n")
    await stream.aclose()
    # the stream's subscription ended with it: nothing is queued for a gone reader
    assert debugger._subscribers == {}


def test_the_last_event_received_is_not_hidden_by_refusals() -> None:
    debugger = Debugger()
    assert debugger.last_received_ms("website") is None
    accept(debugger, [record(1), record(2)])
    for _ in range(KEEP - 10):  # a flood of requests with an unknown key, newer than the events
        debugger.refused(refusal("key:wk_wr…"))
    debugger.refused(refusal("website", "invalid_json"))
    assert debugger.last_received_ms("website") == T0 + 2
    assert debugger.last_received_ms("backend") is None


async def test_a_batch_larger_than_the_ring_reaches_subscribers_whole() -> None:
    debugger = Debugger()
    sub = debugger.subscribe("website")
    records = [record(n) for n in range(KEEP + 100)]  # one request of 600 events
    accept(debugger, records, duplicates=frozenset({KEEP + 99}))
    got = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [e["messageId"] for e in got] == [r.message_id for r in records]
    assert got[-1]["kind"] == "duplicate" and sub.missed == 0
    assert len(debugger.recent("website", 10_000)) == KEEP
