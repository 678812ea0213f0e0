"""``GET /api/v1/audit``: the audit trail, newest first, in Segment-style cursor pages.

Input as Segment's Public API takes it: ``?pagination.count=50&pagination.cursor=<opaque>``;
output ``pagination: {current, next, count}`` where ``next`` is null on the last page.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import FastAPI, Query

from headwater.api.auth import requires
from headwater.api.params import WindowParam
from headwater.observe.service import ObserveError, duration_secs
from headwater.state.audit import DEFAULT_LIMIT, MAX_LIMIT, AuditLog


def register(app: FastAPI, audit: AuditLog) -> None:
    @app.get(
        "/api/v1/audit",
        tags=["audit"],
        summary="The audit trail: who changed what, when and from where (newest first)",
        dependencies=[requires("audit:read")],
    )
    async def audit_trail(
        resource: Annotated[
            str | None,
            Query(max_length=300, description="A resource and what lies under it, e.g. "
                  "destinations/amplitude, or a kind: destinations"),
        ] = None,
        since: WindowParam | None = None,
        count: Annotated[int, Query(alias="pagination.count", ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(alias="pagination.cursor", max_length=40)] = None,
    ) -> dict[str, Any]:  # fmt: skip
        since_ms = None
        if since is not None:
            since_ms = int((time.time() - duration_secs(since)) * 1000)
        try:
            page = await asyncio.to_thread(audit.entries, resource, since_ms, count, cursor)
        except ValueError as exc:
            raise ObserveError("invalid_cursor", str(exc), 400) from None
        return {
            "entries": [e.to_json() for e in page.entries],
            "pagination": {"current": cursor, "next": page.next_cursor, "count": len(page.entries)},
        }
