"""The gateway's view of a delivery engine in another process, over the control channel:
counters, cursors, breaker, filter counts, devsink pages and traces as the engine has them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headwater.delivery.control import ControlServer
from headwater.delivery.remote import RemoteEngine
from tests.delivery.conftest import Pipeline, event

CEILING_SECS = 30.0
SINK = {"name": "sink", "type": "devsink", "sources": ["website"],
        "filters": [{"name": "debug", "if": 'event = "Debug"', "actions": [{"type": "DROP"}]}]}  # fmt: skip


async def until(check: Callable[[], Any]) -> None:
    deadline = time.monotonic() + CEILING_SECS
    while not await check():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.02)


async def test_the_remote_view_mirrors_the_engine(make_pipeline: Any, tmp_path: Path) -> None:
    pipeline: Pipeline = await make_pipeline([SINK])
    server = ControlServer(pipeline.engine, tmp_path / "control.sock")
    await server.start()
    remote = RemoteEngine(pipeline.workspace, pipeline.log, pipeline.data_dir, server.path)
    await remote.start()
    try:
        ids = await pipeline.send([event(), event(), event(event="Debug")])
        await pipeline.wait(lambda: pipeline.worker("sink").stats.delivered == 2)
        assert await remote.refresh()
        mirrored, local = remote.workers["sink"], pipeline.worker("sink")
        assert mirrored.alive and mirrored.stats.delivered == 2
        assert mirrored.queued_behind() == local.queued_behind()
        assert mirrored.breaker.state is local.breaker.state
        assert mirrored.stage.stats() == local.stage.stats()
        assert mirrored.stage.stats()[0]["dropped"] == 1, "the worker's counts, not local ones"
        assert mirrored.stats.latency_secs.count == local.stats.latency_secs.count == 2
        page = await remote.devsink_page("sink", 10)
        assert page is not None and page["total"] == 2
        assert {e["messageId"] for e in page["events"]} == set(ids[:2])
        assert await remote.devsink_page("nope", 10) is None
        found = await remote.states(ids[0])
        expected = await pipeline.engine.states(ids[0])
        assert found is not None and expected is not None and found[1] == expected[1]
    finally:
        await remote.stop()
        await server.stop()
    assert not server.path.exists()


async def test_a_worker_that_is_gone_reads_as_stopped(make_pipeline: Any, tmp_path: Path) -> None:
    pipeline: Pipeline = await make_pipeline([SINK])
    server = ControlServer(pipeline.engine, tmp_path / "control.sock")
    await server.start()
    remote = RemoteEngine(pipeline.workspace, pipeline.log, pipeline.data_dir, server.path)
    await remote.start()
    try:
        await until(remote.refresh)
        assert remote.workers["sink"].alive
        await server.stop()  # the worker process died
        assert not await remote.refresh()
        assert not remote.workers["sink"].alive
        assert await remote.devsink_page("sink", 10) is None
        await server.start()  # ... and was restarted: the view reconnects
        await until(remote.refresh)
        assert remote.workers["sink"].alive
    finally:
        await remote.stop()
        await server.stop()
