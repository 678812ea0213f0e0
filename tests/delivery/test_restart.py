"""Restarts: a new engine on the same data dir and log carries on where the last one stopped."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import pytest

from headwater.delivery import worker
from headwater.delivery.outcomes import EventState
from headwater.delivery.policy import BreakerState
from tests.delivery.conftest import FAST, Pipeline, event, ids_of, webhook
from tests.fakes import FakeDestination, Reply, always


async def test_restart_mid_outage_keeps_retries_and_cursor(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    fake.script = always(500)
    pipeline: Pipeline = await make_pipeline(
        [webhook("hook", fake.url, concurrency=2, breaker_failures=3, **FAST)]
    )
    ids = await pipeline.send([event() for _ in range(20)])
    await pipeline.wait(lambda: pipeline.worker("hook").breaker.state is not BreakerState.CLOSED)
    ids += await pipeline.send([event() for _ in range(10)])  # these wait in the log
    await asyncio.sleep(0.2)
    await pipeline.engine.stop()
    stored = await pipeline.cli(lambda db: (db.retry_summary("hook"), db.cursors()))
    (retrying, _), cursors = stored
    assert retrying == 20, "the retries of the first read are not all in the store"
    assert cursors["hook"] == await pipeline.offset_of(ids[19])

    pipeline.engine = type(pipeline.engine)(pipeline.workspace, pipeline.log, pipeline.data_dir)
    await pipeline.engine.start()
    assert pipeline.worker("hook").queued_behind()[0] == cursors["hook"]
    down = len(fake.requests)
    await pipeline.wait(lambda: len(fake.requests) >= down + 3)  # still down after the restart
    fake.script = always(200)
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)
    await asyncio.sleep(0.2)
    delivered = ids_of(fake.events(200))
    duplicates = len(delivered) - len(set(delivered))
    assert set(delivered) == set(ids)
    assert duplicates == 0, f"{duplicates} duplicates after a clean stop"
    rows = await pipeline.ledger("hook", ids[0])
    assert rows[-1].attempts > 1 and rows[0].state is EventState.RETRYING


async def test_batches_in_flight_past_the_stop_grace_are_sent_again(
    make_pipeline: Any, fake: FakeDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "STOP_GRACE_SECS", 0.2)
    fake.script = always(202, hold=True)  # answered only after the engine gave up
    pipeline: Pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=2)])
    ids = await pipeline.send([event() for _ in range(2)])
    await pipeline.wait(lambda: len(fake.requests) >= 2)
    # the answers are held until the stop returns: it can only return by giving up on them
    await asyncio.wait_for(pipeline.engine.stop(), 30)
    assert fake.answered == 0, "the stop waited for the slow requests"
    fake.release()
    fake.script = always(200)
    await pipeline.restart()
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)
    assert sorted(ids_of(fake.events(200))) == sorted(ids)
    # Those in flight at the stop arrive twice: the duplicates at-least-once allows.
    assert collections.Counter(ids_of(fake.events(None))) == dict.fromkeys(ids, 2)


async def test_a_stop_sends_nothing_new_and_loses_nothing(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    fake.script = always(200, delay_secs=0.3)
    pipeline: Pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=1)])
    ids = await pipeline.send([event() for _ in range(50)])
    await pipeline.wait(lambda: len(fake.requests) >= 1)
    await pipeline.engine.stop()
    # waiting for the whole read would have sent all 50, one after the other
    assert len(fake.requests) <= 2, "the stop waited for the whole read to be sent"
    fake.script = always(200)
    await pipeline.restart()
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)
    assert ids_of(fake.events(200)) == ids, "not all delivered once, in order"


async def test_a_replay_created_while_stopped_runs_at_start(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    pipeline: Pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=1)])
    ids = await pipeline.send([event() for _ in range(5)])
    await pipeline.wait(lambda: len(fake.requests) >= 5)
    await pipeline.engine.stop()
    now = int(time.time() * 1000)
    last = pipeline.log.stats().last_offset
    assert last is not None
    replay_id = await pipeline.cli(lambda db: db.create_replay("hook", now - 60_000, now, last))
    await pipeline.restart()
    await pipeline.wait(lambda: len(fake.requests) >= 10, within=5)
    job = await pipeline.cli(lambda db: db.replay(replay_id))
    assert ids_of(fake.events()) == ids + ids
    await asyncio.sleep(0.1)
    job = await pipeline.cli(lambda db: db.replay(replay_id))
    assert job.state == "done" and job.sent == 5


async def test_expiry_never_skips_an_event_received_out_of_order(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    """Received times are not always in log order (concurrent appends): dead-lettering what
    outlived the retry window must not pass over younger events between older ones."""
    fake.script = always(500)
    pipeline: Pipeline = await make_pipeline(
        [webhook("hook", fake.url, breaker_failures=1, retry_window_secs=1, **FAST)]
    )
    [first] = await pipeline.send([event()])
    await pipeline.wait(lambda: pipeline.worker("hook").breaker.state is not BreakerState.CLOSED)
    now = int(time.time() * 1000)
    young, old = event(received_ms=now + 60_000), event(received_ms=now - 60_000)
    await pipeline.send([young, old])  # in the log: young, then old
    await pipeline.wait_states("hook", [old.message_id], EventState.DEAD_LETTERED, within=5)
    fake.script = lambda _r, _i: Reply(200)
    await pipeline.wait_states("hook", [young.message_id], EventState.DELIVERED, within=5)
    await pipeline.wait_states("hook", [first], EventState.DEAD_LETTERED, within=5)


async def test_a_stop_is_prompt_while_the_breaker_is_open(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    fake.script = always(500)
    pipeline: Pipeline = await make_pipeline(
        [webhook("hook", fake.url, breaker_failures=1, breaker_probe_secs=600,
                 breaker_max_probe_secs=600)]
    )  # fmt: skip
    await pipeline.send([event()])
    await pipeline.wait(lambda: pipeline.worker("hook").breaker.state is BreakerState.OPEN)
    await asyncio.sleep(0.05)
    # the next probe is 10 minutes away: a stop that waited for it would time out here
    await asyncio.wait_for(pipeline.engine.stop(), 60)
