"""The process's start-up and shut-down (app.py), in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from headwater.app import Headwater
from headwater.config.workspace import parse_workspace
from headwater.log.base import EventLog
from headwater.state.admin_token import AdminToken

WORKSPACE = {
    "sources": [{"name": "website", "write_key": "wk_website_123"}],
    "destinations": [{"name": "sink", "type": "devsink", "sources": ["website"]}],
    "status": {"canary_enabled": False},
}


async def test_a_failed_start_up_stops_what_had_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Headwater(parse_workspace(WORKSPACE), tmp_path, admin_token=AdminToken("0" * 64, "env"))

    async def broken(log: EventLog) -> Any:
        raise OSError("the protocols store cannot be opened")

    monkeypatch.setattr(app, "_processor", broken)
    messages = iter([{"type": "lifespan.startup"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.failed",
                     "message": "the protocols store cannot be opened"}]  # fmt: skip
    assert app.delivery is not None and app.log is not None
    tasks = [w._task for w in app.delivery.workers.values()]
    await asyncio.sleep(0)
    assert tasks and all(t is None or t.done() for t in tasks), "delivery workers still run"
    with pytest.raises(Exception, match="closed"):  # the log was closed, not left open
        await app.log.append([])
