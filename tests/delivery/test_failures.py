"""Delivery through destination failures: outages, throttling, refusals, timeouts, refused
connections, and a dead destination beside a healthy one."""

from __future__ import annotations

import asyncio
import collections
import email.utils
import time
from typing import Any

import pytest

from headwater.delivery.outcomes import EventState
from headwater.delivery.policy import BreakerState
from headwater.delivery.store import StoreDB
from tests.delivery.conftest import FAST, FakeOnPort, Pipeline, event, ids_of, webhook
from tests.fakes import FakeDestination, Received, Reply, always, free_port


def wall(received: Received) -> float:
    """When the fake got a request, on the wall clock."""
    return received.at + (time.time() - time.monotonic())


# ---------------------------------------------------------------------- outages


async def test_outage_drains_in_order_without_duplicates_and_without_hammering(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    fake.script = always(500)
    pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=1, breaker_failures=3,
                                            **FAST)])  # fmt: skip
    worker = pipeline.worker("hook")
    before = await pipeline.send([event() for _ in range(60)])
    await pipeline.wait(lambda: worker.breaker.state is not BreakerState.CLOSED)
    # The outage goes on; events keep arriving. Count what the destination gets meanwhile.
    down_from = len(fake.requests)
    during = await pipeline.send([event() for _ in range(60)])
    down_secs = 1.0
    await asyncio.sleep(down_secs)
    hits = len(fake.requests) - down_from
    # One probe at a time, at least breaker_probe_secs apart: never one request per event.
    assert hits <= down_secs / FAST["breaker_probe_secs"] + 2, f"{hits} requests while down"
    assert down_from <= 3 + 1, "the first read's batches were sent after the breaker opened"
    assert worker.stats.delivered == 0

    fake.script = always(200)
    ids = before + during
    await pipeline.wait(lambda: len(fake.events(200)) >= len(ids))
    await asyncio.sleep(0.2)  # any duplicate would arrive now
    delivered = ids_of(fake.events(200))
    assert len(delivered) == len(set(delivered)), "duplicates after recovery"
    assert delivered == ids, "the backlog did not drain in the original order"
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)
    first = await pipeline.ledger("hook", ids[0])
    assert [r.state for r in first] == [EventState.RETRYING] * (len(first) - 1) + [
        EventState.DELIVERED
    ]
    assert first[0].status == 500 and "HTTP 500" in (first[0].reason or "")
    assert first[-1].attempts == len(first)
    # An event of the first read that was never sent: it waited as a retry, unsent.
    held = await pipeline.ledger("hook", before[-1])
    assert held[0].state is EventState.RETRYING and held[0].attempts == 0
    assert "circuit breaker is open" in (held[0].reason or "")
    assert "HTTP 500" in (held[0].reason or "")
    assert (held[-1].state, held[-1].attempts) == (EventState.DELIVERED, 1)
    # The events that arrived during the outage waited in the log: sent once, delivered.
    assert [r.state for r in await pipeline.ledger("hook", during[0])] == [EventState.DELIVERED]


