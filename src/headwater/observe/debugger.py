"""The source debugger: the newest events of each source, and the requests refused, live.

Segment's debugger shows a sample of what arrived; "nothing in the debugger" then leaves the
user guessing. Here every source keeps its newest ``keep`` events (500 by default) *and* the
refusals filed under it, and refusals that could not be tied to a source (an unknown write
key, no key at all) are shown in every source's view, marked with why — a wrong key shows up
right where the user is looking.

Recording is on the ingest hot path, so it only appends references to the records the
gateway already built to a bounded deque; turning them into documents waits until someone
looks. Live views (Server-Sent Events, ``headwater tail``) subscribe to a source and get
each new entry through a bounded queue; a subscriber that cannot keep up loses entries and
is told how many, it never slows ingestion.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.gateway.normalize import iso_ms
from headwater.gateway.stats import Rejection, vars_of
from headwater.log.base import AppendResult, Record

KEEP = 500
SUBSCRIBER_QUEUE = 1000
UNATTRIBUTED = ""  # refusals without a known source: shown in every source's view


@dataclass(frozen=True, slots=True)
class _Duplicate:
    record: Record
    at_ms: int


@dataclass(frozen=True, slots=True)
class _Refused:
    rejection: Rejection
    at_ms: int


_Entry = Record | _Duplicate | _Refused


class Subscription:
    """One live view of a source. Iterate for entries (dicts); ``close`` when done."""

    def __init__(self, debugger: Debugger, source: str) -> None:
        self.source = source
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.missed = 0  # entries dropped because the reader was too slow
        self._debugger = debugger

    def put(self, entry: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.missed += 1

    async def next(self, timeout_secs: float) -> dict[str, Any] | None:
        """The next entry, or None after ``timeout_secs`` (time for a keep-alive)."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.queue.get(), timeout_secs)
        return None

    def close(self) -> None:
        self._debugger.unsubscribe(self)


class Debugger:
    """Newest events and refusals per source, for ``/api/v1/sources/{name}/debugger``."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._rings: dict[str, deque[_Entry]] = {}
        self._subscribers: dict[str, set[Subscription]] = {}

    # ------------------------------------------------------------------ recording (hot path)

    def accepted(
        self,
        source: str,
        records: Sequence[Record],
        results: Sequence[AppendResult],
        duplicates: int = -1,
    ) -> None:
        """Records the log took (``results`` says which were duplicates; ``duplicates``
        counts them when the caller knows, so the common case skips the scan)."""
        ring = self._rings.get(source)
        if ring is None:
            ring = self._ring(source)
        entries: Sequence[_Entry] = records
        if duplicates and any(r.duplicate for r in results):
            now = _now_ms()
            entries = [
                _Duplicate(rec, now) if res.duplicate else rec
                for rec, res in zip(records, results, strict=True)
            ]
        ring.extend(entries)
        # all of them to live views: a batch can be larger than the ring
        if self._subscribers and self._subscribers.get(source):
            for entry in entries:
                self._publish(source, entry)

    def refused(self, rejection: Rejection) -> None:
        """A request or an item the gateway refused (called through IngestStats)."""
        scope = rejection.scope
        source = UNATTRIBUTED if scope == "unknown" or scope.startswith("key:") else scope
        entry = _Refused(rejection, _now_ms())
        self._ring(source).append(entry)
        if source == UNATTRIBUTED:
            for subscribers in self._subscribers.values():
                for sub in subscribers:
                    sub.put(_document(entry))
        elif self._subscribers.get(source):
            self._publish(source, entry)

    # ------------------------------------------------------------------ reading

    def recent(self, source: str, limit: int = KEEP) -> list[dict[str, Any]]:
        """The newest entries of a source and the unattributed refusals, newest first."""
        entries = list(self._rings.get(source, ())) + list(self._rings.get(UNATTRIBUTED, ()))
        entries.sort(key=_at_ms, reverse=True)
        return [_document(e) for e in entries[:limit]]

    def last_received_ms(self, source: str) -> int | None:
        """When the source's newest event in the ring arrived (duplicates count), if any.

        Looks at the source's own ring only: a flood of refusals nobody can be tied to (the
        unknown write key of a rotated SDK) must not hide the last event that got through.
        """
        ring = self._rings.get(source, ())
        return max((_at_ms(e) for e in ring if not isinstance(e, _Refused)), default=None)

    def counts(self, source: str) -> dict[str, int]:
        """What the source's ring holds now, by kind."""
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
        for entry in self._rings.get(source, ()):
            counts[_kind(entry)] += 1
        return counts

    def subscribe(self, source: str) -> Subscription:
        sub = Subscription(self, source)
        self._subscribers.setdefault(source, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.source)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.source]

    async def stream(self, source: str, keepalive_secs: float = 15.0) -> AsyncIterator[bytes]:
        """Server-Sent Events of a source's new entries: ``event: entry`` with the JSON
        document, ``event: missed`` when a slow reader lost some, comments as keep-alives."""
        sub = self.subscribe(source)
        try:
            yield b"retry: 2000\n: connected\n\n"
            reported = 0
            while True:
                entry = await sub.next(keepalive_secs)
                if sub.missed != reported:
                    yield b"event: missed\ndata: %d\n\n" % (sub.missed - reported)
                    reported = sub.missed
                if entry is None:
                    yield b": keep-alive\n\n"
                    continue
                yield b"event: entry\ndata: " + orjson.dumps(entry) + b"\n\n"
        finally:
            sub.close()

    # ------------------------------------------------------------------ internals

    def _ring(self, source: str) -> deque[_Entry]:
        ring = self._rings.get(source)
        if ring is None:
            ring = self._rings[source] = deque(maxlen=self.keep)
        return ring

    def _publish(self, source: str, entry: _Entry) -> None:
        document = _document(entry)
        for sub in self._subscribers.get(source, ()):
            sub.put(document)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _at_ms(entry: _Entry) -> int:
    if isinstance(entry, Record):
        return entry.received_at_ms
    return entry.at_ms


def _kind(entry: _Entry) -> str:
    if isinstance(entry, Record):
        return "accepted"
    return "duplicate" if isinstance(entry, _Duplicate) else "rejected"


def _document(entry: _Entry) -> dict[str, Any]:
    """What the API, the console and ``headwater tail`` show for one entry."""
    if isinstance(entry, _Refused):
        r = entry.rejection
        return {
            "kind": "rejected",
            "at": iso_ms(entry.at_ms),
            "messageId": r.message_id,
            "source": None if r.scope == "unknown" or r.scope.startswith("key:") else r.scope,
            "rejection": vars_of(r),
        }
    record = entry.record if isinstance(entry, _Duplicate) else entry
    event = orjson.loads(record.payload)
    return {
        "kind": _kind(entry),
        "at": iso_ms(record.received_at_ms),
        "messageId": record.message_id,
        "source": record.source,
        "type": record.type,
        "name": _name_of(event),
        "event": event,
    }


def _name_of(event: Any) -> str | None:
    """The label Segment's debugger shows: the event name, page name, or user/group id."""
    if not isinstance(event, dict):
        return None
    for key in ("event", "name", "groupId", "userId", "previousId"):
        value = event.get(key)
        if isinstance(value, str) and value:
            return value
    return None
