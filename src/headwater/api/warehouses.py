"""Management API routes for the warehouses: status, and sync or backfill requests (the
loader, beside delivery, takes a request within a second; docs/warehouses.md)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response

from headwater.api.auth import requires
from headwater.api.resources import set_etag
from headwater.config.changes import ConfigService
from headwater.gateway.normalize import ItemError, parse_ms
from headwater.observe.service import ObserveError
from headwater.warehouses.view import WarehouseView


def register(app: FastAPI, view: WarehouseView, config: ConfigService | None = None) -> None:
    read = [requires("warehouses:read")]
    write = [requires("warehouses:write")]

    def known(name: str) -> None:
        try:
            view.require(name)
        except KeyError as exc:
            raise ObserveError("not_found", str(exc.args[0]), 404) from exc

    @app.get("/api/v1/warehouses", tags=["warehouses"], summary="List the warehouses",
             dependencies=read)  # fmt: skip
    async def list_warehouses() -> dict[str, Any]:
        return {"warehouses": await view.statuses()}

    @app.get(
        "/api/v1/warehouses/{name}",
        tags=["warehouses"],
        summary="One warehouse: last sync, rows per table, lag, duration, errors, discards",
        dependencies=read,
    )
    async def get_warehouse(name: str, response: Response) -> dict[str, Any]:
        known(name)
        set_etag(config, response, "warehouses", name)
        return await view.status(name)

    @app.post("/api/v1/warehouses/{name}/sync", tags=["warehouses"], summary="Sync now",
              dependencies=write)  # fmt: skip
    async def sync(name: str) -> dict[str, Any]:
        known(name)
        return {"warehouse": name, "request": await view.request(name, "sync")}

    @app.post(
        "/api/v1/warehouses/{name}/backfill",
        tags=["warehouses"],
        summary="Reload from the log every event received since `since` (ISO-8601); rows "
        "already loaded are skipped by id",
        dependencies=write,
    )
    async def backfill(name: str, since: str) -> dict[str, Any]:
        known(name)
        try:
            since_ms = parse_ms(since, "since")
        except ItemError as exc:
            raise ObserveError("invalid_since", f"since: {exc}; write an ISO-8601 time, e.g. "
                               "2026-03-01T00:00:00Z", 400) from exc  # fmt: skip
        return {"warehouse": name, "request": await view.request(name, "backfill", since_ms)}

    @app.get(
        "/api/v1/warehouses/{name}/requests/{request_id}",
        tags=["warehouses"],
        summary="Whether a sync or backfill request has been carried out",
        dependencies=read,
    )
    async def request_state(name: str, request_id: str) -> dict[str, Any]:
        known(name)
        if not request_id.isdigit():
            raise ObserveError("not_found", f"no request {request_id!r}: request ids are the "
                               "numbers POST .../sync and .../backfill answer", 404)  # fmt: skip
        return {"request": int(request_id), "done": await view.request_done(int(request_id))}