async def test_recovery_sends_retries_waiting_a_long_backoff_before_newer_events(
    make_pipeline: Any, fake: FakeDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_due = StoreDB.make_retries_due

    def slow_disk(db: StoreDB, destination: str, at_ms: int) -> None:
        time.sleep(0.05)  # the worker must not read newer events meanwhile
        make_due(db, destination, at_ms)

    monkeypatch.setattr(StoreDB, "make_retries_due", slow_disk)
    fake.script = always(503)
    pipeline = await make_pipeline(
        [webhook("hook", fake.url, concurrency=1, breaker_failures=2, backoff_base_secs=30,
                 breaker_probe_secs=0.05, breaker_max_probe_secs=0.05)]
    )  # fmt: skip
    ids = await pipeline.send([event() for _ in range(2)])  # both wait ~30 s for a retry
    await pipeline.wait(lambda: pipeline.worker("hook").breaker.state is not BreakerState.CLOSED)
    ids += await pipeline.send([event() for _ in range(3)])
    fake.script = always(200)
    await pipeline.wait(lambda: len(fake.events(200)) >= 5, within=5)
    assert ids_of(fake.events(200)) == ids


# ---------------------------------------------------------------------- throttling


async def test_429_retry_after_seconds_holds_every_request_and_spares_the_others(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    fake.script = lambda _r, i: Reply(429, headers={"Retry-After": "1"}) if i == 0 else Reply(200)
    with FakeDestination() as other:
        pipeline = await make_pipeline(
            [webhook("hook", fake.url, concurrency=1, **FAST),
             webhook("other", other.url, concurrency=1)]
        )  # fmt: skip
        ids = await pipeline.send([event() for _ in range(5)])
        await pipeline.wait(lambda: len(fake.requests) >= 1)
        throttled_at = fake.requests[0].at
        # Meanwhile the other destination gets everything, long before the throttle ends.
        await pipeline.wait(lambda: len(other.events()) == 5, within=0.8)
        assert len(fake.requests) == 1, "sent again before Retry-After"
        await pipeline.wait(lambda: len(fake.events(200)) == 5)
        assert ids_of(other.events()) == ids
    early = [r.at - throttled_at for r in fake.requests[1:] if r.at - throttled_at < 1.0]
    assert not early, f"requests {early} s after a 429 with Retry-After: 1"
    assert ids_of(fake.events(200)) == ids
    rows = await pipeline.ledger("hook", ids[0])
    assert [(r.state, r.status) for r in rows] == [
        (EventState.RETRYING, 429),
        (EventState.DELIVERED, 200),
    ]


async def test_429_retry_after_holds_back_a_destination_with_requests_in_flight(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    """Requests already in flight when the 429 comes back may succeed; that does not end
    the wait the destination asked for."""
    fake.script = lambda _r, i: (
        Reply(429, headers={"Retry-After": "1"}) if i == 0 else Reply(200, delay_secs=0.1)
    )
    pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=4, **FAST)])
    ids = await pipeline.send([event() for _ in range(12)])
    await pipeline.wait(lambda: len(fake.events(200)) == 12)
    throttled_at = fake.requests[0].at
    in_flight = [r for r in fake.requests[1:] if r.at - throttled_at < 0.3]
    assert len(in_flight) <= 3, "more than the concurrency limit was sent with the 429"
    early = [
        round(r.at - throttled_at, 3)
        for r in fake.requests[1 + len(in_flight) :]
        if r.at - throttled_at < 1.0
    ]
    assert not early, f"requests {early} s after a 429 with Retry-After: 1"
    assert sorted(ids_of(fake.events(200))) == sorted(ids)


async def test_a_probe_never_resends_a_retry_still_in_flight(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    attempts: collections.Counter[str] = collections.Counter()
    answers = {
        "slow": [Reply(500), Reply(200, delay_secs=0.6)],  # its retry is in flight for long
        "throttled": [Reply(500, delay_secs=0.1), Reply(429, headers={"Retry-After": "0.1"})],
    }

    def script(request: Received, _i: int) -> Reply:
        kind = request.json()["properties"]["kind"]
        attempts[kind] += 1
        replies = answers[kind]
        return replies[attempts[kind] - 1] if attempts[kind] <= len(replies) else Reply(200)

    fake.script = script
    pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=2, **FAST)])
    ids = await pipeline.send([event(properties={"kind": k}) for k in answers])
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)
    await asyncio.sleep(0.2)
    assert sorted(ids_of(fake.events(200))) == sorted(ids), "delivered twice"


async def test_429_retry_after_http_date_is_honoured(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    until: list[float] = []

    def script(_r: Received, i: int) -> Reply:
        if i:
            return Reply(200)
        date = email.utils.formatdate(time.time() + 2, usegmt=True)
        until.append(email.utils.parsedate_to_datetime(date).timestamp())
        return Reply(429, headers={"Retry-After": date})

    fake.script = script
    pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=1, **FAST)])
    ids = await pipeline.send([event() for _ in range(3)])
    await pipeline.wait(lambda: len(fake.events(200)) == 3)
    early = [wall(r) - until[0] for r in fake.requests[1:] if wall(r) < until[0] - 0.01]
    assert not early, f"requests {early} s before the Retry-After date"
    assert ids_of(fake.events(200)) == ids


# ---------------------------------------------------------------------- refusals

