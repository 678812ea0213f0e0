"""A follower of the log (the delivery worker's view): reads what the writer committed,
is woken by the writer's side, refuses to write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from headwater.config import LogConfig
from headwater.errors import LogError
from headwater.log.follow import FollowerLog
from headwater.log.notify import WakeSender
from headwater.log.sqlite import SqliteLog
from tests.log.test_sqlite import now

CEILING_SECS = 30.0


async def test_a_follower_is_woken_by_the_writers_datagram(tmp_path: Path) -> None:
    writer = SqliteLog(tmp_path, LogConfig())
    await writer.append([now("a")])
    wake = tmp_path / "wake.sock"
    # a poll interval far beyond the ceiling: only the datagram can wake it in time
    follower = FollowerLog(tmp_path, wake, poll_secs=3600)
    await follower.open()
    sender = WakeSender(wake)
    writer.signal.on_commit = sender
    try:
        assert follower.stats().last_offset == 1
        waiting = asyncio.ensure_future(follower.wait(after=1, timeout_secs=CEILING_SECS))
        await asyncio.sleep(0)
        assert not waiting.done()
        await writer.append([now("b"), now("c")])
        assert await asyncio.wait_for(waiting, CEILING_SECS) is True
        assert follower.stats().last_offset == 3
        assert [r.message_id for r in await follower.read(after=1)] == ["b", "c"]
        found = await follower.get("c")
        assert found is not None and found.offset == 3
    finally:
        sender.close()
        await follower.close()
        await writer.close()
    assert not wake.exists(), "the listener removes its socket when it closes"


async def test_a_follower_without_wakeups_polls_the_file(tmp_path: Path) -> None:
    writer = SqliteLog(tmp_path, LogConfig())
    await writer.append([now("a")])
    follower = FollowerLog(tmp_path, None, poll_secs=0.05)
    await follower.open()
    try:
        await writer.append([now("b")])
        assert await follower.wait(after=1, timeout_secs=CEILING_SECS) is True
        assert (await follower.read(after=1))[0].message_id == "b"
    finally:
        await follower.close()
        await writer.close()


async def test_a_follower_refuses_writes_and_needs_an_existing_log(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="no event log"):
        FollowerLog(tmp_path / "missing", None)
    writer = SqliteLog(tmp_path, LogConfig())
    follower = FollowerLog(tmp_path, None)
    await follower.open()
    try:
        with pytest.raises(LogError, match="only the gateway's writer appends"):
            await follower.append([now("x")])
        with pytest.raises(LogError, match="retention runs in the log's writer"):
            await follower.enforce_retention()
    finally:
        await follower.close()
        await writer.close()
