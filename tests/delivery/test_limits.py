"""Per-destination limits: requests a second, requests in flight, events and bytes a batch."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

from headwater.delivery.outcomes import EventState
from headwater.log.base import Record
from tests.delivery.conftest import Pipeline, event, ids_of, webhook
from tests.fakes import FakeDestination, Received, always


def most_at_once(requests: list[Received], lasts: float) -> int:
    """The most requests the fake was answering at one time (each takes ``lasts``)."""
    return max(sum(1 for r in requests if r.at <= s.at < r.at + lasts) for s in requests)


async def test_rate_limit(make_pipeline: Any, fake: FakeDestination) -> None:
    rate, n = 20.0, 40
    pipeline = await make_pipeline([webhook("hook", fake.url, rate_limit_per_sec=rate,
                                            concurrency=16)])  # fmt: skip
    start = time.monotonic()  # before the first token is taken: a lower bound for them all
    ids = await pipeline.send([event() for _ in range(n)])
    await pipeline.wait(lambda: len(fake.requests) >= n)
    # A burst of up to `rate` requests, then `rate` a second: request k leaves no sooner
    # than (k + 1 - rate) / rate seconds after the start, and arrives later still. A slow
    # machine only delays requests, so this bound cannot be missed by a correct limiter.
    early = [
        (k, round(r.at - start, 3))
        for k, r in enumerate(fake.requests)
        if r.at - start < (k + 1 - rate) / rate - 0.005
    ]
    assert not early, f"requests over the rate limit: {early}"
    assert sorted(ids_of(fake.events())) == sorted(ids)


async def test_concurrency_limit(make_pipeline: Any, fake: FakeDestination) -> None:
    fake.script = always(200, delay_secs=0.15)
    pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=3)])
    ids = await pipeline.send([event() for _ in range(12)])
    await pipeline.wait(lambda: len(fake.requests) >= 12)
    assert most_at_once(fake.requests, 0.15) == 3
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)


async def test_concurrency_one_sends_one_at_a_time_in_order(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    fake.script = always(200, delay_secs=0.03)
    pipeline = await make_pipeline([webhook("hook", fake.url, concurrency=1)])
    ids = await pipeline.send([event() for _ in range(15)])
    await pipeline.wait(lambda: len(fake.requests) >= 15)
    assert most_at_once(fake.requests, 0.03) == 1
    assert ids_of(fake.events()) == ids


async def test_batches_by_event_count(make_pipeline: Any, fake: FakeDestination) -> None:
    pipeline: Pipeline = await make_pipeline([webhook("hook", fake.url, batch_max_events=5,
                                                      concurrency=1)])  # fmt: skip
    ids = await pipeline.send([event() for _ in range(23)])
    await pipeline.wait(lambda: len(fake.events()) >= 23)
    bodies = [r.json() for r in fake.requests]
    assert all(isinstance(b, list) for b in bodies), "a batching webhook sends JSON arrays"
    assert [len(b) for b in bodies] == [5, 5, 5, 5, 3]
    assert ids_of(fake.events()) == ids
    assert fake.requests[0].headers["Content-Type"] == "application/json"
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)


async def test_batches_by_bytes(make_pipeline: Any, fake: FakeDestination) -> None:
    limit = 1000
    pipeline: Pipeline = await make_pipeline(
        [webhook("hook", fake.url, batch_max_events=100, batch_max_bytes=limit, concurrency=1)]
    )
    records = [event(properties={"pad": "x" * (i * 7 % 150)}) for i in range(40)]
    ids = await pipeline.send(records)
    await pipeline.wait(lambda: len(fake.events()) >= 40)
    sizes = [len(r.body) for r in fake.requests]
    assert max(sizes) <= limit, f"a request of {max(sizes)} bytes, over batch_max_bytes"
    assert all(isinstance(r.json(), list) for r in fake.requests)
    assert ids_of(fake.events()) == ids
    # Batches are filled: no two neighbours would have fitted into one request.
    for a, b in itertools.pairwise(fake.requests):
        assert len(a.body) + len(b.body) - 1 > limit


async def test_an_event_bigger_than_batch_max_bytes_goes_alone(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    pipeline: Pipeline = await make_pipeline(
        [webhook("hook", fake.url, batch_max_events=10, batch_max_bytes=300, concurrency=1)]
    )
    ids = await pipeline.send([event(), event(properties={"pad": "x" * 500}), event()])
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)
    assert [len(r.json()) for r in fake.requests] == [1, 1, 1]
    assert ids_of(fake.events()) == ids


def sized(size: int) -> Record:
    """An event whose JSON is exactly ``size`` bytes."""
    record = event(properties={"pad": ""})
    pad = "x" * (size - len(record.payload))
    return dataclasses.replace(
        record, payload=record.payload.replace(b'"pad":""', f'"pad":"{pad}"'.encode())
    )


async def test_batch_max_bytes_bounds_the_request_body(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    # Ten events of 199 bytes: as a JSON array, 10 * 199 + 9 commas + 2 brackets = 2001.
    pipeline: Pipeline = await make_pipeline(
        [webhook("hook", fake.url, batch_max_events=100, batch_max_bytes=2000, concurrency=1)]
    )
    ids = await pipeline.send([sized(199) for _ in range(20)])
    await pipeline.wait_states("hook", ids, EventState.DELIVERED)
    sizes = [len(r.body) for r in fake.requests]
    assert max(sizes) <= 2000, f"request bodies of {sizes} bytes, over batch_max_bytes"
    assert ids_of(fake.events()) == ids
