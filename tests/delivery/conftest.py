"""An in-process pipeline: a log, the delivery engine, fake destinations; no HTTP ingestion."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from headwater.config.workspace import LogConfig, Workspace, parse_workspace
from headwater.delivery.engine import DeliveryEngine
from headwater.log.base import Record
from headwater.log.memory import MemoryLog
from tests.fakes import FakeDestination


def event(source: str = "website", **fields: Any) -> Record:
    message_id = fields.pop("messageId", None) or str(uuid.uuid4())
    received_ms = fields.pop("received_ms", None) or int(time.time() * 1000)
    body = {"type": "track", "event": "Order Completed", "userId": "u1",
            "messageId": message_id, "integrations": {}, **fields}  # fmt: skip
    return Record(message_id, source, body["type"], received_ms, orjson.dumps(body))


class Pipeline:
    def __init__(self, workspace: Workspace, data_dir: Path) -> None:
        self.workspace = workspace
        self.log = MemoryLog(LogConfig())
        self.data_dir = data_dir
        self.engine = DeliveryEngine(workspace, self.log, data_dir)

    async def send(self, records: list[Record]) -> list[str]:
        await self.log.append(records)
        return [r.message_id for r in records]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout}s")
            await asyncio.sleep(0.02)


@pytest.fixture
def fake() -> Iterator[FakeDestination]:
    with FakeDestination() as server:
        yield server


@pytest.fixture
async def make_pipeline(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    pipelines: list[Pipeline] = []

    async def make(destinations: list[dict[str, Any]], start: bool = True) -> Pipeline:
        workspace = parse_workspace(
            {"sources": [{"name": "website", "write_key": "wk_website_1"},
                         {"name": "backend", "write_key": "wk_backend_1"}],
             "destinations": destinations}  # fmt: skip
        )
        pipeline = Pipeline(workspace, tmp_path / f"delivery{len(pipelines)}")
        pipelines.append(pipeline)
        if start:
            await pipeline.engine.start()
        return pipeline

    yield make
    for pipeline in pipelines:
        await pipeline.engine.stop()
