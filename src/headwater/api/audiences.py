"""Management API routes for a space's audiences (docs/audiences.md): their sizes and
flows, one audience's members and latest entries and exits, and why a profile is in one or
not. They read the space's profile store, as the Profile API does, with ``profiles:read``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from headwater.api.auth import requires
from headwater.observe.service import ObserveError
from headwater.unify.api import ProfileError, Profiles


def register(app: FastAPI, profiles: Profiles) -> None:
    read = [requires("profiles:read")]

    async def answer(call: Any) -> dict[str, Any]:
        try:
            return await call  # type: ignore[no-any-return]
        except ProfileError as exc:
            raise ObserveError(exc.code, exc.message, exc.status) from None

    @app.get("/api/v1/spaces/{space}/audiences", tags=["audiences"], dependencies=read,
             summary="A space's audiences: size, entries and exits of the last hour")  # fmt: skip
    async def list_audiences(space: str) -> dict[str, Any]:
        return await answer(profiles.audiences(space))

    @app.get("/api/v1/spaces/{space}/audiences/{key}", tags=["audiences"], dependencies=read,
             summary="One audience: definition, size, flow, members, latest changes")  # fmt: skip
    async def get_audience(space: str, key: str, request: Request) -> dict[str, Any]:
        return await answer(profiles.audience(space, key, dict(request.query_params)))

    @app.get("/api/v1/spaces/{space}/audiences/{key}/why/{profile}", tags=["audiences"],
             dependencies=read,
             summary="Whether a profile (user_id:u-42) is a member, and why")  # fmt: skip
    async def why(space: str, key: str, profile: str) -> dict[str, Any]:
        return await answer(profiles.why(space, key, profile))
