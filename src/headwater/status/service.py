"""Everything "is it down?" in one running process: the monitor, the canary, and the
Statuspage-compatible API. ``app.py`` creates one :class:`StatusService` and mounts
:meth:`StatusService.routes`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Route

from headwater.config.workspace import DestinationConfig, SourceConfig, WatchTarget, Workspace
from headwater.delivery.view import DeliveryView
from headwater.log.base import EventLog
from headwater.state import postgres
from headwater.status import page, statuspage, watch
from headwater.status.alerts import AlertSender, Dispatcher, Outgoing
from headwater.status.canary import (
    CANARY_DESTINATION,
    CANARY_SOURCE,
    Canary,
    CanaryState,
    canary_write_key,
)
from headwater.status.claims import AlertClaims
from headwater.status.model import ComponentState, ProcessSignal
from headwater.status.monitor import Monitor, OnChanges
from headwater.status.notifiers import build_notifiers
from headwater.status.store import DAY_MS, DB_FILE, Change, Incident

STATUS_DIR = "status"
logger = logging.getLogger(__name__)


def with_canary(workspace: Workspace) -> tuple[Workspace, str | None]:
    """The workspace the process runs: with the canary's source (and, unless the workspace
    names a canary destination, its built-in devsink). Returns the canary's write key."""
    status = workspace.status
    if not status.canary_enabled:
        return workspace, None
    key = canary_write_key()
    sources = [*workspace.sources, SourceConfig(name=CANARY_SOURCE, write_key=key)]
    destinations = list(workspace.destinations)
    if status.canary_destination is None:
        destinations.append(
            DestinationConfig(
                name=CANARY_DESTINATION,
                type="devsink",
                sources=[CANARY_SOURCE],
                settings={"keep": 100},
            )
        )
    else:
        destinations = [
            d.model_copy(update={"sources": [*d.sources, CANARY_SOURCE]})
            if d.name == status.canary_destination
            else d
            for d in destinations
        ]
    # model_copy skips validation: the user's part was validated, ours uses reserved names
    return workspace.model_copy(update={"sources": sources, "destinations": destinations}), key


def keep_canary_key(running: Workspace, key: str | None) -> Workspace:
    """``running`` with the canary's source keeping the write key the canary sends with."""
    if key is None:
        return running
    sources = [s.model_copy(update={"write_key": key}) if s.name == CANARY_SOURCE else s
               for s in running.sources]  # fmt: skip
    return running.model_copy(update={"sources": sources})


