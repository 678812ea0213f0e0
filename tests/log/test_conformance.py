"""The event log contract (headwater.log.base): every backend must pass this suite.

A new backend adds itself to ``BACKENDS`` and must pass unchanged. The embedded backends
(``EMBEDDED``) also run the tests that need a fake clock, segments or a disk budget; JetStream
keeps real time and leaves those limits to its servers, and tests/log/test_jetstream.py
covers the same promises there with short limits and real servers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from headwater.config import LogConfig
from headwater.errors import LogClosed, LogUnavailable
from headwater.log import EventLog, Record
from headwater.log.jetstream import JetStreamLog
from headwater.log.memory import MemoryLog
from headwater.log.sqlite import SqliteLog
from headwater.log.sqlite_process import ProcessLog
from tests.jetstream_cluster import delete_streams

HOUR_MS = 3_600_000
T0 = 1_790_000_000_000  # a fixed wall-clock time (ms) for the fake clock


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def _sqlite(tmp: Path, config: LogConfig, clock: Clock) -> EventLog:
    return SqliteLog(tmp / "log", config, clock_ms=clock)


def _sqlite_process(tmp: Path, config: LogConfig, clock: Clock) -> EventLog:
    return ProcessLog(tmp / "log", config, clock_ms=clock)


def _memory(tmp: Path, config: LogConfig, clock: Clock) -> EventLog:
    return MemoryLog(config, clock_ms=clock)


def _jetstream(servers: list[str], stream: str) -> Callable[[Path, LogConfig, Clock], EventLog]:
    def make(tmp: Path, config: LogConfig, clock: Clock) -> EventLog:
        update = {"backend": "jetstream", "servers": servers, "stream": stream}
        return JetStreamLog(config.model_copy(update=update))

    return make


EMBEDDED: dict[str, Callable[[Path, LogConfig, Clock], EventLog]] = {
    "sqlite": _sqlite,
    "sqlite-process": _sqlite_process,
    "memory": _memory,
}
BACKENDS = [*EMBEDDED, "jetstream"]


async def _make_logs(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., EventLog]]:
    opened: list[EventLog] = []
    if request.param == "jetstream":
        cluster = request.getfixturevalue("nats_cluster")
        backend = _jetstream(cluster.urls, f"t{uuid.uuid4().hex[:12]}")
    else:
        backend = EMBEDDED[request.param]

    def make(clock: Clock | None = None, **overrides: Any) -> EventLog:
        config = LogConfig(durability="os", **overrides)
        log = backend(tmp_path, config, clock or Clock())
        opened.append(log)
        return log

    yield make
    for log in opened:  # also when a test failed before closing its log
        await log.close()
    if request.param == "jetstream":
        await delete_streams(cluster.urls, [log.stream for log in opened])  # type: ignore[attr-defined]


@pytest.fixture(params=BACKENDS)
async def make_log(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., EventLog]]:
    async for make in _make_logs(request, tmp_path):
        yield make


@pytest.fixture(params=sorted(EMBEDDED))
async def make_embedded_log(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., EventLog]]:
    async for make in _make_logs(request, tmp_path):
        yield make


@pytest.fixture
async def log(make_log: Callable[..., EventLog]) -> AsyncIterator[EventLog]:
    log = make_log()
    yield log
    await log.close()


def rec(mid: str, at_ms: int = T0, size: int = 0, source: str = "web") -> Record:
    payload = b'{"messageId":"%s","pad":"%s"}' % (mid.encode(), b"x" * size)
    return Record(
        message_id=mid, source=source, type="track", received_at_ms=at_ms, payload=payload
    )


async def test_offsets_increase_and_read_returns_everything_in_order(log: EventLog) -> None:
    first = await log.append([rec("a"), rec("b")])
    second = await log.append([rec("c")])
    offsets = [r.offset for r in first + second]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3
    assert not any(r.duplicate for r in first + second)
    stored = await log.read(after=0)
    assert [s.message_id for s in stored] == ["a", "b", "c"]
    assert [s.offset for s in stored] == offsets
    assert stored[0].payload == rec("a").payload
    assert (stored[0].source, stored[0].type, stored[0].received_at_ms) == ("web", "track", T0)


async def test_read_pages_by_offset(log: EventLog) -> None:
    await log.append([rec(f"m{i}") for i in range(25)])
    page1 = await log.read(after=0, limit=10)
    page2 = await log.read(after=page1[-1].offset, limit=10)
    page3 = await log.read(after=page2[-1].offset, limit=10)
    ids = [r.message_id for r in page1 + page2 + page3]
    assert ids == [f"m{i}" for i in range(25)]
    assert await log.read(after=page3[-1].offset) == []


async def test_duplicates_are_stored_once_and_point_at_the_original(log: EventLog) -> None:
    [original] = await log.append([rec("dup")])
    again = await log.append([rec("dup"), rec("new"), rec("new")])
    assert again[0].duplicate and again[0].offset == original.offset
    assert not again[1].duplicate
    assert again[2].duplicate and again[2].offset == again[1].offset
    assert [r.message_id for r in await log.read(after=0)] == ["dup", "new"]
    assert log.stats().duplicates_total == 2
    assert log.stats().appended_total == 2


async def test_dedupe_holds_for_24_hours_then_expires(
    make_embedded_log: Callable[..., EventLog],
) -> None:
    clock = Clock()
    log = make_embedded_log(clock)
    await log.append([rec("x")])
    clock.advance(24 * HOUR_MS - 1)
    [second] = await log.append([rec("x", at_ms=clock.now)])
    assert second.duplicate, "a duplicate within 24 h must be caught"
    clock.advance(49 * HOUR_MS)
    await log.enforce_retention()
    [third] = await log.append([rec("x", at_ms=clock.now)])
    assert not third.duplicate, "the dedupe window must not grow without bound"
    await log.close()


async def test_get_finds_by_message_id(log: EventLog) -> None:
    await log.append([rec("one"), rec("two")])
    found = await log.get("two")
    assert found is not None and found.message_id == "two"
    assert await log.get("missing") is None


async def test_wait_returns_at_once_when_records_follow(log: EventLog) -> None:
    [first] = await log.append([rec("w1")])
    # a wait that slept its timeout would not finish within the ceiling
    assert await asyncio.wait_for(log.wait(after=first.offset - 1, timeout_secs=600), 60)
    assert not await log.wait(after=first.offset, timeout_secs=0.05), "nothing is newer"


async def test_wait_wakes_when_an_append_commits(log: EventLog) -> None:
    [first] = await log.append([rec("w1")])
    waiter = asyncio.create_task(log.wait(after=first.offset, timeout_secs=600))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await log.append([rec("w2")])
    # a waiter that slept through the append would sleep its 10 minutes, past the ceiling
    assert await asyncio.wait_for(waiter, 60), "the waiter slept through the append"


async def test_wait_ignores_duplicates(log: EventLog) -> None:
    [first] = await log.append([rec("w1")])
    waiter = asyncio.create_task(log.wait(after=first.offset, timeout_secs=0.3))
    await log.append([rec("w1")])
    assert not await waiter


async def test_concurrent_appends_all_land_with_distinct_offsets(log: EventLog) -> None:
    async def client(n: int) -> list[int]:
        results = await log.append([rec(f"c{n}-{i}") for i in range(5)])
        return [r.offset for r in results]

    offsets = [o for batch in await asyncio.gather(*(client(n) for n in range(40))) for o in batch]
    assert len(set(offsets)) == 200
    stored = await log.read(after=0, limit=1000)
    assert sorted(s.offset for s in stored) == sorted(offsets)
    assert [s.offset for s in stored] == sorted(s.offset for s in stored)


async def test_retention_by_age_drops_whole_segments(
    make_embedded_log: Callable[..., EventLog],
) -> None:
    clock = Clock()
    log = make_embedded_log(clock, segment_max_age_secs=3600, retention_max_age_secs=3 * 3600)
    for hour in range(6):
        await log.append([rec(f"h{hour}-{i}", at_ms=clock.now) for i in range(3)])
        clock.advance(HOUR_MS)
    assert log.stats().segments == 6
    report = await log.enforce_retention()
    # now = T0 + 6h; segments whose newest event is older than T0 + 3h go
    assert report.segments_dropped == 3 and report.records_dropped == 9
    remaining = await log.read(after=0)
    assert remaining[0].message_id == "h3-0"
    assert len(remaining) == 9
    stats = log.stats()
    assert stats.segments == 3 and stats.records == 9
    assert stats.first_offset == remaining[0].offset
    await log.close()


async def test_retention_by_size_keeps_the_newest(
    make_embedded_log: Callable[..., EventLog],
) -> None:
    log = make_embedded_log(
        segment_max_bytes=1000, retention_max_bytes=2500, disk_budget_bytes=10**9
    )
    for i in range(10):
        await log.append([rec(f"s{i}", size=1000)])
    report = await log.enforce_retention()
    assert report.segments_dropped >= 7
    stats = log.stats()
    assert stats.payload_bytes <= 2500 + 1100
    remaining = [r.message_id for r in await log.read(after=0)]
    assert remaining == [f"s{i}" for i in range(10 - len(remaining), 10)]
    await log.close()


async def test_over_budget_refuses_without_losing_acknowledged(
    make_embedded_log: Callable[..., EventLog],
) -> None:
    log = make_embedded_log(disk_budget_bytes=200_000, retention_max_bytes=10**9)
    acked: list[str] = []
    refused: LogUnavailable | None = None
    for i in range(2000):
        batch = [rec(f"b{i}-{j}", size=500) for j in range(10)]
        try:
            await log.append(batch)
        except LogUnavailable as exc:
            refused = exc
            break
        acked.extend(r.message_id for r in batch)
        await asyncio.sleep(0)
    assert refused is not None, "the log never refused writes past its disk budget"
    assert refused.reason == "disk_budget" and refused.retry_after_secs > 0
    assert log.stats().refusing == "disk_budget"
    stored = {r.message_id for r in await log.read(after=0, limit=100_000)}
    assert set(acked) <= stored
    await log.close()


async def test_closed_log_refuses(log: EventLog) -> None:
    await log.append([rec("a")])
    await log.close()
    await log.close()  # idempotent
    with pytest.raises(LogClosed):
        await log.append([rec("b")])


async def test_stats_snapshot(log: EventLog) -> None:
    empty = log.stats()
    assert empty.records == 0 and empty.first_offset is None and empty.refusing is None
    await log.append([rec("a", size=10), rec("b", size=10)])
    stats = log.stats()
    assert stats.records == 2 and stats.appended_total == 2
    assert stats.first_offset is not None and stats.last_offset == stats.first_offset + 1
    assert stats.payload_bytes >= 2 * len(rec("a", size=10).payload)
    assert stats.oldest_received_at_ms == T0


async def test_stats_count_payload_bytes_exactly(
    make_embedded_log: Callable[..., EventLog],
) -> None:
    log = make_embedded_log()
    await log.append([rec("a", size=10), rec("b", size=10)])
    assert log.stats().payload_bytes == 2 * len(rec("a", size=10).payload)
    await log.close()
