"""Re-sending blocked events through today's plan: the ingest pipeline, the protocols store
(real SQLite) and the in-memory log, together."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from headwater.config.workspace import LogConfig
from headwater.gateway.hooks import Blocked
from headwater.log.memory import MemoryLog
from headwater.processor.admin import RESEND_BATCH, ProcessorAdmin
from headwater.processor.ingest import IngestPipeline
from headwater.processor.protocols import TrackingPlanConfig
from headwater.processor.protocols_store import ProtocolsStore

RECEIVED_MS = 1_750_000_000_000


def plan(block_unplanned: bool) -> TrackingPlanConfig:
    return TrackingPlanConfig.model_validate({
        "name": "shop",
        "sources": ["website"],
        "rules": [
            {"type": "TRACK", "key": "Order Completed",
             "jsonSchema": {"type": "object", "properties": {"properties": {
                 "type": "object", "required": ["order_id"],
                 "properties": {"order_id": {"type": "string"}}}}}},
            {"type": "TRACK", "key": "Debug Ping", "jsonSchema": {}},
        ],
        "enforcement": {"unplanned_events": "block" if block_unplanned else "allow",
                        "on_violation": "block"},
    })  # fmt: skip


def event(i: int, name: str) -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": f"u{i}", "messageId": f"m-{name}-{i}",
            "properties": {"order_id": str(i)} if name == "Order Completed" else {},
            "receivedAt": "2025-06-15T15:06:40.000Z"}  # fmt: skip


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[IngestPipeline, ProcessorAdmin, MemoryLog]]:
    store = ProtocolsStore(tmp_path / "protocols")
    await store.open()
    counts: Counter[tuple[str, str]] = Counter()
    pipeline = IngestPipeline(
        [plan(block_unplanned=True)], [], store,
        lambda source, step, n: counts.update({(source, step): n}), lambda *_: None,
    )  # fmt: skip
    log = MemoryLog(LogConfig())
    admin = ProcessorAdmin(tmp_path, {"website"}, {}, [], pipeline, log, set())
    yield pipeline, admin, log
    await store.close()


async def block(pipeline: IngestPipeline, events: list[dict[str, Any]]) -> None:
    hook = pipeline.hook("website")
    assert hook is not None
    blocked = []
    for e in events:
        result = hook(e)
        assert result.event is None, "the test expects these events to be blocked"
        blocked.append(Blocked("website", RECEIVED_MS, e, result.blocked or "", "",
                               result.decisions, result.opaque))  # fmt: skip
    await pipeline.keep(blocked, [])


async def test_resend_pages_past_events_that_stay_blocked(
    setup: tuple[IngestPipeline, ProcessorAdmin, MemoryLog],
) -> None:
    pipeline, admin, log = setup
    # more still-blocked events than one page, all received in the same millisecond (one
    # batch), then events that the new plan lets through
    stay = [event(i, "Unknown Event") for i in range(RESEND_BATCH + 20)]
    go = [event(i, "Signed Up") for i in range(30)]
    await block(pipeline, stay + go)
    before = await pipeline.store.violations("website", 0)

    fixed = plan(block_unplanned=True).model_dump(by_alias=True)
    fixed["rules"].append({"type": "TRACK", "key": "Signed Up", "jsonSchema": {}})
    admin.put_plan("shop", fixed)
    result = await admin.resend_blocked("website", 0, None)

    assert result["resent"] == len(go)
    assert result["stillBlocked"] == len(stay)
    stored = await log.read(0, 10_000)
    assert sorted(r.message_id for r in stored) == sorted(e["messageId"] for e in go)
    # the event keeps its receivedAt; the log files it under the re-send's time, so the
    # log's retention (7 days) cannot drop it before delivery when it was blocked 20 days ago
    assert {orjson.loads(r.payload)["receivedAt"] for r in stored} == {go[0]["receivedAt"]}
    assert all(r.received_at_ms > RECEIVED_MS for r in stored)
    assert len(await pipeline.store.blocked("website", 0, None, 10_000)) == len(stay)
    after = await pipeline.store.violations("website", 0)
    assert after.total == before.total, "re-checking must not count violations again"
