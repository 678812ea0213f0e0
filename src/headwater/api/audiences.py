"""Management API routes for a space's audiences (docs/audiences.md): their sizes and
flows, one audience's members and latest entries and exits, and why a profile is in one or
not — read from the space's profile store, as the Profile API does, with ``profiles:read``
— and pausing and resuming an audience's sync to a destination (``destinations:write``,
in the audit trail)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request

from headwater.api.auth import requires
from headwater.api.processing import record
from headwater.engage.activation import Activator
from headwater.gateway.normalize import iso_ms
from headwater.observe.service import ObserveError
from headwater.state.audit import AuditLog
from headwater.unify.api import ProfileError, Profiles, audience_of


def register(
    app: FastAPI, profiles: Profiles, activator: Activator | None, audit: AuditLog | None
) -> None:
    read = [requires("profiles:read")]
    write = [requires("destinations:write")]

    def with_pauses(space: str, doc: dict[str, Any]) -> dict[str, Any]:
        paused = activator.paused(space) if activator is not None else {}
        for target in doc.get("destinations", []):
            pause = paused.get(f"{doc['key']}/{target['name']}")
            target["paused"] = pause is not None
            target["paused_since"] = iso_ms(pause["since_ms"]) if pause else None
        return doc

    async def answer(call: Any) -> dict[str, Any]:
        try:
            return await call  # type: ignore[no-any-return]
        except ProfileError as exc:
            raise ObserveError(exc.code, exc.message, exc.status) from None

    @app.get("/api/v1/spaces/{space}/audiences", tags=["audiences"], dependencies=read,
             summary="A space's audiences: size, entries and exits of the last hour")  # fmt: skip
    async def list_audiences(space: str) -> dict[str, Any]:
        doc = await answer(profiles.audiences(space))
        doc["audiences"] = [with_pauses(space, a) for a in doc["audiences"]]
        return doc

    @app.get("/api/v1/spaces/{space}/audiences/{key}", tags=["audiences"], dependencies=read,
             summary="One audience: definition, size, flow, members, latest changes")  # fmt: skip
    async def get_audience(space: str, key: str, request: Request) -> dict[str, Any]:
        doc = await answer(profiles.audience(space, key, dict(request.query_params)))
        return with_pauses(space, doc)

    @app.get("/api/v1/spaces/{space}/audiences/{key}/why/{profile}", tags=["audiences"],
             dependencies=read,
             summary="Whether a profile (user_id:u-42) is a member, and why")  # fmt: skip
    async def why(space: str, key: str, profile: str) -> dict[str, Any]:
        return await answer(profiles.why(space, key, profile))

    def sync(space: str, key: str, destination: str) -> Any:
        """The space's activator for an audience's sync to a destination, or 404."""
        try:
            audience = audience_of(profiles.reader(space), key)
        except ProfileError as exc:
            raise ObserveError(exc.code, exc.message, exc.status) from None
        if not any(t.name == destination for t in audience.destinations):
            names = ", ".join(t.name for t in audience.destinations) or "none"
            raise ObserveError("not_found", f"audience {key!r} is not synced to {destination!r}; "
                               f"its destinations: {names}", 404)  # fmt: skip
        found = activator.space(space) if activator is not None else None
        if found is None or not audience.enabled:
            raise ObserveError("not_found", f"audience {key!r} is not activated", 404)
        return found

    @app.post("/api/v1/spaces/{space}/audiences/{key}/destinations/{destination}/pause",
              tags=["audiences"], dependencies=write,
              summary="Pause an audience's sync to a destination")  # fmt: skip
    async def pause(space: str, key: str, destination: str, request: Request) -> dict[str, Any]:
        assert activator is not None
        found = sync(space, key, destination)
        pause = await activator.pause(found, key, destination)
        await record(audit, request, "pause", f"audiences/{space}/{key}/{destination}", {})
        return {"audience": key, "destination": destination, "paused": True,
                "paused_since": iso_ms(pause["since_ms"])}  # fmt: skip

    @app.post("/api/v1/spaces/{space}/audiences/{key}/destinations/{destination}/resume",
              tags=["audiences"], dependencies=write,
              summary="Resume a sync: the net changes since the pause, then live")  # fmt: skip
    async def resume(space: str, key: str, destination: str, request: Request) -> dict[str, Any]:
        assert activator is not None
        found = sync(space, key, destination)
        if f"{key}/{destination}" not in await asyncio.to_thread(found.paused):
            raise ObserveError("not_paused", f"the sync of {key!r} to {destination!r} is not "
                               "paused", 409)  # fmt: skip
        sent = await activator.resume(found, key, destination)
        await record(audit, request, "resume", f"audiences/{space}/{key}/{destination}", sent)
        return {"audience": key, "destination": destination, "paused": False, **sent}
