"""The dead letter store: what outlives the retry window lands there; re-drive sends exactly
the chosen events again; purge removes them."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from headwater.delivery import store, worker
from headwater.delivery.outcomes import EventState
from tests.delivery.conftest import FAST, Pipeline, event, ids_of, webhook
from tests.fakes import FakeDestination, Received, Reply


@pytest.fixture(autouse=True)
def rescan_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-drives come from another connection; the worker finds them at its next rescan."""
    monkeypatch.setattr(worker, "RETRY_RESCAN_SECS", 0.1)


def poison_fails(request: Received, _i: int) -> Reply:
    """500 for the events marked poison, 200 for the others."""
    return Reply(500) if request.json().get("properties", {}).get("poison") else Reply(200)


async def dead_letter_some(
    make_pipeline: Any, fake: FakeDestination
) -> tuple[Pipeline, list[str], list[str]]:
    fake.script = poison_fails
    pipeline: Pipeline = await make_pipeline(
        [webhook("hook", fake.url, retry_window_secs=1, breaker_failures=100, **FAST)]
    )
    records = [event(properties={"poison": i % 3 == 0, "i": i}) for i in range(9)]
    ids = await pipeline.send(records)
    poison = [i for n, i in enumerate(ids) if n % 3 == 0]
    good = [i for i in ids if i not in poison]
    await pipeline.wait_states("hook", poison, EventState.DEAD_LETTERED, within=5)
    await pipeline.wait_states("hook", good, EventState.DELIVERED)
    return pipeline, poison, good


async def test_redrive_sends_exactly_the_chosen_dead_letters(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    pipeline, poison, _ = await dead_letter_some(make_pipeline, fake)
    letters = await pipeline.cli(lambda db: db.dead_letters("hook"))
    assert sorted(d.message_id for d in letters) == sorted(poison)
    assert all(d.status == 500 and d.attempts >= 1 for d in letters)
    assert await pipeline.cli(lambda db: db.dead_letter_counts()) == {"hook": 3}

    fake.script = lambda _r, _i: Reply(200)  # fixed
    before = len(fake.requests)
    chosen = [d for d in letters if d.message_id != poison[1]]
    moved = await pipeline.cli(
        lambda db: db.redrive({"hook": 60.0}, {"hook": 1}, ids=[d.id for d in chosen])
    )
    assert moved == {"hook": 2}
    want = [d.message_id for d in chosen]
    await pipeline.wait_states("hook", want, EventState.DELIVERED, within=5)
    await asyncio.sleep(0.3)  # anything else would be sent now
    again = [e for r in fake.requests[before:] for e in r.events()]
    assert sorted(ids_of(again)) == sorted(want), "re-drive sent other events"
    left = await pipeline.cli(lambda db: db.dead_letters("hook"))
    assert [d.message_id for d in left] == [poison[1]]
    rows = await pipeline.ledger("hook", want[0])
    assert [r.state for r in rows][-2:] == [EventState.DEAD_LETTERED, EventState.DELIVERED]

    assert await pipeline.cli(lambda db: db.purge("hook")) == 1
    assert await pipeline.cli(lambda db: db.dead_letters("hook")) == []
    await asyncio.sleep(0.3)  # a few rescans of the retry table
    assert len(fake.requests) == before + 2, "a purged dead letter was sent"


async def test_redrive_of_a_destination_still_down_dead_letters_again(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    pipeline, poison, _ = await dead_letter_some(make_pipeline, fake)
    moved = await pipeline.cli(lambda db: db.redrive({"hook": 0.5}, {"hook": 10}))
    assert moved == {"hook": 3}
    await pipeline.wait(lambda: pipeline.worker("hook").stats.dead_lettered >= 6, within=5)
    letters = await pipeline.cli(lambda db: db.dead_letters("hook"))
    assert sorted(d.message_id for d in letters) == sorted(poison)
    await pipeline.wait_states("hook", poison, EventState.DEAD_LETTERED)


async def test_purge_by_id_and_by_age(make_pipeline: Any, fake: FakeDestination) -> None:
    pipeline, _, _ = await dead_letter_some(make_pipeline, fake)
    letters = await pipeline.cli(lambda db: db.dead_letters("hook"))
    assert await pipeline.cli(lambda db: db.purge(ids=[letters[0].id])) == 1
    assert await pipeline.cli(lambda db: db.purge("other")) == 0
    assert await pipeline.cli(lambda db: db.purge(before_ms=letters[0].dead_ms - 1)) == 0
    assert await pipeline.cli(lambda db: db.purge(before_ms=letters[-1].dead_ms + 1)) == 2
    assert await pipeline.cli(lambda db: db.dead_letters()) == []
    assert await pipeline.cli(lambda db: db.redrive({"hook": 60.0}, {"hook": 1})) == {}


async def test_a_stored_batch_too_big_for_the_destination_is_split(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    """Dead letters re-driven in batches of 10 to a webhook that takes 1 event a request
    (or a batch size lowered while retries wait): each event goes alone, none is lost."""
    pipeline, poison, _ = await dead_letter_some(make_pipeline, fake)
    fake.script = lambda _r, _i: Reply(200)
    before = len(fake.requests)
    assert await pipeline.cli(lambda db: db.redrive({"hook": 60.0}, {"hook": 10})) == {"hook": 3}
    await pipeline.wait_states("hook", poison, EventState.DELIVERED, within=5)
    sent = fake.requests[before:]
    assert [len(r.events()) for r in sent] == [1, 1, 1]
    assert sorted(ids_of([e for r in sent for e in r.events()])) == sorted(poison)


async def test_the_dead_letter_count_never_runs_ahead_of_the_store(
    make_pipeline: Any, fake: FakeDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind a flaky re-drive test: the worker counted a dead letter when it
    decided on it, before the store had it, so a reader that saw the count and then listed
    the dead letters could miss one. Deterministic: the store's next dead-letter write is
    held until the test has looked at the count."""
    pipeline, poison, _ = await dead_letter_some(make_pipeline, fake)
    counted = pipeline.worker("hook").stats.dead_lettered
    held, release = threading.Event(), threading.Event()
    real = store.StoreDB.apply

    def apply_held(db: store.StoreDB, ops: Any) -> None:
        if any(isinstance(op, store.PutDead) for op in ops) and not release.is_set():
            held.set()
            release.wait(60)
        real(db, ops)

    monkeypatch.setattr(store.StoreDB, "apply", apply_held)
    assert await pipeline.cli(lambda db: db.redrive({"hook": 0.2}, {"hook": 10})) == {"hook": 3}
    try:
        await asyncio.to_thread(held.wait, 60)  # a dead letter is on its way to the store
        assert pipeline.worker("hook").stats.dead_lettered == counted, "counted before stored"
    finally:
        release.set()
    await pipeline.wait(lambda: pipeline.worker("hook").stats.dead_lettered >= counted + 3)
    letters = await pipeline.cli(lambda db: db.dead_letters("hook"))
    assert sorted(d.message_id for d in letters) == sorted(poison)
