"""Ingest flow counts: per source, step and minute, in memory until written, read exactly
at any time, and kept across restarts in a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from headwater.config.workspace import StateConfig
from headwater.observe.flow import DB_FILE, MINUTE_MS, Flow, FlowDB

HOUR_MS = 3_600_000
BASE = 1_800_000_000_000 - 1_800_000_000_000 % MINUTE_MS  # the start of a minute


State = StateConfig | None  # every test runs on SQLite (None) and PostgreSQL: state_backend


async def opened(path: Path, state: State, flush_secs: float = 3600.0) -> Flow:
    flow = Flow(path, flush_secs=flush_secs, state=state)
    await flow.open()
    return flow


async def test_reads_include_counts_not_written_yet(tmp_path: Path, state_backend: State) -> None:
    flow = await opened(tmp_path, state_backend)  # the writer would wait an hour
    try:
        now = time.time_ns() // 1_000_000
        flow.add("website", "received", 3)
        flow.add("website", "received")
        flow.add("website", "duplicate")
        flow.add("key:wk_wr…", "rejected:invalid_write_key", 2)
        flow.add("website", "rejected:invalid_json", 0)  # nothing: no row
        # each kind of read on its own includes what is pending (diagnose reads by source)
        assert await flow.by_source(now - HOUR_MS, now + MINUTE_MS) == {
            "website": Counter({"received": 4, "duplicate": 1}),
            "key:wk_wr…": Counter({"rejected:invalid_write_key": 2}),
        }
        flow.add("website", "received", 10)
        totals = await flow.totals(now - HOUR_MS, now + MINUTE_MS, "website")
        assert totals == Counter({"received": 14, "duplicate": 1})
        # a second CLI-like connection sees what the read flushed
        other = FlowDB.open(tmp_path, state_backend)
        try:
            assert other.totals(now - HOUR_MS, now + MINUTE_MS)["received"] == 14
        finally:
            other.close()
    finally:
        await flow.close()


async def test_counts_survive_close_and_reopen(tmp_path: Path, state_backend: State) -> None:
    flow = await opened(tmp_path, state_backend)
    flow.add("website", "received", 7, at_ms=BASE)
    flow.add("backend", "blocked:unplanned_event", 2, at_ms=BASE + 5_000)
    await flow.close()  # writes what is pending

    again = await opened(tmp_path, state_backend)
    try:
        assert await again.by_source(BASE, BASE + MINUTE_MS) == {
            "website": Counter({"received": 7}),
            "backend": Counter({"blocked:unplanned_event": 2}),
        }
        again.add("website", "received", 3, at_ms=BASE + 59_999)  # the same minute: added up
        assert (await again.totals(BASE, BASE + MINUTE_MS, "website"))["received"] == 10
    finally:
        await again.close()
    assert (tmp_path / DB_FILE).exists() == (state_backend is None)


async def test_the_background_writer_flushes_every_interval(
    tmp_path: Path, state_backend: State
) -> None:
    flow = await opened(tmp_path, state_backend, flush_secs=0.05)
    try:
        flow.add("website", "received", 5, at_ms=BASE)
        counts = FlowDB.open(tmp_path, state_backend)  # reads only: never flushes anything
        try:
            deadline = time.monotonic() + 5
            while counts.totals(BASE, BASE + MINUTE_MS)["received"] != 5:
                assert time.monotonic() < deadline, "the counts were never written"
                await asyncio.sleep(0.02)
        finally:
            counts.close()
    finally:
        await flow.close()


async def test_windows_are_whole_minutes(tmp_path: Path, state_backend: State) -> None:
    flow = await opened(tmp_path, state_backend)
    try:
        for minute in range(5):  # one event in each of five minutes, 30 s into the minute
            flow.add("website", "received", 10**minute, at_ms=BASE + minute * MINUTE_MS + 30_000)

        async def received(since: int, until: int) -> int:
            return (await flow.totals(since, until, "website"))["received"]

        assert await received(BASE, BASE + 5 * MINUTE_MS) == 11111
        assert await received(BASE + MINUTE_MS, BASE + 3 * MINUTE_MS) == 110  # [1, 3)
        # a window starting inside a minute counts that whole minute
        assert await received(BASE + 2 * MINUTE_MS + 45_000, BASE + 3 * MINUTE_MS) == 100
        # the minute the window ends in is left out: its start is not before ``until``
        assert await received(BASE, BASE + 4 * MINUTE_MS) == 1111
        assert await received(BASE + 5 * MINUTE_MS, BASE + 10 * MINUTE_MS) == 0
        assert await flow.totals(BASE, BASE + 5 * MINUTE_MS, "backend") == Counter()
    finally:
        await flow.close()


def test_prune_drops_the_minutes_before_a_time(tmp_path: Path, state_backend: State) -> None:
    db = FlowDB.open(tmp_path / "observe", state_backend)  # makes its directory
    try:
        db.add([(BASE + m * MINUTE_MS, "website", "received", 1) for m in range(10)])
        db.prune(BASE + 4 * MINUTE_MS)
        assert db.totals(0, BASE + HOUR_MS)["received"] == 6
        assert db.totals(BASE, BASE + 4 * MINUTE_MS) == Counter()
        assert db.by_source(BASE + 4 * MINUTE_MS, BASE + 5 * MINUTE_MS) == {
            "website": Counter({"received": 1})
        }
    finally:
        db.close()


def test_decisions_go_with_the_log_retention_and_past_a_row_cap(
    tmp_path: Path, state_backend: State
) -> None:
    db = FlowDB.open(tmp_path, state_backend)
    now = 1_800_000_000_000
    rows = [(f"m{i}", "website", now - i * 1000, b"[]") for i in range(100)]
    db.add([], rows)
    assert db.decision_rows() == 100
    assert db.prune_decisions(now - 89_500, max_rows=1000) == 90  # the 10 oldest are past it
    assert db.prune_decisions(0, max_rows=25) == 25  # then the oldest beyond the cap
    assert db.decisions("m0") == [] and db.decisions("m24") == []
    assert db.conn.execute("SELECT min(at_ms) FROM decisions").fetchone()[0] == now - 24_000
    db.close()


async def test_two_gateways_add_to_the_same_counts(tmp_path: Path, state_backend: State) -> None:
    first, second = (
        await opened(tmp_path / "a", state_backend),
        await opened(tmp_path / "b", state_backend),
    )
    try:
        first.add("website", "received", 3, at_ms=BASE)
        second.add("website", "received", 4, at_ms=BASE)
        await first.flush()
        await second.flush()
        totals = (await first.totals(BASE, BASE + MINUTE_MS))["received"]
        # On PostgreSQL both write the same rows; on SQLite each has its data directory.
        assert totals == (7 if state_backend is not None else 3)
    finally:
        await first.close()
        await second.close()
