"""Watching other services: a vendor's status page and a plain endpoint raise the same alerts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from headwater.app import Headwater
from headwater.config import parse_workspace
from headwater.config.workspace import WatchTarget
from headwater.status import watch
from headwater.status.model import Status
from tests.fakes import FakeDestination, Reply


def vendor_page(status: str) -> Reply:
    return Reply(200, body=orjson.dumps({
        "page": {"id": "x", "name": "Acme Analytics", "url": "https://status.acme.test"},
        "status": {"indicator": "none", "description": "ok"},
        "components": [
            {"id": "grp", "name": "APIs", "status": "operational", "group": True},
            {"id": "ingest", "name": "Ingestion API", "status": status, "group": False},
            {"id": "web", "name": "Website", "status": "operational"},
        ],
    }))  # fmt: skip


async def test_poll_statuspage_and_http() -> None:
    with FakeDestination(lambda _r, _i: vendor_page("partial_outage")) as vendor:
        target = WatchTarget(name="acme", url=vendor.url)
        async with watch.client() as client:
            states = {s.component.id: s for s in await watch.poll(target, client)}
            assert set(states) == {"watch:acme:ingest", "watch:acme:web"}, "groups are skipped"
            assert states["watch:acme:ingest"].status is Status.PARTIAL
            assert "Acme Analytics reports partial_outage" in states["watch:acme:ingest"].reason
            assert vendor.requests[0].path == "/api/v2/summary.json"
            vendor.script = lambda _r, _i: Reply(503)
            [down] = await watch.poll(target, client)
            assert down.status is Status.MAJOR and "cannot read the status page" in down.reason
            http = WatchTarget(name="api", url=f"{vendor.url}/health", type="http")
            [endpoint] = await watch.poll(http, client)
            assert endpoint.status is Status.MAJOR and "HTTP 503" in endpoint.reason


async def test_a_watched_component_degrading_alerts(tmp_path: Path) -> None:
    with (
        FakeDestination(lambda _r, _i: vendor_page("major_outage")) as vendor,
        FakeDestination() as receiver,
    ):
        workspace = parse_workspace({
            "sources": [{"name": "website"}],
            "status": {"canary_enabled": False},
            "watch": [{"name": "acme", "url": vendor.url, "interval_secs": 5}],
            "alerts": {"notifiers": [{"name": "ops", "type": "webhook",
                                      "settings": {"url": f"{receiver.url}/alerts"}}]},
            "log": {"durability": "os"},
        })  # fmt: skip
        app = Headwater(workspace, tmp_path)
        await app.start()
        try:
            await asyncio.to_thread(receiver.wait_for, lambda f: len(f.requests) >= 1, 10)
            [alert] = [r.json() for r in receiver.requests]
            assert alert["kind"] == "opened"
            assert alert["component"]["id"] == "watch:acme:ingest"
            assert alert["status"] == "major_outage"
            # a watched service is not a Headwater component
            ids = [c.id for c in app.status.monitor.components()]  # type: ignore[union-attr]
            assert not any(i.startswith("watch:") for i in ids)
        finally:
            await app.stop()