SECRET = "sk_live_0123456789SECRET"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_refusals_are_discarded_at_once_with_the_answer_and_no_secrets(
    make_pipeline: Any, fake: FakeDestination, status: int
) -> None:
    fake.script = always(status, body=b'{"error":"refused-by-fake"}')
    hook = webhook("hook", fake.url, **FAST)
    hook["settings"]["headers"] = {"Authorization": f"Bearer {SECRET}", "X-Token": SECRET}
    hook["settings"]["shared_secret"] = SECRET
    pipeline = await make_pipeline([hook])
    ids = await pipeline.send([event() for _ in range(3)])
    await pipeline.wait_states("hook", ids, EventState.DISCARDED)
    await asyncio.sleep(0.15)  # time enough for a (wrong) retry, with FAST backoff
    assert len(fake.requests) == 3, "a refused event was sent again"
    assert fake.requests[0].headers["Authorization"] == f"Bearer {SECRET}"

    [row] = await pipeline.ledger("hook", ids[1])
    assert (row.state, row.status, row.attempts) == (EventState.DISCARDED, status, 1)
    assert f"HTTP {status}" in (row.reason or "") and "refused-by-fake" in (row.reason or "")
    assert row.exchange is not None
    assert row.exchange["response"]["status"] == status
    assert "refused-by-fake" in row.exchange["response"]["body"]
    assert ids[1] in row.exchange["request"]["body"]
    sent = {k.lower(): v for k, v in row.exchange["request"]["headers"].items()}
    assert sent["authorization"] == sent["x-token"] == "[redacted]"
    await pipeline.engine.stop()
    for path in pipeline.data_dir.iterdir():
        assert SECRET.encode() not in path.read_bytes(), f"a secret is stored in {path.name}"
    assert pipeline.worker("hook").stats.discarded == 3


