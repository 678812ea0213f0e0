"""An in-process pipeline: a log, the delivery engine, fake destinations; no HTTP ingestion."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from headwater.config.workspace import LogConfig, Workspace, parse_workspace
from headwater.delivery.engine import DeliveryEngine
from headwater.delivery.outcomes import EventState
from headwater.delivery.store import DB_FILE, LedgerRow, StoreDB
from headwater.delivery.worker import Worker
from headwater.log.base import Record
from headwater.log.memory import MemoryLog
from tests.fakes import FakeDestination, Script


def event(source: str = "website", **fields: Any) -> Record:
    message_id = fields.pop("messageId", None) or str(uuid.uuid4())
    received_ms = fields.pop("received_ms", None) or int(time.time() * 1000)
    body = {"type": "track", "event": "Order Completed", "userId": "u1",
            "messageId": message_id, "integrations": {}, **fields}  # fmt: skip
    return Record(message_id, source, body["type"], received_ms, orjson.dumps(body))


def webhook(
    name: str, url: str, *, sources: list[str] | None = None, **delivery: Any
) -> dict[str, Any]:
    """A webhook destination of the ``website`` source with these delivery options."""
    return {"name": name, "type": "webhook", "sources": sources or ["website"],
            "settings": {"url": url}, "delivery": delivery}  # fmt: skip


FAST: dict[str, Any] = {"backoff_base_secs": 0.02, "backoff_max_secs": 0.1, "breaker_probe_secs": 0.05,
        "breaker_max_probe_secs": 0.1}  # fmt: skip
"""Delivery options that keep failure tests short."""


def ids_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["messageId"] for e in events]


class FakeOnPort(FakeDestination):
    """A :class:`FakeDestination` listening on a given port (one that refused connections)."""

    def __init__(self, port: int, script: Script | None = None) -> None:
        super().__init__(script, port=port)


class Pipeline:
    def __init__(self, workspace: Workspace, data_dir: Path) -> None:
        self.workspace = workspace
        self.log = MemoryLog(LogConfig())
        self.data_dir = data_dir
        self.engine = DeliveryEngine(workspace, self.log, data_dir)

    async def send(self, records: list[Record]) -> list[str]:
        await self.log.append(records)
        return [r.message_id for r in records]

    async def wait(self, predicate: Callable[[], bool], within: float = 20) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {within}s")
            await asyncio.sleep(0.02)

    def worker(self, name: str) -> Worker:
        return self.engine.workers[name]

    async def offset_of(self, message_id: str) -> int:
        record = await self.log.get(message_id)
        assert record is not None
        return record.offset

    async def ledger(self, destination: str, message_id: str) -> list[LedgerRow]:
        """The ledger rows of one event at one destination, oldest first."""
        offset = await self.offset_of(message_id)
        return await self.engine.store.run(lambda db: db.ledger_rows(destination, offset))

    async def states(self, destination: str, message_id: str) -> list[EventState]:
        return [r.state for r in await self.ledger(destination, message_id)]

    async def wait_states(
        self, destination: str, ids: list[str], state: EventState, within: float = 20
    ) -> None:
        """Until each event's latest ledger row at ``destination`` is in ``state``."""
        deadline = time.monotonic() + within
        while True:
            latest: list[EventState | None] = []
            for message_id in ids:
                found = await self.states(destination, message_id)
                latest.append(found[-1] if found else None)
            if all(s is state for s in latest):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not all {state.value} in {within}s: {latest}")
            await asyncio.sleep(0.05)

    async def cli(self, fn: Callable[[StoreDB], Any]) -> Any:
        """Run ``fn`` on a connection of its own to the store, as the CLI does beside a
        running server."""

        def run() -> Any:
            db = StoreDB(self.data_dir / DB_FILE)
            try:
                return fn(db)
            finally:
                db.close()

        return await asyncio.to_thread(run)

    async def restart(self) -> None:
        """Stop the engine and start a new one on the same data dir and the same log."""
        await self.engine.stop()
        self.engine = DeliveryEngine(self.workspace, self.log, self.data_dir)
        await self.engine.start()


@pytest.fixture
async def make_pipeline(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    pipelines: list[Pipeline] = []

    async def make(destinations: list[dict[str, Any]], start: bool = True) -> Pipeline:
        sources = [
            {"name": "website", "write_key": "wk_website_1"},
            {"name": "backend", "write_key": "wk_backend_1"},
        ]
        workspace = parse_workspace({"sources": sources, "destinations": destinations})
        pipeline = Pipeline(workspace, tmp_path / f"delivery{len(pipelines)}")
        pipelines.append(pipeline)
        if start:
            await pipeline.engine.start()
        return pipeline

    yield make
    for pipeline in pipelines:
        await pipeline.engine.stop()
