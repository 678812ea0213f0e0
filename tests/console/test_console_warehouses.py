"""The console's warehouse pages, in-process: the list, one warehouse with its syncs and rows
per table, "Sync now", a failing warehouse with its fix, and who may see and use them."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.test_console import Console, _form_csrf, _start, fakes, login  # noqa: F401
from tests.fakes import free_port

WAIT_SECS = 30


@pytest.fixture
async def console(tmp_path: Path, fakes: Any) -> AsyncIterator[Console]:  # noqa: F811
    warehouses = [
        {"name": "analytics", "type": "duckdb", "sources": ["website"], "sync_interval": "1h"},
        {"name": "pg", "type": "postgres", "sources": ["website"], "sync_interval": "1h",
         "dsn": f"postgresql://loader@127.0.0.1:{free_port()}/analytics"},
    ]  # fmt: skip
    async for c in _start(tmp_path / "data", fakes, "http://hw.test", warehouses=warehouses):
        yield c


async def synced(console: Console, name: str, after: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECS
    while time.monotonic() < deadline:
        doc = await console.app.warehouses.status(name)
        last = doc["lastSync"]
        if last is not None and last["id"] > after and last["status"] != "running":
            return doc
        await asyncio.sleep(0.1)
    raise AssertionError(f"warehouse {name} did not finish a sync in {WAIT_SECS} s")


async def test_warehouse_pages_show_syncs_rows_and_sync_now(console: Console) -> None:
    await login(console.client)
    first = await synced(console, "analytics", 0)  # the one at start-up
    await console.track("m-1", properties={"total": 42})
    await console.track("m-2", properties={"total": "lots"})  # a conflict: _discards

    listing = await console.client.get("/console/warehouses")
    assert listing.status_code == 200
    assert 'data-warehouse="analytics"' in listing.text and 'data-warehouse="pg"' in listing.text
    assert "connection refused" in listing.text  # pg's start-up sync failed

    page = await console.client.get("/console/warehouses/analytics")
    assert page.status_code == 200 and "Sync now" in page.text
    sync = await console.client.post("/console/warehouses/analytics/sync",
                                     data={"csrf_token": _form_csrf(page.text)})  # fmt: skip
    assert sync.status_code == 200 and "Sync requested" in sync.text
    doc = await synced(console, "analytics", first["lastSync"]["id"])
    assert doc["lastSync"]["status"] == "success" and doc["lastSync"]["events"] == 2

    page = await console.client.get("/console/warehouses/analytics")
    assert re.search(r'data-table="website.order_completed".*?>2<', page.text, re.S)
    assert 'data-table="website._discards"' in page.text
    assert f'data-sync="{doc["lastSync"]["id"]}"' in page.text

    failing = await console.client.get("/console/warehouses/pg")
    assert failing.status_code == 200
    assert "connection refused" in failing.text and "does not answer" in failing.text  # the fix

    missing = await console.client.get("/console/warehouses/nope")
    assert missing.status_code == 404 and "the warehouses are: analytics, pg" in missing.text


async def test_a_read_only_role_sees_warehouses_but_cannot_sync(console: Console) -> None:
    _, token = console.app.tokens.create("viewer", "read_only", None, "test")
    await login(console.client, token)
    page = await console.client.get("/console/warehouses/analytics")
    assert page.status_code == 200 and "Sync now" not in page.text
    refused = await console.client.post("/console/warehouses/analytics/sync",
                                        data={"csrf_token": _form_csrf(page.text)})  # fmt: skip
    assert refused.status_code == 403 and "warehouses:write" in refused.text