class StatusService:
    def __init__(self, workspace: Workspace, data_dir: Path, self_url: str | None) -> None:
        self.workspace = workspace
        self.data_dir = data_dir
        self.self_url = self_url
        self.monitor: Monitor | None = None
        self.canary: Canary | None = None
        self.dispatcher = Dispatcher(workspace.alerts)
        self.sender: AlertSender | None = None
        self.watched: dict[str, list[ComponentState]] = {}  # by watch target
        self._watch_alerts = watch.WatchAlerts(self.dispatcher)
        self._watch_tasks: dict[str, tuple[WatchTarget, asyncio.Task[None]]] = {}
        self._watch_client: httpx.AsyncClient | None = None
        # with shared state every gateway alerts; a claim in PostgreSQL makes it once
        state = workspace.state
        self.claims = AlertClaims(state) if postgres.uses_postgres(state) else None
        config = workspace.status
        self.canary_state = CanaryState(
            enabled=config.canary_enabled,
            destination=config.canary_destination or CANARY_DESTINATION,
            interval_secs=config.canary_interval_secs,
        )

    def reconfigure(self, workspace: Workspace, http: Any) -> None:
        """Alert rules and notifiers from now on (a notifier's queue that is not empty
        finishes with the notifier it was queued for)."""
        self.workspace = workspace
        self.dispatcher.configure(workspace.alerts)
        if self.monitor is not None:  # started: the watch targets follow the change
            self._watch_targets(workspace.watch)
        if self.sender is not None:
            for name, notifier in build_notifiers(workspace.alerts, http).items():
                self.sender.notifiers[name] = notifier

    async def start(
        self,
        log: EventLog,
        delivery: DeliveryView,
        app: Any,
        canary_key: str | None,
        on_changes: OnChanges | None = None,
        processes: Callable[[], list[ProcessSignal]] | None = None,
    ) -> None:
        canary = self.canary_state if canary_key is not None else None
        self.sender = AlertSender(build_notifiers(self.workspace.alerts, delivery.http))
        self.monitor = Monitor(self.workspace.status, log, delivery, canary,
                               self.data_dir / STATUS_DIR, on_changes or self._alert,
                               processes, self.workspace.state)  # fmt: skip
        await self.monitor.start()
        self._watch_targets(self.workspace.watch)
        if canary_key is not None:
            if self.self_url:
                client = httpx.AsyncClient(base_url=self.self_url)
            else:  # no server address known (in-process use): through the ASGI app itself
                client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://headwater"
                )
            self.canary = Canary(self.canary_state, client, canary_key, self._states(delivery))
            self.canary.start()

    @staticmethod
    def _states(delivery: DeliveryView) -> Any:
        async def states_of(message_id: str) -> Any:
            found = await delivery.states(message_id)
            return None if found is None else found[1]

        return states_of

    async def _alert(self, changes: list[Change]) -> None:
        """Hand each component's state to the alert dispatcher; send what it decides."""
        now = datetime.now(UTC)
        link = f"{self.self_url}/status" if self.self_url else None
        for change in changes:
            incident = change.incident
            if incident is None and change.state.status.severity > 0:
                incident = await self._open_incident(change.state.component.id)
            outgoing = self.dispatcher.observe(
                change.state.component, change.state.status, now,
                incident_id=f"inc-{incident.id}" if incident else None,
                incident_title=incident.name if incident else None,
                message=change.state.reason, url=link,
            )  # fmt: skip
            await self._send(outgoing)

    async def _send(self, outgoing: list[Outgoing]) -> None:
        if outgoing and self.claims is not None:
            outgoing = await asyncio.to_thread(self.claims.sendable, outgoing, self._renotify_secs)
        if outgoing and self.sender is not None:
            self.sender.submit(outgoing)

    def _renotify_secs(self, item: Outgoing) -> float:
        """The shortest renotify interval of the rules that route this alert."""
        found = [rule.renotify_secs for rule, _ in self.dispatcher.routes(item.alert.component)
                 if rule.renotify_secs > 0]  # fmt: skip
        return float(min(found)) if found else 0.0

    async def _open_incident(self, component: str) -> Incident | None:
        assert self.monitor is not None  # called by the monitor
        found = await self.monitor.run_local(lambda store: store.incidents(unresolved_only=True))
        return next((i for i in found if i.component == component), None)

    async def _watch(self, target: WatchTarget) -> None:
        """Poll one watched service and alert on its components like on Headwater's own."""
        assert self._watch_client is not None  # set before the tasks start
        while True:
            try:
                states = await watch.poll(target, self._watch_client)
                self.watched[target.name] = states
                await self._alert_watched(states)
            except Exception:
                logger.exception("watching %s failed", target.name)
            await asyncio.sleep(target.interval_secs)

    async def _alert_watched(self, states: list[ComponentState]) -> None:
        outgoing = self._watch_alerts.observe(states, datetime.now(UTC))
        await self._send(outgoing)

    def _watch_targets(self, targets: list[WatchTarget]) -> None:
        """Poll these targets from now on: a new or changed one starts, a removed or
        changed one stops (and its components leave the page)."""
        wanted = {t.name: t for t in targets}
        for name, (target, task) in list(self._watch_tasks.items()):
            if wanted.get(name) != target:
                task.cancel()
                del self._watch_tasks[name]
                self.watched.pop(name, None)
        if wanted and self._watch_client is None:
            self._watch_client = watch.client()
        loop = asyncio.get_running_loop()
        for name, target in wanted.items():
            if name not in self._watch_tasks:
                task = loop.create_task(self._watch(target), name=f"watch:{name}")
                self._watch_tasks[name] = (target, task)

    async def stop(self) -> None:
        tasks = [task for _, task in self._watch_tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._watch_client is not None:
            await self._watch_client.aclose()
        if self.canary is not None:
            await self.canary.stop()
        if self.monitor is not None:
            await self.monitor.stop()
        if self.sender is not None:
            await self.sender.close()
        if self.claims is not None:
            await asyncio.to_thread(self.claims.close)

    # ------------------------------------------------------------------ the API

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v2/summary.json", self._summary),
            Route("/api/v2/status.json", self._status),
            Route("/api/v2/components.json", self._components),
            Route("/api/v2/incidents.json", self._incidents),
            Route("/api/v2/incidents/unresolved.json", self._unresolved),
            Route("/api/v2/scheduled-maintenances.json", self._maintenances),
            Route("/api/v2/scheduled-maintenances/upcoming.json", self._upcoming),
            Route("/api/v2/scheduled-maintenances/active.json", self._active),
            Route("/status", self._page),
        ]

    async def _gather(self) -> dict[str, Any]:
        monitor = self.monitor
        if monitor is None:
            raise RuntimeError("not started")
        now = int(time.time() * 1000)
        comps = monitor.components()
        rows, incidents, unresolved, maintenances = await monitor.run_sync(
            lambda store: (
                store.component_rows(),
                store.incidents(limit=50),
                store.incidents(unresolved_only=True),
                store.maintenances(upcoming_after=now),
            )
        )
        by_id = {c.id: c for c in comps}
        components = statuspage.components_json(comps, rows, now)
        updated = max((r["updated_ms"] for r in rows.values()), default=now)
        return {
            "page": statuspage.page(self.workspace.name, self.self_url or "", updated),
            "components": components,
            "status": statuspage.overall(components),
            "incidents": [statuspage.incident_json(i, by_id) for i in incidents],
            "unresolved": [statuspage.incident_json(i, by_id) for i in unresolved],
            "maintenances": [statuspage.maintenance_json(m, now) for m in maintenances],
        }

    @staticmethod
    def _summary_doc(g: dict[str, Any]) -> dict[str, Any]:
        """summary.json: the status, components, open incidents, current and coming windows."""
        return {
            "page": g["page"],
            "status": g["status"],
            "components": g["components"],
            "incidents": g["unresolved"],
            "scheduled_maintenances": [m for m in g["maintenances"] if m["status"] != "completed"],
        }

    async def _summary(self, request: Request) -> JSONResponse:
        return JSONResponse(self._summary_doc(await self._gather()))

    async def _page(self, request: Request) -> HTMLResponse:
        """The public status page (docs/status.md)."""
        g = await self._gather()
        summary = self._summary_doc(g)
        monitor = self.monitor
        assert monitor is not None  # _gather checked
        today = int(time.time() * 1000) // DAY_MS
        ids = [c["id"] for c in g["components"]]
        history = await monitor.run_sync(
            lambda store: {cid: store.uptime(cid, today - page.UPTIME_DAYS + 1) for cid in ids}
        )
        uptime = {cid: page.bars(history[cid], today) for cid in ids}
        return HTMLResponse(page.render(summary, uptime))

    async def _status(self, request: Request) -> JSONResponse:
        g = await self._gather()
        return JSONResponse({"page": g["page"], "status": g["status"]})

    async def _components(self, request: Request) -> JSONResponse:
        g = await self._gather()
        return JSONResponse({"page": g["page"], "components": g["components"]})

    async def _incidents(self, request: Request) -> JSONResponse:
        g = await self._gather()
        return JSONResponse({"page": g["page"], "incidents": g["incidents"]})

    async def _unresolved(self, request: Request) -> JSONResponse:
        g = await self._gather()
        return JSONResponse({"page": g["page"], "incidents": g["unresolved"]})

    async def _maintenances(self, request: Request) -> JSONResponse:
        g = await self._gather()
        return JSONResponse({"page": g["page"], "scheduled_maintenances": g["maintenances"]})

    async def _upcoming(self, request: Request) -> JSONResponse:
        g = await self._gather()
        upcoming = [m for m in g["maintenances"] if m["status"] == "scheduled"]
        return JSONResponse({"page": g["page"], "scheduled_maintenances": upcoming})

    async def _active(self, request: Request) -> JSONResponse:
        g = await self._gather()
        active = [m for m in g["maintenances"] if m["status"] == "in_progress"]
        return JSONResponse({"page": g["page"], "scheduled_maintenances": active})


__all__ = ["DB_FILE", "STATUS_DIR", "StatusService", "keep_canary_key", "with_canary"]
