"""Management API routes for tracking plans, violations, blocked events and filters.

Saving a plan and resending blocked events change state: both are recorded in the audit
trail (:mod:`headwater.state.audit`) with the token's name."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request

from headwater.api.auth import current_principal, requires
from headwater.api.params import WindowParam
from headwater.observe.service import ObserveError, Observer, duration_secs
from headwater.processor.admin import AdminError, ProcessorAdmin
from headwater.state.audit import AuditLog, diff_of

JsonObject = Annotated[dict[str, Any], Body()]
logger = logging.getLogger(__name__)


async def record(
    audit: AuditLog | None, request: Request, action: str, resource: str, diff: dict[str, Any]
) -> None:
    """One audit entry for a change made through the API (or the console's live views), on
    a thread: the trail may be PostgreSQL, which must not hold up the event loop.

    The change is made already when this runs: if the trail cannot take the entry (its
    PostgreSQL down past ``reconnect_secs``), the caller still hears the change succeeded —
    an error would have it send the change again — and the log says what went unrecorded."""
    if audit is None:
        return
    origin = getattr(request.state, "origin", "api")
    actor = current_principal(request).name
    try:
        await asyncio.to_thread(audit.record, actor, action, resource, diff, origin)
    except Exception as exc:  # the change stands; say what the trail misses
        logger.error("audit trail at %s: could not record %s %s by %s (%s): %s", audit.where,
                     action, resource, actor, origin, exc)  # fmt: skip


def register(
    app: FastAPI,
    observer: Observer,
    admin: Callable[[], ProcessorAdmin | None],
    audit: AuditLog | None = None,
) -> None:
    def require() -> ProcessorAdmin:
        found = admin()
        if found is None:
            raise ObserveError("starting", "Headwater is starting; try again", 503)
        return found

    read = [requires("tracking-plans:read")]

    @app.get(
        "/api/v1/tracking-plans",
        tags=["tracking plans"],
        summary="List tracking plans",
        dependencies=read,
    )
    async def list_plans() -> dict[str, Any]:
        return {"trackingPlans": require().plans()}

    @app.get(
        "/api/v1/tracking-plans/{name}",
        tags=["tracking plans"],
        summary="One tracking plan",
        dependencies=read,
    )
    async def get_plan(name: str) -> dict[str, Any]:
        return require().plan(name)

    @app.put(
        "/api/v1/tracking-plans/{name}",
        tags=["tracking plans"],
        summary="Create or replace a tracking plan (applied to the next event, kept in the "
        "data directory)",
        dependencies=[requires("tracking-plans:write")],
    )
    async def put_plan(request: Request, name: str, plan: JsonObject) -> dict[str, Any]:
        processor = require()
        try:
            before: dict[str, Any] | None = processor.plan(name)
        except AdminError:
            before = None
        saved = processor.put_plan(name, plan)
        action = "create" if before is None else "update"
        await record(audit, request, action, f"tracking-plans/{name}", diff_of(before, saved))
        return saved

    @app.get(
        "/api/v1/sources/{name}/violations",
        tags=["tracking plans"],
        summary="Violations of the source's tracking plan, by event and field, with samples",
        dependencies=[requires("tracking-plans:read", source_param="name")],
    )
    async def violations(name: str, window: WindowParam = "1d") -> dict[str, Any]:
        observer.require_source(name)
        span = observer.window(window)
        doc = await require().violations(name, span.since_ms)
        return {**doc, "window": {"label": window, "sinceMs": span.since_ms}}

    @app.post(
        "/api/v1/sources/{name}/blocked/resend",
        tags=["tracking plans"],
        summary="Re-check the source's blocked events with today's plan; store those that pass",
        dependencies=[requires("delivery:write", source_param="name")],
    )
    async def resend(
        request: Request,
        name: str,
        since: WindowParam = "30d",
        until_ms: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    ) -> dict[str, Any]:
        observer.require_source(name)
        secs = duration_secs(since)
        if secs > 31 * 86400:
            raise AdminError("invalid_window", "blocked events are kept 30 days; use since ≤ 30d")
        now_ms = time.time_ns() // 1_000_000
        result = await require().resend_blocked(name, now_ms - secs * 1000, until_ms)
        await record(
            audit, request, "resend", f"sources/{name}/blocked", {"since": since, **result}
        )
        return result

    @app.post(
        "/api/v1/destinations/{name}/filters/preview",
        tags=["destinations"],
        summary="What the destination's filters (or proposed ones) and transformations do "
        "to a sample event",
        dependencies=[requires("destinations:read")],
    )
    async def preview(name: str, body: JsonObject) -> dict[str, Any]:
        return require().preview(name, body)
