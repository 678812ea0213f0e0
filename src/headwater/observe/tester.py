"""The event tester and destination tests, as the API, the console and the CLI ask them.

:meth:`Tester.test_destination` takes one event (or a sample of a type the destination
sends), normalises it as the Tracking API would, runs it through the destination's filters
and transformations and hands it to :func:`headwater.delivery.tester.run_test` (mapping,
then a dry run, the vendor's validation endpoint, or a real send).

:meth:`Tester.test_event` shows, stage by stage, what Headwater makes of a pasted event
from a source: the normalised event, the source's tracking plan (violations, what it omits
or that it blocks), the source's transformations, then for each destination of the source
its routing (``integrations``, disabled), filters, transformations and mapping with the
requests it would send; on request, the vendor's answer for one destination.

Nothing here writes to the log, the ledger, the protocols store or the counters: a tested
event leaves no trace but a line in the server's log.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from headwater.config.workspace import DestinationConfig, Workspace
from headwater.delivery.engine import build_destination, route_of
from headwater.delivery.tester import NOT_STORED, RecordingHttp, run_test, sample_event
from headwater.gateway.normalize import Envelope, ItemError, iso_ms, normalize_event, to_record
from headwater.observe.service import ObserveError, Observer
from headwater.processor.admin import ProcessorAdmin, preview
from headwater.processor.filters import DestinationFilters, Dropped, Modified
from headwater.processor.routing import Filtered, NotMine
from headwater.processor.transforms import Changed, Transformer


def invalid(message: str) -> ObserveError:
    return ObserveError("invalid_event", message, 400)


class Tester:
    """Destination tests and the event tester over a running server's configuration."""

    def __init__(self, observer: Observer, admin: Callable[[], ProcessorAdmin | None]) -> None:
        self.observer = observer
        self.admin = admin

    @property
    def workspace(self) -> Workspace:
        return self.observer.workspace

    # ------------------------------------------------------------------ a destination

    async def test_destination(
        self, name: str, event: dict[str, Any] | None = None, send: bool = False
    ) -> dict[str, Any]:
        """One event through the destination's filters, transformations and mapping; sent
        when ``send`` (or to the vendor's validation endpoint when it has one)."""
        config = self.observer.require_destination(name)
        http = RecordingHttp(self._http())
        destination = build_destination(config, http)
        try:
            given = event if event is not None else sample_event(destination)
            normalised = normalise(given, config.sources[0] if config.sources else "test")
            shaping = shape(config, self.workspace, normalised)
            doc: dict[str, Any] = {
                "destination": name,
                "type": config.type,
                "enabled": config.enabled,
                "sample": event is None,
                "input": normalised,
                **shaping,
            }
            if shaping["event"] is None:  # a filter dropped it: nothing to map or send
                doc["test"] = None
                doc["outcome"] = {"result": "filtered", "status": None,
                                  "reason": shaping["filters"]["detail"]}  # fmt: skip
                doc["note"] = NOT_STORED
                return doc
            test = (await run_test(destination, http, shaping["event"], send)).as_dict()
            return {**doc, **test, "destination": name}
        finally:
            await destination.close()

    # ------------------------------------------------------------------ the event tester

    async def test_event(
        self, source: str, event: dict[str, Any], send_to: str | None = None
    ) -> dict[str, Any]:
        """What each stage makes of ``event`` from ``source``; with ``send_to``, the answer of
        that destination too (it must be one of the source's)."""
        config = self.observer.require_source(source)
        destinations = [d for d in self.workspace.destinations if source in d.sources]
        if send_to is not None and all(d.name != send_to for d in destinations):
            names = ", ".join(d.name for d in destinations) or "none"
            raise ObserveError(
                "not_found", f"destination {send_to!r} does not take events from source "
                f"{source!r}; its destinations are: {names}", 404,
            )  # fmt: skip
        normalised = normalise(event, source)
        stages: list[dict[str, Any]] = [
            {"stage": "normalised", "decision": "accepted",
             "detail": f"accepted as the Tracking API would accept it from source {source}"
             f"{'' if config.enabled else ' (the source is disabled: it refuses events now)'}",
             "event": normalised},
        ]  # fmt: skip
        stored = self._ingest(source, normalised, stages)
        doc: dict[str, Any] = {"source": source, "stages": stages, "blocked": stored is None,
                               "event": stored, "destinations": [], "test": None,
                               "note": NOT_STORED}  # fmt: skip
        if stored is None:
            return doc
        for dest in destinations:
            doc["destinations"].append(await self._destination_view(dest, source, stored))
        if send_to is not None:
            view = next(v for v in doc["destinations"] if v["destination"] == send_to)
            if not view["reaches"]:
                raise ObserveError(
                    "not_routed", f"this event does not reach destination {send_to!r}: "
                    f"{view['stoppedBy']}; nothing was sent", 409,
                )  # fmt: skip
            doc["test"] = await self._send(send_to, view["event"])
        return doc

    def _ingest(
        self, source: str, event: dict[str, Any], stages: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """The tracking plan and source transformations; the event to store, None when
        blocked. Nothing is counted or kept."""
        admin = self.admin()
        if admin is None:
            raise ObserveError("starting", "Headwater is starting; try again", 503)
        plan = admin.pipeline.plan_of(source)
        processed = admin.pipeline.recheck(source, copy.deepcopy(event))
        decisions = processed.decisions if processed is not None else []
        by_plan = [d for d in decisions if d["stage"] == "tracking plan"]
        if plan is None:
            stages.append({"stage": "tracking plan", "plan": None, "decision": "none",
                           "detail": f"source {source} has no tracking plan"})  # fmt: skip
        elif by_plan:
            stages.append({**by_plan[0], "forwarded": _forwarded(processed)})
        else:
            stages.append({"stage": "tracking plan", "plan": plan.name, "decision": "passed",
                           "detail": f"the event matches tracking plan {plan.name!r}",
                           "forwarded": []})  # fmt: skip
        if processed is not None and processed.event is None:
            return None
        changes = [d["detail"] for d in decisions if d["stage"] == "transformation"]
        result = processed.event if processed is not None else event
        stages.append({
            "stage": "source transformations",
            "decision": "transformed" if changes else "unchanged",
            "detail": "; ".join(changes) or "no transformation of the source changed it",
            "changes": changes, "event": result,
        })  # fmt: skip
        return result

    async def _destination_view(
        self, dest: DestinationConfig, source: str, event: dict[str, Any]
    ) -> dict[str, Any]:
        view: dict[str, Any] = {"destination": dest.name, "type": dest.type,
                                "enabled": dest.enabled}  # fmt: skip
        decision = route_of(dest).decide(source, event)
        if isinstance(decision, Filtered | NotMine):
            reason = decision.reason if isinstance(decision, Filtered) else "not its source"
            view.update(routing={"decision": "filtered", "detail": reason}, reaches=False,
                        stoppedBy=f"routing: {reason}", event=None)  # fmt: skip
            return view
        view["routing"] = {"decision": "routed", "detail": _routing_detail(dest, event)}
        shaping = shape(dest, self.workspace, event)
        view.update(shaping)
        if shaping["event"] is None:
            view.update(reaches=False, stoppedBy=f"filters: {shaping['filters']['detail']}")
            return view
        view["reaches"] = True
        http = RecordingHttp(self._http())
        destination = build_destination(dest, http)
        try:
            test = await run_test(destination, http, shaping["event"], preview_only=True)
        finally:
            await destination.close()
        view.update(mapping=test.mapping, requests=test.requests, outcome=test.outcome)
        return view

    async def _send(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        config = self.observer.require_destination(name)
        http = RecordingHttp(self._http())
        destination = build_destination(config, http)
        try:
            return (await run_test(destination, http, event, send=True)).as_dict()
        finally:
            await destination.close()

    def _http(self) -> Any:
        engine = self.observer.delivery
        if engine is None:
            raise ObserveError("starting", "Headwater is starting; try again", 503)
        return engine.http


def normalise(event: Any, source: str) -> dict[str, Any]:
    """The event as the Tracking API would store it (a copy), or a 400 naming the field."""
    if not isinstance(event, dict):
        raise invalid("event must be one event as a JSON object, e.g. {\"type\": \"track\", "
                      "\"event\": \"Order Completed\", \"userId\": \"u1\"}")  # fmt: skip
    now = time.time_ns() // 1_000_000
    envelope = Envelope(source, now, iso_ms(now), None)
    try:
        normalised = normalize_event(copy.deepcopy(event), None, envelope)
        to_record(normalised, source, now)  # the size limit, and JSON the log can hold
    except ItemError as exc:
        raise invalid(f"event: {exc.message}") from None
    except (TypeError, ValueError) as exc:  # orjson: integers beyond 64 bits, odd keys
        raise invalid(f"event: cannot be stored as JSON ({exc}); numbers must fit in 64 "
                      "bits and keys must be strings") from None  # fmt: skip
    return normalised


def shape(config: DestinationConfig, workspace: Workspace, event: dict[str, Any]) -> dict[str, Any]:
    """The destination's filters, then its transformations: each step, and the event it
    gets (None when a filter drops it). Counters are left alone."""
    steps = preview(config.name, list(config.filters), [], event)["filters"]
    result = DestinationFilters(config.filters).apply(event, count=False)
    filters: dict[str, Any] = {"steps": steps}
    if isinstance(result, Dropped):
        filters.update(decision="dropped", detail=result.reason, changes=[])
        return {"filters": filters, "transformations": None, "event": None}
    current = event
    if isinstance(result, Modified):
        current = result.event
        filters.update(decision="modified", detail="; ".join(result.changes),
                       changes=list(result.changes))  # fmt: skip
    else:
        detail = "no filter" if not config.filters else "no filter drops or changes it"
        filters.update(decision="kept", detail=detail, changes=[])
    transformed = Transformer.for_destination(workspace.transformations, config.name).apply(current)
    changes = list(transformed.changes) if isinstance(transformed, Changed) else []
    if isinstance(transformed, Changed):
        current = transformed.event
    transformations = {
        "decision": "transformed" if changes else "unchanged",
        "detail": "; ".join(changes) or "no transformation of the destination changed it",
        "changes": changes,
    }
    return {"filters": filters, "transformations": transformations, "event": current}


def _routing_detail(dest: DestinationConfig, event: dict[str, Any]) -> str:
    integrations = event.get("integrations")
    if isinstance(integrations, dict) and integrations:
        for key in (dest.name, dest.type):
            if integrations.get(key) is not None:
                return f"integrations.{key} lets it through"
        return "integrations.All is not false"
    return "no integrations object: every destination of the source gets it"


def _forwarded(processed: Any) -> list[dict[str, Any]]:
    """Events the plan would forward to other sources (blocked copies, violations)."""
    if processed is None:
        return []
    return [{"source": s, "type": e.get("type"), "event": e.get("event")}
            for s, e in processed.extra]  # fmt: skip


__all__ = ["Tester", "normalise", "shape"]
