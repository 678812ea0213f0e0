"""An in-memory event log for tests: same contract as the SQLite backend, nothing durable.

It exists so that stages can be tested fast, and so that the conformance suite is proven to
be about the contract rather than about SQLite. "Disk" here is the sum of payload sizes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from headwater.config.workspace import LogConfig
from headwater.errors import LogClosed, LogUnavailable
from headwater.log.base import (
    DEDUPE_WINDOW_SECS,
    AppendResult,
    LogStats,
    Record,
    RetentionReport,
    StoredRecord,
)
from headwater.log.notify import AppendSignal
from headwater.log.sqlite import DAY_MS, wall_clock_ms


@dataclass
class _Segment:
    created_ms: int
    records: list[StoredRecord] = field(default_factory=list)
    bytes: int = 0


class MemoryLog:
    """A non-durable :class:`~headwater.log.base.EventLog` for tests."""

    def __init__(self, config: LogConfig, *, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._config = config
        self._clock_ms = clock_ms
        self._segments: list[_Segment] = []
        self._ids: dict[int, dict[str, int]] = {}  # day -> message id -> offset
        self._next = 1
        self._appended = 0
        self._duplicates = 0
        self._closed = False
        self._lock = asyncio.Lock()
        self._signal = AppendSignal()

    async def append(self, records: Sequence[Record]) -> list[AppendResult]:
        if self._closed:
            raise LogClosed("the event log is closed")
        if self._over_budget():
            raise LogUnavailable(
                "the event log is over its disk budget (log.disk_budget_bytes); events were "
                "not stored, send them again later",
                reason="disk_budget",
                retry_after_secs=30,
            )
        async with self._lock:
            await asyncio.sleep(0)  # a real backend yields while it commits
            now = self._clock_ms()
            day = now // DAY_MS
            seen = {**self._ids.get(day - 1, {}), **self._ids.get(day, {})}
            today = self._ids.setdefault(day, {})
            seg = self._writable(now)
            out = []
            for r in records:
                if r.message_id in seen:
                    self._duplicates += 1
                    out.append(AppendResult(seen[r.message_id], True))
                    continue
                stored = StoredRecord(
                    self._next, r.message_id, r.source, r.type, r.received_at_ms, r.payload
                )
                seg.records.append(stored)
                seg.bytes += len(r.payload)
                seen[r.message_id] = today[r.message_id] = self._next
                out.append(AppendResult(self._next, False))
                self._next += 1
                self._appended += 1
            self._signal.committed(out)
            return out

    def _writable(self, now: int) -> _Segment:
        if self._segments:
            seg = self._segments[-1]
            full = seg.bytes >= self._config.segment_max_bytes
            old = now - seg.created_ms >= self._config.segment_max_age_secs * 1000
            if not (seg.records and (full or old)):
                return seg
        self._segments.append(_Segment(created_ms=now))
        return self._segments[-1]

    async def read(self, after: int, limit: int = 500) -> list[StoredRecord]:
        self._check_open()
        out: list[StoredRecord] = []
        for seg in self._segments:
            out.extend(r for r in seg.records if r.offset > after)
            if len(out) >= limit:
                break
        return out[:limit]

    async def wait(self, after: int, timeout_secs: float) -> bool:
        return await self._signal.wait(after, timeout_secs)

    async def get(self, message_id: str) -> StoredRecord | None:
        self._check_open()
        for seg in self._segments:
            for r in seg.records:
                if r.message_id == message_id:
                    return r
        return None

    async def enforce_retention(self, now_ms: int | None = None) -> RetentionReport:
        self._check_open()
        now = self._clock_ms() if now_ms is None else now_ms
        cutoff = now - self._config.retention_max_age_secs * 1000
        total = self._disk_bytes()
        dropped: list[_Segment] = []
        for seg in list(self._segments):
            expired = bool(seg.records) and seg.records[-1].received_at_ms < cutoff
            oversize = total > self._config.retention_max_bytes and seg is not self._segments[-1]
            if not (expired or oversize):
                break  # segments are in age order: keep this one and every newer one
            dropped.append(self._segments.pop(0))
            total -= seg.bytes
        window_day = (now - DEDUPE_WINDOW_SECS * 1000) // DAY_MS
        for day in [d for d in self._ids if d < window_day]:
            del self._ids[day]
        return RetentionReport(
            len(dropped), sum(len(s.records) for s in dropped), sum(s.bytes for s in dropped)
        )

    def stats(self) -> LogStats:
        records = [r for s in self._segments for r in s.records]
        return LogStats(
            first_offset=records[0].offset if records else None,
            last_offset=records[-1].offset if records else None,
            records=len(records),
            payload_bytes=self._disk_bytes(),
            disk_bytes=self._disk_bytes(),
            segments=len(self._segments),
            oldest_received_at_ms=min((r.received_at_ms for r in records), default=None),
            appended_total=self._appended,
            duplicates_total=self._duplicates,
            commit_latency_ms=0.0,
            refusing="disk_budget" if self._over_budget() else None,
        )

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed("the event log is closed")

    def _over_budget(self) -> bool:
        budget = self._config.disk_budget_bytes
        return budget is not None and self._disk_bytes() >= budget

    def _disk_bytes(self) -> int:
        return sum(s.bytes for s in self._segments)
