"""The delivery engine against fake destination servers scripted to fail."""

from __future__ import annotations

import time
from typing import Any

from headwater.delivery.outcomes import EventState
from tests.delivery.conftest import Pipeline, event
from tests.fakes import FakeDestination, Reply, always


def webhook(name: str, url: str, **delivery: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "sources": ["website"],
            "settings": {"url": url}, "delivery": delivery}  # fmt: skip


def ids_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["messageId"] for e in events]


async def states(pipeline: Pipeline, destination: str, offset: int) -> list[EventState]:
    rows = await pipeline.engine.store.run(lambda db: db.ledger_rows(destination, offset))
    return [r.state for r in rows]


async def test_events_reach_the_destination_in_order(make_pipeline: Any, fake: FakeDestination) -> None:
    pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=1)])
    ids = await pipeline.send([event() for _ in range(20)])
    await pipeline.wait(lambda: len(fake.requests) >= 20)
    assert ids_of(fake.events()) == ids
    assert await states(pipeline, "hook", 1) == [EventState.DELIVERED]


async def test_500s_then_recovery_drains_in_order(make_pipeline: Any, fake: FakeDestination) -> None:
    fake.script = always(500)
    pipeline = await make_pipeline(
        [webhook("hook", fake.url, concurrency=1, backoff_base_secs=0.05, breaker_probe_secs=0.1,
                 breaker_failures=3)]  # fmt: skip
    )
    ids = await pipeline.send([event() for _ in range(10)])
    await pipeline.wait(lambda: len(fake.requests) >= 5)
    fake.script = always(200)
    await pipeline.wait(lambda: set(ids) <= set(ids_of(fake.events(200))))
    delivered = ids_of(fake.events(200))
    assert sorted(delivered, key=ids.index) == delivered, "the backlog drained out of order"
    assert len(delivered) == len(set(delivered))


async def test_429_retry_after_is_honoured(make_pipeline: Any, fake: FakeDestination) -> None:
    fake.script = lambda _r, i: Reply(429, headers={"Retry-After": "1"}) if i == 0 else Reply(200)
    pipeline = await make_pipeline([webhook("hook", fake.url, backoff_base_secs=0.01)])
    [mid] = await pipeline.send([event()])
    await pipeline.wait(lambda: len(fake.requests) >= 2)
    gap = fake.requests[1].at - fake.requests[0].at
    assert gap >= 0.95, f"retried {gap:.2f}s after a 429 with Retry-After: 1"
    assert ids_of(fake.events(200)) == [mid]


async def test_401_is_discarded_with_the_answer(make_pipeline: Any, fake: FakeDestination) -> None:
    fake.script = always(401, body=b'{"error":"bad token"}')
    pipeline = await make_pipeline([webhook("hook", fake.url)])
    await pipeline.send([event()])
    await pipeline.wait(lambda: len(fake.requests) >= 1)
    time.sleep(0.3)
    assert len(fake.requests) == 1, "a 401 must not be retried"
    rows = await pipeline.engine.store.run(lambda db: db.ledger_rows("hook", 1))
    await pipeline.wait(lambda: True)
    assert [r.state for r in rows] == [EventState.DISCARDED]
    assert rows[0].status == 401 and "bad token" in (rows[0].reason or "")
    assert rows[0].exchange is not None and rows[0].exchange["response"]["status"] == 401
