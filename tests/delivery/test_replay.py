"""Replay: a time window of the log sent again to one destination through today's routing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from headwater.delivery import engine
from headwater.delivery.outcomes import EventState
from headwater.delivery.store import Replay
from tests.delivery.conftest import FAST, Pipeline, event, ids_of, webhook
from tests.fakes import FakeDestination, Reply


@pytest.fixture(autouse=True)
def scan_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine looks for new replay jobs every second; the tests have no second to lose."""
    monkeypatch.setattr(engine, "REPLAY_SCAN_SECS", 0.1)


async def sent_window(pipeline: Pipeline, fake: FakeDestination) -> dict[str, Any]:
    """Events before, in and after a window of time, all delivered live once."""
    now = int(time.time() * 1000)
    since, until = now - 30_000, now - 10_000
    before = [event(received_ms=now - 60_000 + i) for i in range(3)]
    inside = [event(received_ms=since + i * 1000) for i in range(4)]
    filtered = event(received_ms=since + 5000, integrations={"hook": False})
    other_source = [event("backend", received_ms=since + 6000 + i) for i in range(2)]
    edge = event(received_ms=until)  # the window is [since, until)
    after = [event(received_ms=now - 5000 + i) for i in range(2)]
    records = [*before, inside[0], filtered, *inside[1:3], *other_source, inside[3], edge, *after]
    await pipeline.send(records)
    live = len(records) - 1 - len(other_source)
    await pipeline.wait(lambda: len(fake.events()) >= live)
    assert len(fake.events()) == live
    return {
        "since": since,
        "until": until,
        "inside": [r.message_id for r in inside],
        "filtered": filtered.message_id,
        "last": pipeline.log.stats().last_offset,
        "requests": len(fake.requests),
    }


async def wait_done(pipeline: Pipeline, replay_id: int) -> Replay:
    job: list[Replay | None] = [None]

    async def poll() -> bool:
        job[0] = await pipeline.cli(lambda db: db.replay(replay_id))
        return job[0] is not None and job[0].state == "done"

    deadline = time.monotonic() + 5
    while not await poll():
        assert time.monotonic() < deadline, f"replay not done: {job[0]}"
        await asyncio.sleep(0.05)
    assert job[0] is not None
    return job[0]


@pytest.mark.parametrize("start", ["log start", "window start"])
async def test_replay_sends_exactly_the_window_again(
    make_pipeline: Any, fake: FakeDestination, start: str
) -> None:
    pipeline: Pipeline = await make_pipeline(
        [webhook("hook", fake.url, concurrency=1), {"name": "sink", "type": "devsink",
                                                     "sources": ["website"]}]
    )  # fmt: skip
    w = await sent_window(pipeline, fake)
    sink = pipeline.engine.devsink("sink")
    assert sink is not None
    sunk = sink.delivered_total
    after = 0 if start == "log start" else await pipeline.offset_of(w["inside"][0]) - 1
    replay_id = await pipeline.cli(
        lambda db: db.create_replay("hook", w["since"], w["until"], w["last"], after)
    )
    job = await wait_done(pipeline, replay_id)
    again = [e for r in fake.requests[w["requests"] :] for e in r.events()]
    assert ids_of(again) == w["inside"], "the replay did not send exactly the window, in order"
    assert (job.sent, job.filtered, job.skipped) == (4, 1, 2)
    assert job.position == w["last"] and job.finished_ms is not None
    assert sink.delivered_total == sunk, "a replay to one destination reached another"
    rows = await pipeline.ledger("hook", w["inside"][0])
    assert [r.state for r in rows] == [EventState.DELIVERED] * 2
    assert [r.state for r in await pipeline.ledger("hook", w["filtered"])] == [
        EventState.FILTERED
    ] * 2
    assert await pipeline.cli(lambda db: db.replays(active_only=True)) == []


async def test_replay_through_failures(make_pipeline: Any, fake: FakeDestination) -> None:
    pipeline: Pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=1, **FAST)])
    w = await sent_window(pipeline, fake)
    fails = {w["requests"], w["requests"] + 1}  # the replay's first two requests fail
    fake.script = lambda _r, i: Reply(503) if i in fails else Reply(200)
    replay_id = await pipeline.cli(
        lambda db: db.create_replay("hook", w["since"], w["until"], w["last"])
    )
    job = await wait_done(pipeline, replay_id)
    await pipeline.wait_states("hook", w["inside"], EventState.DELIVERED)
    again = [e for r in fake.requests[w["requests"] :] if r.status == 200 for e in r.events()]
    assert sorted(ids_of(again)) == sorted(w["inside"])
    assert (job.sent, job.filtered, job.skipped) == (4, 1, 2)
