"""What only the SQLite backend has: files, reopening, its writer's queue."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from headwater.config import LogConfig
from headwater.errors import LogError, LogUnavailable
from headwater.log import Record
from headwater.log.sqlite import DB_FILE, SqliteLog, wall_clock_ms
from headwater.log.sqlite_process import ProcessLog
from tests.log.test_conformance import HOUR_MS, Clock, rec


def now(mid: str, size: int = 0) -> Record:
    """A record received now: tests that run on the wall clock must not meet retention."""
    return rec(mid, at_ms=wall_clock_ms(), size=size)


def tables(directory: Path) -> set[str]:
    conn = sqlite3.connect(directory / DB_FILE)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


async def test_reopening_keeps_events_and_continues_offsets(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, LogConfig())
    first = await log.append([now("a"), now("b")])
    await log.close()
    log = SqliteLog(tmp_path, LogConfig())
    assert [r.message_id for r in await log.read(after=0)] == ["a", "b"]
    [again] = await log.append([now("a")])
    assert again.duplicate and again.offset == first[0].offset, "dedupe survives a restart"
    [new] = await log.append([now("c")])
    assert new.offset == first[-1].offset + 1
    await log.close()


async def test_a_second_request_is_refused_while_the_queue_is_full(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, LogConfig(durability="os", max_pending_records=10))
    await log.append([now("warm-up")])  # creates the segment and id tables
    blocker = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer now waits for the lock (busy_timeout)
    try:
        waiting = asyncio.create_task(log.append([now(f"big-{i}") for i in range(50)]))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        with pytest.raises(LogUnavailable) as refused:
            await log.append([now("one-more")])
        assert refused.value.reason == "overloaded"
        assert refused.value.retry_after_secs == 5
        assert "log.max_pending_records" in str(refused.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    results = await waiting
    assert len(results) == 50 and not any(r.duplicate for r in results)
    await log.close()


async def test_retention_drops_segment_tables_and_forgets_old_ids(tmp_path: Path) -> None:
    clock = Clock()
    config = LogConfig(segment_max_age_secs=3600, retention_max_age_secs=3600)
    log = SqliteLog(tmp_path, config, clock_ms=clock)
    await log.append([rec("old", at_ms=clock.now)])
    clock.advance(3 * 24 * HOUR_MS)
    await log.append([rec("new", at_ms=clock.now)])
    before = tables(tmp_path)
    assert {"seg_1", "seg_2"} <= before
    report = await log.enforce_retention()
    assert report.segments_dropped == 1 and report.records_dropped == 1
    after = tables(tmp_path)
    assert "seg_1" not in after and "seg_2" in after
    assert len([t for t in after if t.startswith("ids_")]) == 1, "the old day's ids are gone"
    assert await log.get("old") is None
    found = await log.get("new")
    assert found is not None and found.message_id == "new"
    await log.close()


async def test_large_appends_span_several_rows_and_read_back_whole(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, LogConfig(durability="os"))
    records = [now(f"r{i}", size=900) for i in range(2000)]  # about 2 MB: many rows
    await asyncio.gather(*(log.append(records[i : i + 100]) for i in range(0, 2000, 100)))
    stored = await log.read(after=0, limit=5000)
    assert sorted(r.message_id for r in stored) == sorted(r.message_id for r in records)
    middle = stored[1234]
    assert (await log.read(after=middle.offset - 1, limit=1))[0] == middle
    assert await log.get(middle.message_id) == middle
    await log.close()


async def test_text_survives_round_trip(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, LogConfig(durability="os"))
    record = Record("ünïcode-✓", "sörce", "track", 123, '{"name":"Zoë ✓"}'.encode())
    await log.append([record])
    [stored] = await log.read(after=0)
    assert (stored.message_id, stored.source, stored.payload) == (
        record.message_id, record.source, record.payload,
    )  # fmt: skip
    await log.close()


def test_a_damaged_file_is_reported_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogError, match="move it aside"):
        SqliteLog(tmp_path, LogConfig())


async def test_slow_writes_refuse_then_recover(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, LogConfig(durability="os", max_write_latency_ms=100))
    await log.append([now("warm-up")])
    blocker = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the next commit waits for this lock
    slow = asyncio.create_task(log.append([now("slow")]))
    await asyncio.sleep(1.5)
    blocker.execute("ROLLBACK")
    blocker.close()
    await slow  # the slow write itself is stored: nothing acknowledged is lost
    with pytest.raises(LogUnavailable) as refused:
        await log.append([now("while-slow")])
    assert refused.value.reason == "write_latency" and refused.value.retry_after_secs == 5
    assert log.stats().refusing == "write_latency"
    deadline = asyncio.get_running_loop().time() + 15
    while log.stats().refusing is not None:  # the latency decays once writes are quick again
        assert asyncio.get_running_loop().time() < deadline, "never accepted writes again"
        await asyncio.sleep(0.2)
    [result] = await log.append([now("after")])
    assert not result.duplicate
    assert {r.message_id for r in await log.read(after=0)} == {"warm-up", "slow", "after"}
    await log.close()


async def test_offsets_never_go_back_after_retention_empties_the_log(tmp_path: Path) -> None:
    clock = Clock()
    config = LogConfig(durability="os", retention_max_age_secs=3600)
    log = SqliteLog(tmp_path, config, clock_ms=clock)
    results = await log.append([rec(f"e{i}", at_ms=clock.now) for i in range(5)])
    clock.advance(2 * HOUR_MS)
    report = await log.enforce_retention()
    assert report.records_dropped == 5 and log.stats().segments == 0
    await log.close()
    log = SqliteLog(tmp_path, config, clock_ms=clock)
    [new] = await log.append([rec("after-restart", at_ms=clock.now)])
    assert new.offset == results[-1].offset + 1, "a reader's cursor must never miss new events"
    assert [r.message_id for r in await log.read(after=results[-1].offset)] == ["after-restart"]
    await log.close()


async def test_dropped_segments_give_their_space_back(tmp_path: Path) -> None:
    clock = Clock()
    config = LogConfig(durability="os", segment_max_age_secs=60, retention_max_age_secs=3600)
    log = SqliteLog(tmp_path, config, clock_ms=clock)
    conn = sqlite3.connect(tmp_path / DB_FILE)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2, "incremental auto_vacuum"
    conn.close()
    for i in range(20):
        await log.append([rec(f"big-{i}-{j}", at_ms=clock.now, size=4000) for j in range(50)])
        clock.advance(61_000)
    await log.close()  # checkpoints the WAL into the main file
    full = (tmp_path / DB_FILE).stat().st_size
    log = SqliteLog(tmp_path, config, clock_ms=clock)
    clock.advance(2 * HOUR_MS)
    report = await log.enforce_retention()
    assert report.segments_dropped == 20
    await log.close()
    after = (tmp_path / DB_FILE).stat().st_size
    assert full > 4_000_000 and after < full / 10, (full, after)


async def test_a_second_process_cannot_open_the_same_log(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, LogConfig(durability="os"))
    with pytest.raises(LogError, match="another Headwater process"):
        SqliteLog(tmp_path, LogConfig(durability="os"), lock_wait_secs=0.2)
    await log.close()
    again = SqliteLog(tmp_path, LogConfig(durability="os"))  # the lock goes with close()
    await again.close()


async def test_a_failing_writer_answers_every_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SqliteLog(tmp_path, LogConfig(durability="os"))
    await log.append([now("before")])

    def broken(*args: object) -> None:
        raise RuntimeError("simulated bug in the writer")

    monkeypatch.setattr(log, "_insert", broken)
    with pytest.raises(LogUnavailable) as first:
        await asyncio.wait_for(log.append([now("during")]), timeout=10)
    assert first.value.reason == "writer_failed"
    with pytest.raises(LogUnavailable):
        await asyncio.wait_for(log.append([now("after")]), timeout=10)
    assert log.stats().refusing == "writer_failed", "/readyz must not say ready"
    await log.close()


async def test_a_dead_writer_process_answers_every_caller(tmp_path: Path) -> None:
    log = ProcessLog(tmp_path, LogConfig(durability="os"))
    await log.append([now("before")])
    log._child.kill()  # the writer process dies (OOM killer, a bug, an operator)
    with pytest.raises(LogUnavailable) as refused:
        await asyncio.wait_for(log.append([now("after")]), timeout=10)
    assert refused.value.reason == "writer_failed"
    assert log.stats().refusing == "writer_failed", "/readyz must not say ready"
    assert [r.message_id for r in await log.read(after=0)] == ["before"], "reads still work"
    await log.close()


async def test_the_writer_process_reports_why_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogError, match="move it aside"):
        ProcessLog(tmp_path, LogConfig())
