"""The event log's contract, shared by every backend.

The log is an append-only sequence of normalised events for one workspace. Each event gets a
monotonically increasing ``offset``. Readers follow it with ``read(after=...)`` and ``wait``.
A backend must:

- make ``append`` durable before it returns (the gateway answers 2xx only afterwards);
- deduplicate by ``message_id`` within at least ``dedupe_window_secs`` (24 h): a duplicate is
  not stored again, and its result points at the stored original;
- hand out offsets in commit order, so readers that follow ``read(after=...)`` see every
  event once, in order;
- refuse writes with :class:`~headwater.errors.LogUnavailable` (never lose them) when it is
  over its disk budget or too slow, so the gateway can answer 503 with ``Retry-After``;
- drop old data by whole segments (age and size retention), never row by row.

The embedded backend is :mod:`headwater.log.sqlite`; :mod:`headwater.log.memory` is a test
double; :mod:`headwater.log.jetstream` keeps the log on a NATS JetStream stream (the stream
sequence as the offset, ``Nats-Msg-Id`` for the dedupe, ``max_age``/``max_bytes`` for
retention). All pass the same conformance suite (``tests/log/test_conformance.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

DEDUPE_WINDOW_SECS = 24 * 3600


@dataclass(frozen=True, slots=True)
class Record:
    """One normalised event on its way into the log."""

    message_id: str
    source: str
    type: str
    received_at_ms: int
    payload: bytes  # the normalised event as JSON


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An event as the log holds it."""

    offset: int
    message_id: str
    source: str
    type: str
    received_at_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an appended record went: its offset, or the original's when a duplicate."""

    offset: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass dropped."""

    segments_dropped: int
    records_dropped: int
    bytes_dropped: int


@dataclass(frozen=True, slots=True)
class LogStats:
    """A snapshot of the log for status pages and back-pressure decisions."""

    first_offset: int | None  # oldest offset still retained, None when empty
    last_offset: int | None  # newest offset, None when empty
    records: int  # records retained
    payload_bytes: int  # bytes of retained payloads
    disk_bytes: int  # bytes the backend occupies on disk
    segments: int
    oldest_received_at_ms: int | None
    appended_total: int  # records stored since the process started
    duplicates_total: int  # duplicates refused since the process started
    commit_latency_ms: float  # recent commit latency (moving average)
    refusing: str | None  # why writes are refused now, None when accepting
    replicas: tuple[Replica, ...] = ()  # a replicated log's copies (JetStream), leader first


@dataclass(frozen=True, slots=True)
class Replica:
    """One server's copy of a replicated log, as its leader reports it."""

    name: str
    leader: bool
    current: bool  # caught up with the leader
    offline: bool
    seen_secs: float  # since the leader last heard from it (0 for the leader itself)
    lag: int  # operations behind the leader


@runtime_checkable
class EventLog(Protocol):
    """The log as every stage sees it. Small on purpose: see the module docstring."""

    async def append(self, records: Sequence[Record]) -> list[AppendResult]:
        """Store records durably, deduplicating by message id; one result per record.

        Raises LogUnavailable when the log refuses writes for now, LogClosed after close().
        """
        ...

    async def read(self, after: int, limit: int = 500) -> list[StoredRecord]:
        """Records with an offset greater than ``after``, oldest first, at most ``limit``."""
        ...

    async def get(self, message_id: str) -> StoredRecord | None:
        """The retained record with this message id, or None."""
        ...

    async def wait(self, after: int, timeout_secs: float) -> bool:
        """Return once a record with an offset greater than ``after`` is committed (at once if
        there is one), or after ``timeout_secs``; True when there is one. Followers of the
        log (the delivery workers) wait here instead of polling."""
        ...

    async def enforce_retention(self, now_ms: int | None = None) -> RetentionReport:
        """Drop segments past the age or size limits (backends also do this on their own)."""
        ...

    def stats(self) -> LogStats:
        """A cheap snapshot; never blocks on I/O."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release resources. Idempotent."""
        ...
