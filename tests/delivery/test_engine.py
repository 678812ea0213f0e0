"""The delivery engine against fake destination servers scripted to fail: the basics."""

from __future__ import annotations

import asyncio
from typing import Any

from headwater.delivery.outcomes import EventState
from tests.delivery.conftest import event, ids_of, webhook
from tests.fakes import FakeDestination, Reply, always


async def test_events_reach_the_destination_in_order(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=1)])
    ids = await pipeline.send([event() for _ in range(20)])
    await pipeline.wait(lambda: len(fake.requests) >= 20)
    assert ids_of(fake.events()) == ids
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)
    [row] = await pipeline.ledger("hook", ids[0])
    assert (row.state, row.status, row.attempts) == (EventState.DELIVERED, 200, 1)


async def test_500s_then_recovery_drains_in_order(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    fake.script = always(500)
    pipeline = await make_pipeline(
        [webhook("hook", fake.url, concurrency=1, backoff_base_secs=0.05,
                 breaker_probe_secs=0.1, breaker_failures=3)]
    )  # fmt: skip
    ids = await pipeline.send([event() for _ in range(10)])
    await pipeline.wait(lambda: len(fake.requests) >= 5)
    fake.script = always(200)
    await pipeline.wait(lambda: set(ids) <= set(ids_of(fake.events(200))))
    delivered = ids_of(fake.events(200))
    assert delivered == ids, "the backlog drained out of order or twice"


async def test_429_retry_after_is_honoured(make_pipeline: Any, fake: FakeDestination) -> None:
    fake.script = lambda _r, i: Reply(429, headers={"Retry-After": "1"}) if i == 0 else Reply(200)
    pipeline = await make_pipeline([webhook("hook", fake.url, backoff_base_secs=0.01)])
    [mid] = await pipeline.send([event()])
    await pipeline.wait(lambda: len(fake.requests) >= 2)
    gap = fake.requests[1].at - fake.requests[0].at
    assert gap >= 1.0, f"retried {gap:.2f}s after a 429 with Retry-After: 1"
    assert ids_of(fake.events(200)) == [mid]


async def test_401_is_discarded_with_the_answer(make_pipeline: Any, fake: FakeDestination) -> None:
    fake.script = always(401, body=b'{"error":"bad token"}')
    pipeline = await make_pipeline([webhook("hook", fake.url, backoff_base_secs=0.01)])
    [mid] = await pipeline.send([event()])
    await pipeline.wait_states("hook", [mid], EventState.DISCARDED)
    await asyncio.sleep(0.3)  # time enough for a (wrong) retry
    assert len(fake.requests) == 1, "a 401 must not be retried"
    [row] = await pipeline.ledger("hook", mid)
    assert row.status == 401 and "bad token" in (row.reason or "")
    assert row.exchange is not None and row.exchange["response"]["status"] == 401
