"""Partial batches: a destination that names events whose outcome differs from the batch's
(``Attempt.per_event``), as Amplitude's ``events_with_invalid_fields`` and Mixpanel's
``failed_records`` do, and the delivery engine that records each event's own outcome."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import (
    Attempt,
    Delivered,
    Discard,
    EventState,
    Exchange,
    Outcome,
    Retry,
)
from headwater.delivery.partial import heard, outcome_groups
from headwater.delivery.policy import BreakerState
from headwater.destinations import TYPES
from headwater.destinations.base import Destination, DestinationSettings
from headwater.observe.delivery_report import delivery_report
from tests.delivery.conftest import FAST, Pipeline, event

# (the events of one request, the index of the request) -> (the batch's outcome, the outcomes
# that differ, by messageId)
Answer = Callable[[list[OutboundEvent], int], tuple[Outcome, dict[str, Outcome]]]


@dataclass
class Behaviour:
    """What a :class:`PartialSink` answers, and what it saw; kept across engine restarts."""

    answer: Answer
    calls: list[list[str]] = field(default_factory=list)
    sent: collections.Counter[str] = field(default_factory=collections.Counter)
    delivered: collections.Counter[str] = field(default_factory=collections.Counter)


class PartialSettings(DestinationSettings):
    script: str = "default"


class PartialSink(Destination[PartialSettings]):
    """A destination in memory that answers per event, as ``Behaviour.answer`` says."""

    type = "partial_test"
    settings_model = PartialSettings
    default_batch_events = 10
    max_batch_events = 100
    scripts: ClassVar[dict[str, Behaviour]] = {}

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        behaviour = self.scripts[self.settings.script]
        batch = list(events)
        index = len(behaviour.calls)
        behaviour.calls.append([e.message_id for e in batch])
        outcome, by_id = behaviour.answer(batch, index)
        for e in batch:
            behaviour.sent[e.message_id] += 1
            if isinstance(by_id.get(e.message_id, outcome), Delivered):
                behaviour.delivered[e.message_id] += 1
        per_event = {e.offset: by_id[e.message_id] for e in batch if e.message_id in by_id}
        body = {"events": len(batch), "failed": sorted(by_id)}
        exchange = Exchange({"url": "memory://partial", "events": len(batch)},
                            {"status": 200, "body": body})  # fmt: skip
        return Attempt(outcome, exchange, 1.0, per_event)


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Callable[[Answer], Behaviour]:
    monkeypatch.setitem(TYPES, PartialSink.type, PartialSink)
    monkeypatch.setattr(PartialSink, "scripts", {})

    def make(answer: Answer) -> Behaviour:
        behaviour = Behaviour(answer)
        PartialSink.scripts["default"] = behaviour
        return behaviour

    return make


def partial(name: str = "amp", **delivery: Any) -> dict[str, Any]:
    return {"name": name, "type": PartialSink.type, "sources": ["website"],
            "delivery": {**FAST, **delivery}}  # fmt: skip


def flagged(batch: list[OutboundEvent], flag: str) -> list[OutboundEvent]:
    return [e for e in batch if e.event.get("properties", {}).get(flag)]


async def settled(pipeline: Pipeline, name: str = "amp") -> None:
    """Until nothing can be sent again: no retries waiting, the cursor past every event."""
    last = pipeline.log.stats().last_offset
    deadline = time.monotonic() + 30
    while True:
        waiting, _ = await pipeline.engine.store.run(lambda db: db.retry_summary(name))
        if not waiting and pipeline.worker(name).live.committed == last:
            return
        assert time.monotonic() < deadline, "the destination did not settle in 30 s"
        await asyncio.sleep(0.02)


async def states_of(pipeline: Pipeline, message_id: str, name: str = "amp") -> Any:
    found = await pipeline.engine.states(message_id)
    assert found is not None
    [state] = [s for s in found[1] if s.destination == name]
    return state


async def report(pipeline: Pipeline, name: str = "amp") -> dict[str, Any]:
    until = int(time.time() * 1000) + 60_000
    built = await pipeline.engine.store.run(
        lambda db: delivery_report(db, name, until - 3_600_000, until)
    )
    return built.as_dict()


# ---------------------------------------------------------------------- from the queue


async def test_two_of_ten_discarded_and_the_rest_delivered_once(
    make_pipeline: Any, sink: Callable[[Answer], Behaviour]
) -> None:
    def answer(batch: list[OutboundEvent], _i: int) -> tuple[Outcome, dict[str, Outcome]]:
        refused = Discard("events_with_invalid_fields: time", 400)
        return Delivered(200), {e.message_id: refused for e in flagged(batch, "bad")}

    behaviour = sink(answer)
    pipeline: Pipeline = await make_pipeline([partial()])
    records = [event(properties={"bad": i in (3, 7)}) for i in range(10)]
    ids = await pipeline.send(records)
    bad, good = [ids[3], ids[7]], [m for i, m in enumerate(ids) if i not in (3, 7)]
    await pipeline.wait_states("amp", good, EventState.DELIVERED)
    await pipeline.wait_states("amp", bad, EventState.DISCARDED)
    await settled(pipeline)

    assert behaviour.sent == dict.fromkeys(ids, 1), "an event was sent again"
    assert set(behaviour.delivered) == set(good)
    worker = pipeline.worker("amp")
    assert (worker.stats.delivered, worker.stats.discarded, worker.stats.retried) == (8, 2, 0)
    assert worker.breaker.state is BreakerState.CLOSED

    refused = await states_of(pipeline, bad[0])
    assert refused.state is EventState.DISCARDED and refused.status == 400
    assert refused.reason == "events_with_invalid_fields: time"
    [row] = refused.history
    assert row.exchange is not None and row.exchange["response"]["body"]["failed"] == sorted(bad)
    taken = await states_of(pipeline, good[0])
    assert (taken.state, taken.status, taken.reason) == (EventState.DELIVERED, 200, None)

    doc = await report(pipeline)
    assert doc["counts"]["delivered"] == 8 and doc["counts"]["discarded"] == 2
    [group] = doc["errors"]
    assert (group["state"], group["status"], group["events"]) == ("discarded", 400, 2)
    assert group["reason"] == "events_with_invalid_fields: time"
    assert group["sample"]["offset"] == await pipeline.offset_of(bad[0])


async def test_one_of_ten_retried_then_delivered_without_resending_the_others(
    make_pipeline: Any, sink: Callable[[Answer], Behaviour]
) -> None:
    gate = {"open": False}

    def answer(batch: list[OutboundEvent], _i: int) -> tuple[Outcome, dict[str, Outcome]]:
        if gate["open"]:
            return Delivered(200), {}
        throttled = Retry("throttled_events: user u1 over 30 events/s", 429)
        return Delivered(200), {e.message_id: throttled for e in flagged(batch, "busy")}

    behaviour = sink(answer)
    pipeline: Pipeline = await make_pipeline([partial()])
    ids = await pipeline.send([event(properties={"busy": i == 4}) for i in range(10)])
    busy, others = ids[4], ids[:4] + ids[5:]
    await pipeline.wait_states("amp", others, EventState.DELIVERED)
    await pipeline.wait(lambda: behaviour.sent[busy] >= 2)  # it is being retried

    waiting = await states_of(pipeline, busy)
    assert waiting.state is EventState.RETRYING and waiting.status == 429
    assert "throttled_events" in (waiting.reason or "") and waiting.next_attempt_ms
    count, _ = await pipeline.engine.store.run(lambda db: db.retry_summary("amp"))
    assert count == 1, "the retry table holds more than the retried event"
    assert (await states_of(pipeline, others[0])).state is EventState.DELIVERED

    gate["open"] = True
    await pipeline.wait_states("amp", [busy], EventState.DELIVERED)
    await settled(pipeline)
    assert all(behaviour.sent[m] == 1 for m in others), "a delivered event was sent again"
    assert behaviour.delivered == dict.fromkeys(ids, 1)
    assert all(call == [busy] for call in behaviour.calls[1:]), "a retry carried other events"
    rows = await pipeline.ledger("amp", busy)
    assert [r.state for r in rows] == [EventState.RETRYING] * (len(rows) - 1) + [
        EventState.DELIVERED
    ]
    assert rows[-1].attempts == len(rows) == behaviour.sent[busy]
    worker = pipeline.worker("amp")
    assert worker.stats.delivered == 10 and worker.breaker.state is BreakerState.CLOSED

    doc = await report(pipeline)
    assert doc["counts"]["delivered"] == 10 and doc["counts"]["retried"] == len(rows) - 1
    assert doc["retryingNow"] == 0


@pytest.mark.parametrize("batch_outcome", [Delivered(200), Retry("HTTP 500", 500)])
async def test_every_event_discarded_by_name(
    make_pipeline: Any, sink: Callable[[Answer], Behaviour], batch_outcome: Outcome
) -> None:
    """A mapping that cannot build a required field of any event: each is discarded with the
    field's name, whatever the batch's own outcome, and nothing is retried."""

    def answer(batch: list[OutboundEvent], _i: int) -> tuple[Outcome, dict[str, Outcome]]:
        return batch_outcome, {
            e.message_id: Discard(f"mapping: required field user_id{e.offset % 3} is missing")
            for e in batch
        }

    behaviour = sink(answer)
    pipeline: Pipeline = await make_pipeline([partial()])
    ids = await pipeline.send([event() for _ in range(6)])
    await pipeline.wait_states("amp", ids, EventState.DISCARDED)
    await settled(pipeline)
    assert behaviour.sent == dict.fromkeys(ids, 1) and not behaviour.delivered
    for message_id in ids:
        state = await states_of(pipeline, message_id)
        offset = await pipeline.offset_of(message_id)
        assert state.reason == f"mapping: required field user_id{offset % 3} is missing"
    worker = pipeline.worker("amp")
    assert (worker.stats.discarded, worker.stats.delivered, worker.stats.retried) == (6, 0, 0)
    assert worker.breaker.consecutive_failures == 0
    doc = await report(pipeline)
    assert doc["counts"]["discarded"] == 6
    assert sum(g["events"] for g in doc["errors"]) == 6 and len(doc["errors"]) == 3


# ---------------------------------------------------------------------- from the retry table


async def test_per_event_outcomes_of_a_batch_from_the_retry_table(
    make_pipeline: Any, sink: Callable[[Answer], Behaviour]
) -> None:
    def answer(batch: list[OutboundEvent], i: int) -> tuple[Outcome, dict[str, Outcome]]:
        if i == 0:
            return Retry("HTTP 503", 503), {}  # the whole batch goes to the retry table
        if i == 1:  # its retry: partly delivered
            by_id: dict[str, Outcome] = {e.message_id: Discard("bad time", 400)
                                         for e in flagged(batch, "bad")}  # fmt: skip
            by_id |= {e.message_id: Retry("throttled", 429) for e in flagged(batch, "busy")}
            return Delivered(200), by_id
        return Delivered(200), {}

    behaviour = sink(answer)
    pipeline: Pipeline = await make_pipeline([partial(concurrency=1)])
    flags = [{}, {"bad": True}, {"busy": True}, {}, {"bad": True}, {}]
    ids = await pipeline.send([event(properties=f) for f in flags])
    bad, busy = [ids[1], ids[4]], ids[2]
    delivered = [ids[0], ids[3], ids[5]]
    await pipeline.wait_states("amp", [*delivered, busy], EventState.DELIVERED)
    await pipeline.wait_states("amp", bad, EventState.DISCARDED)
    await settled(pipeline)

    assert behaviour.calls[0] == ids and behaviour.calls[1] == ids
    assert behaviour.calls[2:] == [[busy]]
    assert behaviour.sent == {**dict.fromkeys(ids, 2), busy: 3}
    assert behaviour.delivered == dict.fromkeys([*delivered, busy], 1)
    assert [r.state for r in await pipeline.ledger("amp", ids[0])] == [
        EventState.RETRYING, EventState.DELIVERED]  # fmt: skip
    rows = await pipeline.ledger("amp", bad[0])
    assert [(r.state, r.attempts, r.status) for r in rows] == [
        (EventState.RETRYING, 1, 503), (EventState.DISCARDED, 2, 400)]  # fmt: skip
    rows = await pipeline.ledger("amp", busy)
    assert [(r.state, r.attempts, r.status) for r in rows] == [
        (EventState.RETRYING, 1, 503), (EventState.RETRYING, 2, 429),
        (EventState.DELIVERED, 3, 200)]  # fmt: skip
    doc = await report(pipeline)
    assert doc["counts"]["delivered"] == 4 and doc["counts"]["discarded"] == 2
    assert doc["counts"]["retried"] == 6 + 1


async def test_a_retry_past_the_window_dead_letters_only_its_events_and_redrives(
    make_pipeline: Any, sink: Callable[[Answer], Behaviour]
) -> None:
    gate = {"open": False}

    def answer(batch: list[OutboundEvent], _i: int) -> tuple[Outcome, dict[str, Outcome]]:
        if gate["open"]:
            return Delivered(200), {}
        later = Retry("throttled until tomorrow", 429, after_secs=86_400)
        return Delivered(200), {e.message_id: later for e in flagged(batch, "busy")}

    behaviour = sink(answer)
    pipeline: Pipeline = await make_pipeline([partial(retry_window_secs=3600)])
    ids = await pipeline.send([event(properties={"busy": i == 1}) for i in range(4)])
    busy, others = ids[1], [ids[0], *ids[2:]]
    await pipeline.wait_states("amp", others, EventState.DELIVERED)
    await pipeline.wait_states("amp", [busy], EventState.DEAD_LETTERED)
    letters = await pipeline.cli(lambda db: db.dead_letters("amp"))
    assert [d.message_id for d in letters] == [busy]
    assert "throttled until tomorrow" in letters[0].reason and letters[0].status == 429
    state = await states_of(pipeline, busy)
    assert state.dead_letter_id == letters[0].id
    assert pipeline.worker("amp").breaker.state is BreakerState.CLOSED  # delivered: it is up

    gate["open"] = True
    moved = await pipeline.cli(lambda db: db.redrive({"amp": 3600}, {"amp": 10}))
    assert moved == {"amp": 1}
    await pipeline.wait_states("amp", [busy], EventState.DELIVERED)
    await settled(pipeline)
    assert behaviour.delivered == dict.fromkeys(ids, 1)
    assert all(behaviour.sent[m] == 1 for m in others)


# ---------------------------------------------------------------------- the breaker


async def test_a_partly_delivered_probe_closes_the_breaker(
    make_pipeline: Any, sink: Callable[[Answer], Behaviour]
) -> None:
    """The destination answered for most of the probe's events: it is up. The event it asked
    to retry later keeps its own Retry-After, though the backlog is made due at once."""
    state: dict[str, Any] = {"down": True, "throttled": False, "seen": []}

    def answer(batch: list[OutboundEvent], _i: int) -> tuple[Outcome, dict[str, Outcome]]:
        state["seen"].append((int(time.time() * 1000), [e.message_id for e in batch],
                              state["worker"].breaker.state))  # fmt: skip
        if state["down"]:
            return Retry("HTTP 503", 503), {}
        if state["throttled"]:
            return Delivered(200), {}
        state["throttled"] = True
        later = Retry("throttled", 429, after_secs=1.0)
        return Delivered(200), {e.message_id: later for e in flagged(batch, "busy")}

    behaviour = sink(answer)
    pipeline: Pipeline = await make_pipeline([partial(breaker_failures=1, concurrency=1)])
    state["worker"] = worker = pipeline.worker("amp")
    ids = await pipeline.send([event(properties={"busy": i == 0}) for i in range(5)])
    await pipeline.wait(lambda: worker.breaker.state is not BreakerState.CLOSED)
    state["down"] = False  # the next probe delivers all but one of its events
    await pipeline.wait_states("amp", ids[1:], EventState.DELIVERED)
    await pipeline.wait_states("amp", ids[:1], EventState.DELIVERED)
    await settled(pipeline)
    assert behaviour.delivered == dict.fromkeys(ids, 1)
    assert worker.breaker.state is BreakerState.CLOSED
    at_ms, carried, breaker = state["seen"][-1]
    assert carried == ids[:1] and behaviour.sent[ids[0]] == len(state["seen"])
    assert breaker is BreakerState.CLOSED, "the partly delivered probe did not close the breaker"
    throttled = [r for r in await pipeline.ledger("amp", ids[0]) if r.status == 429]
    assert at_ms >= throttled[0].at_ms + 1000, "the event's own Retry-After was cut short"


# ---------------------------------------------------------------------- restarts


async def test_a_restart_keeps_each_events_own_outcome(
    make_pipeline: Any, sink: Callable[[Answer], Behaviour]
) -> None:
    gate = {"open": False}

    def answer(batch: list[OutboundEvent], _i: int) -> tuple[Outcome, dict[str, Outcome]]:
        by_id: dict[str, Outcome] = {e.message_id: Discard("bad", 400)
                                     for e in flagged(batch, "bad")}  # fmt: skip
        if not gate["open"]:
            by_id |= {e.message_id: Retry("throttled", 429) for e in flagged(batch, "busy")}
        return Delivered(200), by_id

    behaviour = sink(answer)
    pipeline: Pipeline = await make_pipeline([partial()])
    flags = [{"busy": i in (2, 8), "bad": i == 5} for i in range(10)]
    ids = await pipeline.send([event(properties=f) for f in flags])
    busy, bad = [ids[2], ids[8]], ids[5]
    delivered = [m for i, m in enumerate(ids) if i not in (2, 5, 8)]
    await pipeline.wait_states("amp", delivered, EventState.DELIVERED)
    await pipeline.wait_states("amp", busy, EventState.RETRYING)
    await pipeline.engine.stop()

    (count, _), cursors = await pipeline.cli(lambda db: (db.retry_summary("amp"), db.cursors()))
    assert count == 2, "the retry table should hold the two retried events only"
    assert cursors["amp"] == await pipeline.offset_of(ids[-1])

    gate["open"] = True
    await pipeline.restart()
    await pipeline.wait_states("amp", busy, EventState.DELIVERED)
    await settled(pipeline)
    assert behaviour.delivered == dict.fromkeys(delivered + busy, 1), "a duplicate after restart"
    assert behaviour.sent[bad] == 1
    assert (await states_of(pipeline, bad)).state is EventState.DISCARDED


async def test_a_replay_records_each_events_own_outcome(
    make_pipeline: Any, sink: Callable[[Answer], Behaviour]
) -> None:
    def answer(batch: list[OutboundEvent], _i: int) -> tuple[Outcome, dict[str, Outcome]]:
        return Delivered(200), {e.message_id: Discard("bad", 400) for e in flagged(batch, "bad")}

    behaviour = sink(answer)
    pipeline: Pipeline = await make_pipeline([partial()])
    ids = await pipeline.send([event(properties={"bad": i == 2}) for i in range(4)])
    await pipeline.wait_states("amp", ids[2:3], EventState.DISCARDED)
    await settled(pipeline)
    now, last = int(time.time() * 1000), pipeline.log.stats().last_offset
    assert last is not None
    replay_id = await pipeline.cli(lambda db: db.create_replay("amp", now - 60_000, now + 1, last))

    async def job() -> Any:
        return await pipeline.cli(lambda db: db.replay(replay_id))

    deadline = time.monotonic() + 30
    while (await job()).state != "done":
        assert time.monotonic() < deadline, "the replay did not finish in 30 s"
        await asyncio.sleep(0.05)
    assert (await job()).sent == 4
    assert behaviour.sent == dict.fromkeys(ids, 2)
    assert behaviour.delivered == {m: 2 for i, m in enumerate(ids) if i != 2}
    assert await pipeline.states("amp", ids[2]) == [EventState.DISCARDED] * 2
    assert await pipeline.states("amp", ids[0]) == [EventState.DELIVERED] * 2


# ---------------------------------------------------------------------- the grouping


def _events(n: int) -> list[OutboundEvent]:
    return [OutboundEvent(100 + i, f"m{i}", 0, b"{}") for i in range(n)]


def test_groups_follow_the_batch_and_ignore_offsets_not_in_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = _events(5)
    refused, throttled = Discard("bad", 400), Retry("slow", 429)
    attempt = Attempt(Delivered(200), Exchange(), 1.0,
                      {103: refused, 101: throttled, 104: refused, 999: refused})  # fmt: skip
    groups = outcome_groups(events, attempt, "amp")
    assert [(o, [e.offset for e in g]) for o, g in groups] == [
        (Delivered(200), [100, 102]), (throttled, [101]), (refused, [103, 104])]  # fmt: skip
    assert "999" in caplog.text and "not in the batch" in caplog.text
    assert heard(groups, attempt) == Delivered(200)


def test_the_breaker_hears_the_longest_retry_when_nothing_was_delivered() -> None:
    events = _events(3)
    soon, later = Retry("a", 503), Retry("b", 429, after_secs=30)
    attempt = Attempt(soon, Exchange(), 1.0, {101: later, 102: Discard("c")})
    assert heard(outcome_groups(events, attempt), attempt) == later
    discarded = Attempt(Discard("x"), Exchange(), 1.0, {100: Discard("y")})
    assert isinstance(heard(outcome_groups(events, discarded), discarded), Discard)
    whole = Attempt(Retry("down"), Exchange(), 1.0)
    assert heard(outcome_groups(events, whole), whole) == Retry("down")
