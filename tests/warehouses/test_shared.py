"""Warehouses with shared state (``state: {backend: postgres}``): the worker nodes take turns
syncing a warehouse, once per interval for the cluster; a gateway node shows their syncs and
its requests are taken by whichever worker syncs next; a node's former SQLite history is
copied in. Real PostgreSQL for the state and for the warehouse."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from headwater.config.workspace import StateConfig, Workspace, parse_workspace
from headwater.errors import ConfigError
from headwater.log.memory import MemoryLog
from headwater.warehouses.loader import Loader
from headwater.warehouses.state import DB_FILE, WarehouseState
from headwater.warehouses.view import WarehouseView
from tests.postgres import Postgres, state_config
from tests.warehouses.helpers import append, event, memory_log, warehouse_config

WAIT_SECS = 60


def workspace(state: StateConfig, dsn: str, **options: Any) -> Workspace:
    return parse_workspace({
        "sources": [{"name": "website", "write_key": "wk_website_1"}],
        "warehouses": [warehouse_config("postgres", dsn, **options).model_dump()],
        "state": state.model_dump(by_alias=True),
    })  # fmt: skip


async def until(condition: Any, what: str) -> None:
    for _ in range(int(WAIT_SECS / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {WAIT_SECS} s: {what}")


class Cluster:
    """Two worker nodes' loaders running, and a gateway node's view, on one shared state."""

    def __init__(self, ws: Workspace, log: MemoryLog, root: Path) -> None:
        config = ws.warehouses[0]
        self.loaders = [Loader(config, log, root / name, state=ws.state, node=name)
                        for name in ("worker-a", "worker-b")]  # fmt: skip
        self.view = WarehouseView(ws, root / "gateway", lambda: log)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(loader.run(self.stop)) for loader in self.loaders]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)
        self.view.close()


@pytest.fixture
async def shared(tmp_path: Path, postgres: Postgres) -> AsyncIterator[tuple[Cluster, MemoryLog]]:
    dsn = postgres.create_database(f"shared_{uuid.uuid4().hex[:12]}")
    log = memory_log()
    cluster = Cluster(workspace(state_config(postgres), dsn, sync_interval=3600), log, tmp_path)
    yield cluster, log
    await cluster.close()


async def test_workers_take_turns_once_per_interval_and_a_gateway_drives_and_sees_them(
    shared: tuple[Cluster, MemoryLog],
) -> None:
    cluster, log = shared
    view = cluster.view
    await append(log, [event("track", event="Order Completed") for _ in range(3)])
    cluster.start()

    async def synced(n: int) -> bool:
        doc = await view.status("analytics")
        return sum(s["status"] == "success" for s in doc["syncs"]) >= n

    await until(lambda: synced(1), "the first sync, by either worker")
    # the interval is the cluster's: the other worker finds the warehouse synced just now
    for loader in cluster.loaders:
        assert await asyncio.to_thread(loader._turn, True) is None

    await append(log, [event("track", event="Order Completed") for _ in range(2)])
    request = await view.request("analytics", "sync")  # asked of the gateway node

    async def done() -> bool:
        return await view.request_done(request)

    await until(done, "the gateway's sync request taken by a worker and carried out")
    doc = await view.status("analytics")
    syncs = sorted(doc["syncs"], key=lambda s: s["id"])
    assert [s["status"] for s in syncs] == ["success", "success"]
    assert sum(s["events"] for s in syncs) == 5  # nothing loaded twice
    assert {s["node"] for s in syncs} <= {"worker-a", "worker-b"}
    assert syncs[0]["finishedMs"] <= syncs[1]["startedMs"]  # one at a time
    assert doc["position"] == 5 and doc["lagEvents"] == 0
    assert doc["rowsPerTable"]["website.tracks"] == 5
    (stage,) = await view.trace_stages((await log.read(4, 1))[0])
    assert stage["decision"] == "loaded" and stage["sync"] == syncs[1]["id"]


async def test_one_node_holds_a_warehouse_turn_until_it_ends_it_or_its_session_ends(
    tmp_path: Path, postgres: Postgres
) -> None:
    state = state_config(postgres)
    a, b = (WarehouseState(tmp_path / n, state, n) for n in ("a", "b"))
    try:
        assert a.try_turn("analytics") and not b.try_turn("analytics")
        assert b.try_turn("other")  # a turn per warehouse
        a.end_turn("analytics")
        assert b.try_turn("analytics") and not a.try_turn("analytics")
        b.close()  # a node that dies: its session ends, and its turns with it

        async def free() -> bool:
            return a.try_turn("analytics")

        await until(free, "the turn of a closed session free again")
    finally:
        a.close()
        b.close()


async def test_a_turn_taken_is_given_back_when_the_steps_after_it_fail(
    tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = state_config(postgres)
    config = warehouse_config("postgres", "postgresql://unused@127.0.0.1:1/x")
    loader = Loader(config, memory_log(), tmp_path / "a", state=state, node="worker-a")
    other = WarehouseState(tmp_path / "b", state, "worker-b")
    try:

        def broken(warehouse: str) -> int:
            raise RuntimeError("statement timeout")

        monkeypatch.setattr(loader.state, "recent_start_ms", broken)
        with pytest.raises(RuntimeError, match="statement timeout"):
            loader._turn(True)
        assert other.try_turn("analytics")  # not left held by the failed round
    finally:
        loader.state.close()
        other.close()


async def test_a_nodes_former_history_is_copied_in_once(tmp_path: Path, postgres: Postgres) -> None:
    dsn = postgres.create_database(f"shared_{uuid.uuid4().hex[:12]}")
    log = memory_log()
    events = [event("track", event="A", properties={"n": 1}),
              event("track", event="A", properties={"n": "one"})]  # fmt: skip
    await append(log, events)
    local = Loader(warehouse_config("postgres", dsn), log, tmp_path)
    first = await local.sync()
    local.state.request("analytics", "sync")  # asked before the move, never taken
    local.state.close()

    state = state_config(postgres)
    moved = WarehouseState(tmp_path, state, "worker-a")
    try:
        (sync,) = moved.syncs("analytics")
        assert (sync.status, sync.events, sync.rows) == ("success", 2, first.rows)
        assert moved.totals("analytics") == first.rows
        assert moved.position("analytics") == 2
        assert [d["column"] for d in moved.discarded("analytics", events[1]["messageId"])] == ["n"]
        assert moved.waiting("analytics")
    finally:
        moved.close()
    assert not (tmp_path / "warehouses" / DB_FILE).exists()
    assert (tmp_path / "warehouses" / f"{DB_FILE}.adopted").exists()
    with sqlite3.connect(tmp_path / "warehouses" / f"{DB_FILE}.adopted") as kept:
        assert kept.execute("SELECT count(*) FROM syncs").fetchone() == (1,)
    again = WarehouseState(tmp_path, state, "worker-a")  # the file is not read twice
    try:
        assert len(again.syncs("analytics")) == 1
    finally:
        again.close()


def test_shared_state_refuses_a_duckdb_file_per_node(tmp_path: Path) -> None:
    state = {"backend": "postgres", "dsn": "postgresql://headwater@127.0.0.1:5432/headwater"}
    base = {"sources": [{"name": "website", "write_key": "wk_website_1"}], "state": state}
    with pytest.raises(ConfigError, match=r"warehouses\[0\]\.path: .*absolute path"):
        parse_workspace({**base, "warehouses": [{"name": "analytics", "sources": ["website"],
                                                  "path": "warehouse.duckdb"}]})  # fmt: skip
    ws = parse_workspace({**base, "warehouses": [{"name": "analytics", "sources": ["website"],
                                                   "path": str(tmp_path / "w.duckdb")}]})  # fmt: skip
    assert ws.warehouses[0].path == str(tmp_path / "w.duckdb")
