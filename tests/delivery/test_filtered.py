"""Events a destination does not take at all (``Filtered`` in ``Attempt.per_event``): a
mapped destination whose actions' triggers match none of them records them as filtered with
the reason, never sends or retries them, and delivers the rest."""

from __future__ import annotations

import time
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import Attempt, Delivered, EventState, Exchange, Filtered
from headwater.delivery.partial import heard, outcome_groups
from headwater.delivery.policy import BreakerState, CircuitBreaker
from headwater.observe.delivery_report import delivery_report
from tests.delivery.conftest import FAST, Pipeline, event
from tests.fakes import FakeDestination, Reply


def tracks_only(url: str, **delivery: Any) -> dict[str, Any]:
    """An http destination whose one action sends only tracks, batched."""
    return {"name": "api", "type": "http", "sources": ["website"],
            "settings": {"url": f"{url}/collect", "batch": True,
                         "mapping": {"event": {"@path": "$.event"}, "id": {"@path": "$.messageId"}}},
            "actions": [{"name": "send", "trigger": 'type = "track"'}],
            "delivery": {**FAST, **delivery}}  # fmt: skip


async def test_unsubscribed_events_are_filtered_not_failed(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    pipeline: Pipeline = await make_pipeline([tracks_only(fake.url)])
    records = [event(type="identify", traits={"plan": "pro"}) if i % 3 == 0 else event()
               for i in range(9)]  # fmt: skip
    ids = await pipeline.send(records)
    identifies, tracks = ids[::3], [m for i, m in enumerate(ids) if i % 3]
    await pipeline.wait_states("api", tracks, EventState.DELIVERED)
    await pipeline.wait_states("api", identifies, EventState.FILTERED)

    assert sorted(e["id"] for e in fake.events()) == sorted(tracks), "an identify was sent"
    worker = pipeline.worker("api")
    assert (worker.stats.delivered, worker.stats.filtered, worker.stats.discarded) == (6, 3, 0)
    assert worker.stats.retried == 0
    [row] = await pipeline.ledger("api", identifies[0])
    assert row.state is EventState.FILTERED and row.status is None
    assert (row.reason or "").startswith("no action's trigger matches (type=identify,")
    count, _ = await pipeline.engine.store.run(lambda db: db.retry_summary("api"))
    assert count == 0, "a filtered event waits for a retry"

    until = int(time.time() * 1000) + 60_000
    report = await pipeline.engine.store.run(
        lambda db: delivery_report(db, "api", until - 3_600_000, until)
    )
    doc = report.as_dict()
    assert doc["counts"]["filtered"] == 3 and doc["counts"]["discarded"] == 0
    assert doc["errors"] == [], "filtered events show as errors"
    [reason] = doc["filteredReasons"]
    assert reason["events"] == 3 and "type=identify" in reason["reason"]


async def test_a_batch_of_only_unsubscribed_events_sends_nothing_and_is_filtered(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    pipeline: Pipeline = await make_pipeline([tracks_only(fake.url)])
    ids = await pipeline.send([event(type="page", name="Home") for _ in range(4)])
    await pipeline.wait_states("api", ids, EventState.FILTERED)
    assert fake.requests == []
    worker = pipeline.worker("api")
    assert worker.stats.filtered == 4 and worker.breaker.consecutive_failures == 0
    state = await pipeline.engine.states(ids[0])
    assert state is not None
    [api] = [s for s in state[1] if s.destination == "api"]
    assert api.state is EventState.FILTERED and api.state.terminal


async def test_a_retried_batch_whose_retry_finds_filtered_events(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    """The tracks of a failed batch are retried; the identifies beside them were filtered at
    the first attempt and are never in the retry table."""
    fake.script = lambda _r, i: Reply(503 if i == 0 else 200)
    pipeline: Pipeline = await make_pipeline([tracks_only(fake.url, concurrency=1)])
    ids = await pipeline.send([event(type="identify"), event(), event()])
    await pipeline.wait_states("api", ids[1:], EventState.DELIVERED)
    assert await pipeline.states("api", ids[0]) == [EventState.FILTERED]
    assert [e["id"] for e in fake.events()] == ids[1:]
    assert len(fake.requests) == 2


def _events(n: int) -> list[OutboundEvent]:
    return [OutboundEvent(100 + i, f"m{i}", 0, b"{}") for i in range(n)]


def test_the_breaker_hears_nothing_of_filtered_events() -> None:
    events = _events(3)
    skipped = Filtered("no action's trigger matches")
    mixed = Attempt(Delivered(200), Exchange(), 1.0, {100: skipped})
    groups = outcome_groups(events, mixed)
    assert [(o, [e.offset for e in g]) for o, g in groups] == [
        (skipped, [100]), (Delivered(200), [101, 102])]  # fmt: skip
    assert heard(groups, mixed) == Delivered(200)
    whole = Attempt(skipped, Exchange(), 0.0)
    assert heard(outcome_groups(events, whole), whole) == skipped


def test_a_probe_that_offered_nothing_is_due_again_at_once() -> None:
    now = [100.0]
    breaker = CircuitBreaker(1, 5.0, 60.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.probe_due()
    now[0] += 5.0
    breaker.start_probe()
    breaker.reprobe()
    assert breaker.state is BreakerState.OPEN and breaker.probe_due()
