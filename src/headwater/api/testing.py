"""Management API routes that test: a destination (one event through its mapping and,
on request, its client) and the event tester (a pasted event, stage by stage).

Neither writes to the log or the delivery ledger (:mod:`headwater.observe.tester`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from headwater.api.auth import requires
from headwater.observe.tester import Tester

NOT_ROUTED = {
    409: {
        "description": "The event does not reach the destination to send it to (routing or "
        "a filter stops it); nothing was sent.",
    }
}


class DestinationTestBody(BaseModel):
    """What to test a destination with."""

    model_config = ConfigDict(extra="forbid")

    event: dict[str, Any] | None = None
    """One event (as an SDK sends it); absent: a sample of a type the destination sends."""
    send: bool = False
    """Deliver it for real. Without: a dry run (the requests are shown, not sent), or the
    vendor's validation endpoint where it has one."""


class EventTesterBody(BaseModel):
    """A pasted event and the source it is from."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    """The source the event is from (its tracking plan, transformations, destinations)."""
    event: dict[str, Any]
    """One event, as an SDK sends it."""
    send: str | None = None
    """A destination of the source to send the event to for real, showing its answer."""


def register(app: FastAPI, tester: Tester) -> None:
    @app.post(
        "/api/v1/destinations/{name}/test",
        tags=["destinations"],
        summary="Test a destination: one event through its filters, transformations and "
        "mapping; the exact request and, when sent, the vendor's answer (not stored)",
        dependencies=[requires("tester:run")],
    )
    async def test_destination(
        name: str, body: Annotated[DestinationTestBody | None, Body()] = None
    ) -> dict[str, Any]:
        given = body or DestinationTestBody()
        return await tester.test_destination(name, given.event, given.send)

    @app.post(
        "/api/v1/event-tester",
        tags=["events"],
        summary="Event tester: what the tracking plan, transformations, routing, filters "
        "and mappings make of a pasted event; on request, one destination's answer",
        responses=NOT_ROUTED,  # type: ignore[arg-type]
        dependencies=[requires("tester:run")],
    )
    async def event_tester(body: Annotated[EventTesterBody, Body()]) -> dict[str, Any]:
        return await tester.test_event(body.source, body.event, body.send)
