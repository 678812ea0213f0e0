"""Routing through the engine: sources, the ``integrations`` object, disabled destinations;
and :class:`~headwater.processor.routing.Route` on its own."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from headwater.delivery.outcomes import EventState
from headwater.processor.routing import Filtered, NotMine, Route, Routed
from tests.delivery.conftest import Pipeline, event, ids_of, webhook
from tests.fakes import FakeDestination


def devsink(name: str, sources: list[str]) -> dict[str, Any]:
    return {"name": name, "type": "devsink", "sources": sources}


def sunk(pipeline: Pipeline, name: str) -> list[str]:
    sink = pipeline.engine.devsink(name)
    assert sink is not None
    return [e["messageId"] for e in reversed(sink.recent())]


async def test_integrations_sources_and_disabled_destinations(
    make_pipeline: Any, fake: FakeDestination
) -> None:
    with FakeDestination() as off_fake:
        off = webhook("off", off_fake.url)
        off["enabled"] = False
        pipeline: Pipeline = await make_pipeline(
            [webhook("hook", fake.url, concurrency=1), devsink("sink", ["website"]),
             devsink("back", ["backend"]), off]
        )  # fmt: skip
        cases = {
            "plain": event(),
            "all_false_hook_true": event(integrations={"All": False, "hook": True}),
            "type_false": event(integrations={"webhook": False}),
            "name_false": event(integrations={"All": True, "hook": False}),
            "all_false_devsink_options": event(integrations={"All": False, "devsink": {"x": 1}}),
            "wrong_case": event(integrations={"All": False, "Hook": True, "Webhook": True}),
            "name_beats_type": event(integrations={"hook": True, "webhook": False}),
            "backend": event(source="backend"),
        }
        ids = dict(zip(cases, await pipeline.send(list(cases.values())), strict=True))
        to_hook = ["plain", "all_false_hook_true", "name_beats_type"]
        to_sink = ["plain", "type_false", "name_false", "all_false_devsink_options",
                   "name_beats_type"]  # fmt: skip
        website = [ids[k] for k in cases if k != "backend"]
        await pipeline.wait_states("hook", [ids[k] for k in to_hook], EventState.DELIVERED)
        await pipeline.wait_states("off", website, EventState.FILTERED)
        await pipeline.wait(lambda: len(sunk(pipeline, "sink")) >= len(to_sink))
        await pipeline.wait(lambda: sunk(pipeline, "back") == [ids["backend"]])
        await asyncio.sleep(0.2)
        assert off_fake.requests == [], "a disabled destination was sent events"
    assert ids_of(fake.events()) == [ids[k] for k in to_hook]
    assert sunk(pipeline, "sink") == [ids[k] for k in to_sink]

    async def only_row(destination: str, key: str) -> tuple[EventState, str | None]:
        rows = await pipeline.ledger(destination, ids[key])
        assert len(rows) == 1, rows
        return rows[0].state, rows[0].reason

    filtered = EventState.FILTERED
    assert await only_row("hook", "type_false") == (filtered, "integrations.webhook is false")
    assert await only_row("hook", "name_false") == (filtered, "integrations.hook is false")
    state, reason = await only_row("hook", "wrong_case")
    assert state is filtered and "integrations.All is false" in (reason or "")
    state, reason = await only_row("sink", "all_false_hook_true")
    assert state is filtered and "integrations.All is false" in (reason or "")
    assert await only_row("off", "plain") == (filtered, "the destination is disabled")
    # Events of other sources are not the destination's business: no ledger row at all.
    assert await pipeline.ledger("hook", ids["backend"]) == []
    assert await pipeline.ledger("back", ids["plain"]) == []
    assert pipeline.worker("hook").stats.filtered == len(website) - len(to_hook)
    assert pipeline.worker("off").stats.filtered == len(website)


ROUTE = Route("hook", "webhook", frozenset({"website"}))


@pytest.mark.parametrize(
    ("integrations", "routed"),
    [
        (None, True),
        ({}, True),
        ("not an object", True),
        ({"All": True}, True),
        ({"All": False}, False),
        ({"All": False, "hook": True}, True),
        ({"All": False, "webhook": True}, True),
        ({"All": False, "hook": {"apiKey": "x"}}, True),
        ({"All": False, "HOOK": True}, False),
        ({"hook": False}, False),
        ({"webhook": False}, False),
        ({"hook": True, "webhook": False}, True),
        ({"hook": False, "webhook": True}, False),
        ({"All": False, "hook": None, "webhook": True}, True),
        ({"Other": False}, True),
    ],
)
def test_route_by_integrations(integrations: Any, routed: bool) -> None:
    decision = ROUTE.decide("website", {"integrations": integrations})
    assert isinstance(decision, Routed if routed else Filtered), decision
    if isinstance(decision, Filtered):
        assert decision.reason.startswith("integrations.")
    # the same event as the log stores it (JSON) decides the same, with decoys around it
    for body in (
        {"integrations": integrations},
        {"event": "integrations", "integrations": integrations},
        {"properties": {"integrations": {}}, "integrations": integrations},
        {
            "properties": {"integrations": {"All": False}, "note": '"integrations":{}'},
            "integrations": integrations,
        },
    ):
        assert ROUTE.decide("website", orjson.dumps(body)) == decision, body


@pytest.mark.parametrize(
    "body",
    [
        {"type": "track"},
        {"type": "track", "integrations": {}},
        {"properties": {"integrations": {"All": False, "hook": False}}},
        {"event": "integrations"},
    ],
)
def test_route_from_json_without_top_level_integrations(body: dict[str, Any]) -> None:
    assert isinstance(ROUTE.decide("website", orjson.dumps(body)), Routed)


def test_route_by_source_and_enabled() -> None:
    assert isinstance(ROUTE.decide("backend", {}), NotMine)
    assert isinstance(ROUTE.decide("Website", {}), NotMine)
    disabled = Route("hook", "webhook", frozenset({"website"}), enabled=False)
    assert disabled.decide("website", {}) == Filtered("the destination is disabled")
    assert isinstance(disabled.decide("backend", {}), NotMine)
