"""The one place that wires the stages into a running process.

``/v1/*`` goes straight to the Tracking API (a bare ASGI app: it is the hot path); every
other path goes to a Starlette app for health checks (``/healthz``, ``/readyz``), Prometheus
metrics (``/metrics``, unauthenticated like any exporter's: firewall it, see
docs/metrics.md), and later the management API and the console. The log is opened when the
server starts and closed, after pending writes finish, when it stops.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from headwater.config.workspace import Workspace
from headwater.delivery.engine import DeliveryEngine
from headwater.gateway.api import Receive, Scope, Send, TrackingAPI
from headwater.gateway.normalize import iso_ms
from headwater.gateway.stats import IngestStats
from headwater.log.base import EventLog
from headwater.log.sqlite import SqliteLog
from headwater.log.sqlite_process import ProcessLog
from headwater.status.metrics import CONTENT_TYPE, Metrics
from headwater.status.service import StatusService, with_canary

logger = logging.getLogger("headwater")

LOG_DIR = "log"
DELIVERY_DIR = "delivery"
DEVSINK_LIMIT_MAX = 10_000


class Headwater:
    """The ASGI application of one Headwater process."""

    def __init__(self, workspace: Workspace, data_dir: Path, self_url: str | None = None) -> None:
        self.workspace = workspace
        self.data_dir = data_dir
        # what the process runs: the user's workspace plus the canary's source and sink
        self.running, self._canary_key = with_canary(workspace)
        self.status = StatusService(workspace, data_dir, self_url)
        self.stats = IngestStats(samples=workspace.gateway.rejection_samples)
        self.log: EventLog | None = None
        self.delivery: DeliveryEngine | None = None
        self._delivery_started = False
        self._tracking: TrackingAPI | None = None
        self.metrics = Metrics(self.stats, lambda: self.log, lambda: self.delivery)
        self.metrics.canary = self.status.canary_state
        self._web = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
                Route("/api/v1/devsink/{destination}", self._devsink),
                Route("/api/v1/events/{message_id}", self._event),
                *self.status.routes(),
            ]
        )

    async def start(self) -> None:
        config = self.workspace.log
        backend = ProcessLog if config.writer == "process" else SqliteLog
        self.log = backend(self.data_dir / LOG_DIR, config)
        self.delivery = DeliveryEngine(self.running, self.log, self.data_dir / DELIVERY_DIR)
        await self.delivery.start()
        self._delivery_started = True
        self._tracking = TrackingAPI(
            self.running.sources, self.log, self.stats, self.workspace.gateway
        )
        await self.status.start(self.log, self.delivery, self, self._canary_key)

    async def stop(self) -> None:
        await self.metrics.close()
        await self.status.stop()
        if self.delivery is not None:
            await self.delivery.stop()
        if self.log is not None:
            await self.log.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith("/v1/"):
            if self._tracking is None:
                await _not_ready(send)
                return
            await self._tracking(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._web(scope, receive, send)  # type: ignore[arg-type]

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    logger.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> JSONResponse:
        """Ready when the log accepts writes and the delivery engine has started."""
        if self.log is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        stats = self.log.stats()
        started = self._delivery_started
        status = "ready" if started else "starting"
        if stats.refusing is not None:
            status = "refusing_writes"
        body: dict[str, Any] = {
            "status": status,
            "log": {"refusing": stats.refusing, "last_offset": stats.last_offset},
            "delivery": {
                "started": started,
                "destinations": len(self.delivery.workers) if self.delivery is not None else 0,
            },
        }
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    async def _metrics(self, request: Request) -> Response:
        """Prometheus text exposition (docs/metrics.md)."""
        return Response(await self.metrics.render(), media_type=CONTENT_TYPE)

    async def _event(self, request: Request) -> JSONResponse:
        """An event from the log and its delivery state with each destination."""
        message_id = request.path_params["message_id"]
        found = await self.delivery.states(message_id) if self.delivery is not None else None
        if found is None:
            assert self.log is not None  # the delivery engine starts after the log
            oldest = self.log.stats().oldest_received_at_ms
            since = (
                f"the oldest event retained was received at {iso_ms(oldest)}"
                if oldest is not None
                else "the log is empty"
            )
            days = self.workspace.log.retention_max_age_secs / 86400
            return JSONResponse(
                {
                    "code": "not_found",
                    "message": f"no event with messageId {message_id!r} in the log; it keeps "
                    f"events for {days:g} days (log.retention_max_age_secs) and "
                    f"{since}. Check the messageId, or whether the request was rejected.",
                },
                status_code=404,
            )
        record, states = found
        return JSONResponse(
            {
                "messageId": record.message_id,
                "offset": record.offset,
                "source": record.source,
                "type": record.type,
                "receivedAt": iso_ms(record.received_at_ms),
                "event": orjson.loads(record.payload),
                "destinations": [s.as_dict() for s in states],
            }
        )

    async def _devsink(self, request: Request) -> JSONResponse:
        """The newest events a devsink destination received, newest first (``?limit=N``)."""
        name = request.path_params["destination"]
        sink = self.delivery.devsink(name) if self.delivery is not None else None
        if sink is None:
            sinks = [d.name for d in self.workspace.destinations if d.type == "devsink"]
            return JSONResponse(
                {
                    "code": "not_found",
                    "message": f"no devsink destination is named {name!r}; "
                    f"the devsinks are: {', '.join(sinks) or 'none'}",
                },
                status_code=404,
            )
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= DEVSINK_LIMIT_MAX:
            return JSONResponse(
                {
                    "code": "invalid_limit",
                    "message": f"limit must be a whole number from 1 to {DEVSINK_LIMIT_MAX}",
                },
                status_code=400,
            )
        events = sink.recent(int(raw))
        return JSONResponse({"destination": name, "total": sink.delivered_total, "events": events})


async def _not_ready(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": b'{"code":"starting","message":"Headwater is starting; try again"}',
        }
    )
