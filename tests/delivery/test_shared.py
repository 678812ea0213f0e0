"""Shared delivery: several engines on one log and one PostgreSQL state share the
destinations through leases — spread when a node joins, handed over when one dies, each
destination delivered by one engine at a time (headwater.state.leases)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from headwater.config.workspace import LogConfig, Workspace, parse_workspace
from headwater.delivery.engine import DeliveryEngine
from headwater.delivery.remote import RemoteEngine
from headwater.log.memory import MemoryLog
from headwater.state import leases
from tests.delivery.conftest import event, webhook
from tests.fakes import FakeDestination, always
from tests.postgres import Postgres, state_config

NAMES = ("d0", "d1", "d2", "d3")


@pytest.fixture
def fakes() -> Any:
    servers = [FakeDestination(always(200, delay_secs=0.002)) for _ in NAMES]
    for s in servers:
        s.__enter__()
    yield dict(zip(NAMES, servers, strict=True))
    for s in servers:
        s.__exit__(None, None, None)


@pytest.fixture
def workspace(postgres: Postgres, fakes: dict[str, FakeDestination]) -> Workspace:
    state = state_config(postgres).model_dump(by_alias=True)
    return parse_workspace({
        "sources": [{"name": "website"}],
        "destinations": [webhook(n, fakes[n].url, concurrency=2) for n in NAMES],
        "state": state,
    }, "test")  # fmt: skip


@pytest.fixture
async def engines(workspace: Workspace, tmp_path: Path) -> AsyncIterator[Callable[[], Any]]:
    log = MemoryLog(LogConfig())  # one log both read, as JetStream would be
    started: list[DeliveryEngine] = []

    async def start() -> DeliveryEngine:
        engine = DeliveryEngine(workspace, log, tmp_path / f"node{len(started)}")
        await engine.start()
        started.append(engine)
        return engine

    yield start
    for engine in started:
        await engine.stop()


def running(engine: DeliveryEngine) -> set[str]:
    return {n for n, w in engine.workers.items() if w.running}


async def until(predicate: Callable[[], bool], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)


def delivered(fakes: dict[str, FakeDestination]) -> dict[str, Counter[str]]:
    return {n: Counter(e["messageId"] for e in f.events(200)) for n, f in fakes.items()}


async def test_a_joining_node_gets_its_share_and_each_destination_runs_once(
    engines: Callable[[], Any], fakes: dict[str, FakeDestination]
) -> None:
    a = await engines()
    assert running(a) == set(NAMES)  # alone, it takes everything before start() returns
    b = await engines()
    await until(lambda: len(running(a)) == 2 and len(running(b)) == 2)
    assert running(a).isdisjoint(running(b))
    # the destinations another node delivers show as alive here, at the shared cursor
    await until(lambda: all(a.workers[n].elsewhere == b.node for n in running(b)))
    assert all(a.workers[n].alive for n in NAMES)
    records = [event() for _ in range(400)]
    await a.log.append(records)
    ids = [r.message_id for r in records]
    await until(lambda: all(set(ids) <= set(c) for c in delivered(fakes).values()))
    for name, counts in delivered(fakes).items():  # no failure: nothing sent twice
        assert max(counts.values()) == 1, name


async def test_a_dead_nodes_destinations_are_taken_over_and_nothing_is_lost(
    engines: Callable[[], Any], fakes: dict[str, FakeDestination]
) -> None:
    a = await engines()
    b = await engines()
    await until(lambda: len(running(a)) == 2 and len(running(b)) == 2)
    first = [event() for _ in range(300)]
    await a.log.append(first)
    await until(lambda: sum(len(c) for c in delivered(fakes).values()) >= 200)

    # b dies as kill -9 would leave it: no stop, no release; its leases just stop renewing
    for task in b._tasks:
        task.cancel()
    for worker in b.workers.values():
        if worker._task is not None:
            worker._task.cancel()
    b._tasks = []
    second = [event() for _ in range(300)]
    await a.log.append(second)
    await until(lambda: running(a) == set(NAMES))
    # taken over by expiry, not handed over: b never released anything (its row stays)
    rows = await a._lease_call(lambda held: held.conn.execute(
        "SELECT count(*) FROM nodes WHERE node = ?", (b.node,)).fetchone())  # fmt: skip
    assert rows[0] == 1
    ids = {r.message_id for r in first + second}
    await until(lambda: all(ids <= set(c) for c in delivered(fakes).values()))
    # at-least-once: what b had sent and not yet recorded may go twice, nothing more
    for name, counts in delivered(fakes).items():
        twice = [m for m, n in counts.items() if n > 1]
        assert len(twice) <= 2 * 100, (name, len(twice))  # concurrency 2 x batch 100


async def test_a_node_cut_off_from_postgres_stops_before_another_takes_over(
    engines: Callable[[], Any], fakes: dict[str, FakeDestination]
) -> None:
    a = await engines()
    b = await engines()
    await until(lambda: len(running(a)) == 2 and len(running(b)) == 2)
    mine = running(b)

    async def cut_off(fn: Any) -> Any:
        raise ConnectionError("PostgreSQL unreachable (test)")

    b._lease_call = cut_off  # type: ignore[method-assign]
    cut = time.monotonic()
    overlap: list[set[str]] = []

    def check() -> bool:
        both = running(a) & running(b)
        if both:
            overlap.append(both)
        return running(a) == set(NAMES)

    await until(check)
    assert overlap == [], f"delivered by two nodes at once: {overlap}"
    assert running(b) == set() and time.monotonic() - cut >= leases.TTL_SECS - leases.MARGIN_SECS
    assert all(not b.workers[n].running for n in mine)
    records = [event() for _ in range(200)]
    await a.log.append(records)
    ids = {r.message_id for r in records}
    await until(lambda: all(ids <= set(c) for c in delivered(fakes).values()))


async def test_a_gateway_node_shows_what_the_worker_nodes_deliver(
    engines: Callable[[], Any],
    fakes: dict[str, FakeDestination],
    workspace: Workspace,
    tmp_path: Path,
) -> None:
    """A gateway node has no delivery of its own: it mirrors the snapshots the nodes
    holding the leases publish, and lists itself among the nodes."""
    a = await engines()
    b = await engines()
    await until(lambda: len(running(a)) == 2 and len(running(b)) == 2)
    records = [event() for _ in range(200)]
    await a.log.append(records)
    ids = {r.message_id for r in records}
    await until(lambda: all(ids <= set(c) for c in delivered(fakes).values()))
    gateway = RemoteEngine(workspace, a.log, tmp_path / "gw", tmp_path / "no.sock", cluster=True)
    await gateway.start()
    try:

        def caught_up() -> bool:
            return all(w.alive and w.stats.delivered == 200 for w in gateway.workers.values())

        deadline = time.monotonic() + 30
        while not (await gateway.refresh() and caught_up()):
            assert time.monotonic() < deadline, {n: w.stats for n, w in gateway.workers.items()}
            await asyncio.sleep(0.2)
        last = max(r.offset for r in await a.log.read(0, 1000))
        assert all(w.live.committed == last for w in gateway.workers.values())
        assert await gateway.devsink_page("d0", 10) is None  # in the deliverer's memory only
        roles = await a._lease_call(lambda held: held.conn.execute(
            "SELECT role, count(*) FROM nodes GROUP BY role ORDER BY role").fetchall())  # fmt: skip
        assert [tuple(r) for r in roles] == [("gateway", 1), ("worker", 2)]
    finally:
        await gateway.stop()
    rows = await a._lease_call(lambda held: held.conn.execute(
        "SELECT count(*) FROM nodes WHERE role = 'gateway'").fetchone())  # fmt: skip
    assert rows[0] == 0  # a gateway stopped gracefully leaves the list