async def test_redirect_is_discarded_with_its_status(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    fake.script = always(301, headers={"Location": "https://elsewhere.example/hook"})
    pipeline = await make_pipeline([webhook("hook", fake.url, **FAST)])
    [mid] = await pipeline.send([event()])
    await pipeline.wait_states("hook", [mid], EventState.DISCARDED)
    [row] = await pipeline.ledger("hook", mid)
    assert row.status == 301 and "https://elsewhere.example/hook" in (row.reason or "")
    assert len(fake.requests) == 1


# ---------------------------------------------------------------------- no answer


async def test_timeouts_are_retried_until_the_destination_answers(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    # The slow answers say 202 so they can be told apart: the engine never sees them.
    # The timeout leaves a loaded machine time for the quick answer (only the slow ones fail).
    fake.script = lambda _r, i: Reply(202, delay_secs=4.0) if i < 2 else Reply(200)
    pipeline = await make_pipeline([webhook("hook", fake.url, timeout_secs=1.0, concurrency=1,
                                            **FAST)])  # fmt: skip
    [mid] = await pipeline.send([event()])
    await pipeline.wait_states("hook", [mid], EventState.DELIVERED)
    assert ids_of(fake.events(200)) == [mid]
    rows = await pipeline.ledger("hook", mid)
    assert [r.state for r in rows] == [EventState.RETRYING] * 2 + [EventState.DELIVERED]
    assert "timeout" in (rows[0].reason or "") and rows[0].status is None
    assert rows[0].exchange is not None and rows[0].exchange["response"]["error"] == "timeout"
    assert rows[-1].attempts == 3


async def test_connection_refused_is_retried_until_the_destination_starts(
    make_pipeline: Any,
) -> None:
    port = free_port()
    pipeline = await make_pipeline([webhook("hook", f"http://127.0.0.1:{port}/hook",
                                            concurrency=1, **FAST)])  # fmt: skip
    ids = await pipeline.send([event() for _ in range(5)])
    await pipeline.wait(lambda: pipeline.worker("hook").stats.requests >= 3)
    rows = await pipeline.ledger("hook", ids[0])
    assert rows[0].state is EventState.RETRYING and "connect" in (rows[0].reason or "")
    with FakeOnPort(port) as fake:
        await pipeline.wait_states("hook", ids, EventState.DELIVERED)
        await asyncio.sleep(0.1)
        assert ids_of(fake.events(200)) == ids


@pytest.mark.parametrize("failure", ["refused", "timeout", "500"])
async def test_what_outlives_a_short_retry_window_is_dead_lettered_with_why(
    make_pipeline: Any, fake: FakeDestination, failure: str
) -> None:
    url = fake.url
    if failure == "refused":
        url = f"http://127.0.0.1:{free_port()}"
    fake.script = always(500) if failure == "500" else always(200, delay_secs=0.5)
    pipeline = await make_pipeline([webhook("hook", url, retry_window_secs=1, timeout_secs=0.1,
                                            **FAST)])  # fmt: skip
    ids = await pipeline.send([event() for _ in range(4)])
    await pipeline.wait_states("hook", ids, EventState.DEAD_LETTERED, within=5)
    letters = await pipeline.cli(lambda db: db.dead_letters("hook"))
    assert sorted(d.message_id for d in letters) == sorted(ids)
    expect = {"refused": "connect", "timeout": "timeout", "500": "HTTP 500"}[failure]
    for letter in letters:
        assert "retry window" in letter.reason and expect in letter.reason, letter.reason
    [*_, row] = await pipeline.ledger("hook", ids[0])
    assert "retry window" in (row.reason or "") and expect in (row.reason or "")
    retrying = await pipeline.engine.store.run(lambda db: db.retry_summary("hook"))
    assert retrying[0] == 0


# ---------------------------------------------------------------------- isolation


@pytest.mark.parametrize("failure", ["refused", "500", "slow"])
async def test_a_dead_destination_does_not_hold_up_a_healthy_one(
    make_pipeline: Any, fake: FakeDestination, failure: str
) -> None:
    """What the engine does, not how long it takes: the healthy destination gets every event
    while the dead one still holds all of its backlog. A "slow" destination never answers
    while the test runs (its timeout is 5 minutes), so a healthy worker that waited on it in
    any way would never finish. How much a dead neighbour slows a healthy destination is a
    figure for ``bench/isolation.py``, not an assertion."""
    dead_url, timeout = f"http://127.0.0.1:{free_port()}", 0.5
    if failure != "refused":
        dead_url = fake.url
        fake.script = always(500) if failure == "500" else always(200, hold=True)
        timeout = 300 if failure == "slow" else timeout
    with FakeDestination() as healthy:
        pipeline: Pipeline = await make_pipeline(
            [webhook("dead", dead_url, timeout_secs=timeout, **FAST),
             webhook("healthy", healthy.url, concurrency=4)]
        )  # fmt: skip
        ids: list[str] = []
        for _ in range(10):  # a stream of events, not one burst
            ids += await pipeline.send([event() for _ in range(30)])
            await asyncio.sleep(0.02)
        await pipeline.wait(lambda: len(healthy.events()) >= len(ids), within=60)
        assert sorted(ids_of(healthy.events())) == sorted(ids)
        dead = pipeline.worker("dead")
        assert dead.stats.delivered == 0
        committed, _ = dead.queued_behind()
        waiting = await pipeline.engine.store.run(lambda db: db.retry_summary("dead"))
        backlog = (pipeline.log.stats().last_offset or 0) - committed + waiting[0]
        assert backlog >= len(ids) // 2, "the dead destination's backlog was not waiting"
        if failure == "slow":
            assert fake.answered == 0 and len(fake.requests) >= 1  # it was asked, and held
        else:
            assert dead.stats.requests >= 1 and dead.stats.retried + dead.stats.dead_lettered >= 1
        fake.release()


async def test_a_probe_looking_ahead_does_not_count_filter_decisions(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    hook = webhook("hook", fake.url, concurrency=1, **FAST)
    hook["filters"] = [{"if": 'event = "Debug"', "actions": [{"type": "DROP"}]}]
    pipeline = await make_pipeline([hook], start=False)
    await pipeline.engine.start()
    worker = pipeline.worker("hook")
    await worker.stop()  # drive the worker by hand: one probe, no retries waiting
    await pipeline.send([event(event="Order Completed")])
    await pipeline.send([event(event="Debug") for _ in range(20)])
    sent: list[int] = []

    async def dispatch(batch: list[Any], **_: Any) -> None:
        sent.append(len(batch))

    worker._dispatch = dispatch  # type: ignore[method-assign]
    await worker._probe()
    assert sent == [1]  # the probe takes the first event; the rest is read again after it
    [stats] = worker.stage.stats()
    assert stats["matched"] == 0, "the look ahead counted events the probe did not take"
