"""Management API routes for tracking plans, violations, blocked events and filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query

from headwater.observe.service import ObserveError, Observer
from headwater.processor.admin import AdminError, ProcessorAdmin

WindowParam = Annotated[
    str, Query(pattern=r"^\d{1,6}[smhdw]$", description="How far back: 15m, 1h, 1d, 7d.")
]
JsonObject = Annotated[dict[str, Any], Body()]


def register(app: FastAPI, observer: Observer, admin: Callable[[], ProcessorAdmin | None]) -> None:
    def require() -> ProcessorAdmin:
        found = admin()
        if found is None:
            raise ObserveError("starting", "Headwater is starting; try again", 503)
        return found

    @app.exception_handler(AdminError)
    async def admin_error(request: Any, exc: AdminError) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)

    @app.get("/api/v1/tracking-plans", tags=["tracking plans"], summary="List tracking plans")
    async def list_plans() -> dict[str, Any]:
        return {"trackingPlans": require().plans()}

    @app.get("/api/v1/tracking-plans/{name}", tags=["tracking plans"], summary="One tracking plan")
    async def get_plan(name: str) -> dict[str, Any]:
        return require().plan(name)

    @app.put(
        "/api/v1/tracking-plans/{name}",
        tags=["tracking plans"],
        summary="Create or replace a tracking plan (applied to the next event, kept in the "
        "data directory)",
    )
    async def put_plan(name: str, plan: JsonObject) -> dict[str, Any]:
        return require().put_plan(name, plan)

    @app.get(
        "/api/v1/sources/{name}/violations",
        tags=["tracking plans"],
        summary="Violations of the source's tracking plan, by event and field, with samples",
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
    )
    async def resend(
        name: str,
        since: WindowParam = "30d",
        until_ms: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    ) -> dict[str, Any]:
        observer.require_source(name)
        days = 31 * 86400
        secs = _secs(since)
        if secs > days:
            raise AdminError("invalid_window", "blocked events are kept 30 days; use since ≤ 30d")
        span = observer.window("1s")
        return await require().resend_blocked(name, span.until_ms - secs * 1000, until_ms)

    @app.post(
        "/api/v1/destinations/{name}/filters/preview",
        tags=["destinations"],
        summary="What the destination's filters (or proposed ones) and transformations do "
        "to a sample event",
    )
    async def preview(name: str, body: JsonObject) -> dict[str, Any]:
        return require().preview(name, body)


def _secs(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    return int(text[:-1]) * units[text[-1]]
