"""Managing plans and filters while the server runs: what ``/api/v1`` and the CLI call.

- Tracking plans come from the workspace file; ``PUT /api/v1/tracking-plans/{name}`` replaces
  or adds one. A plan written through the API is kept in ``<data-dir>/plans/<name>.json`` and
  wins over the workspace file's plan of the same name from then on, across restarts (the
  server logs that it does); delete the file to go back to the workspace's. A new plan is
  checked like the workspace's (schemas compiled, sources known, a source in one plan at
  most) and applied to the next event.
- Blocked events are re-sent (``resend_blocked``) through the source's current plan and
  transformations: those that pass now are stored in the log, exactly as if they had just
  arrived (same messageId and receivedAt), and leave the blocked store; the
  others stay.
- A filter preview runs a destination's filters and transformations (or proposed ones) on
  a sample event and says what each did.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from headwater.config.urls import field_path
from headwater.gateway.normalize import ItemError, to_record
from headwater.log.base import EventLog, Record
from headwater.processor.fanout import DestinationStage, FilteredOut, Shaped
from headwater.processor.filters import (
    DestinationFilters,
    Dropped,
    FilterConfig,
    FilterList,
    Modified,
)
from headwater.processor.ingest import IngestPipeline
from headwater.processor.protocols.plans import TrackingPlanConfig, check_tracking_plans
from headwater.processor.transforms import TransformationConfig

logger = logging.getLogger("headwater.processor")

PLANS_DIR = "plans"
RESEND_BATCH = 500
_FILTERS = TypeAdapter(FilterList)


class AdminError(Exception):
    """A request the processor refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def stored_plans(data_dir: Path) -> dict[str, TrackingPlanConfig]:
    """Plans written through the API, by name; a file that no longer loads is skipped with
    an error in the server's log (the workspace's plan of that name applies)."""
    out: dict[str, TrackingPlanConfig] = {}
    directory = data_dir / PLANS_DIR
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            plan = TrackingPlanConfig.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            logger.error("ignoring the tracking plan in %s: %s", path, exc)
            continue
        out[plan.name] = plan
    return out


def effective_plans(
    workspace_plans: list[TrackingPlanConfig], data_dir: Path
) -> tuple[list[TrackingPlanConfig], set[str]]:
    """The workspace's plans with the API's replacing those of the same name; and the names
    that came from the API."""
    stored = stored_plans(data_dir)
    for name in stored:
        if any(p.name == name for p in workspace_plans):
            logger.warning(
                "tracking plan %r: using the version written through the API (%s), not the "
                "workspace file's",
                name,
                data_dir / PLANS_DIR / f"{name}.json",
            )
    plans = [stored.get(p.name, p) for p in workspace_plans]
    plans += [p for name, p in stored.items() if all(w.name != name for w in workspace_plans)]
    return plans, set(stored)


class ProcessorAdmin:
    def __init__(
        self,
        data_dir: Path,
        sources: set[str],
        destinations: dict[str, list[FilterConfig]],
        transformations: list[TransformationConfig],
        pipeline: IngestPipeline,
        log: EventLog,
        from_api: set[str],
    ) -> None:
        self.data_dir = data_dir
        self.sources = sources
        self.destinations = destinations
        self.transformations = transformations
        self.pipeline = pipeline
        self.log = log
        self.from_api = from_api

    # ------------------------------------------------------------------ plans

    def plans(self) -> list[dict[str, Any]]:
        return [self._summary(p) for p in self.pipeline.plans.values()]

    def plan(self, name: str) -> dict[str, Any]:
        plan = self.pipeline.plans.get(name)
        if plan is None:
            raise AdminError("not_found", self._no_plan(name), 404)
        return {**self._summary(plan), "plan": plan.model_dump(mode="json", by_alias=True)}

    def put_plan(self, name: str, body: Any) -> dict[str, Any]:
        """Validate, keep and apply a plan (created or replaced)."""
        if not isinstance(body, dict):
            raise AdminError("invalid_plan", "send the plan as a JSON object")
        body = {**body, "name": body.get("name", name)}
        if body["name"] != name:
            raise AdminError(
                "invalid_plan", f"the body names plan {body['name']!r}, the path {name!r}"
            )
        try:
            plan = TrackingPlanConfig.model_validate(body)
        except ValidationError as exc:
            raise AdminError("invalid_plan", _faults(exc)) from None
        plans = [p for p in self.pipeline.plans.values() if p.name != name] + [plan]
        try:
            check_tracking_plans(plans, self.sources)
        except ValueError as exc:
            raise AdminError("invalid_plan", str(exc)) from None
        directory = self.data_dir / PLANS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(plan.model_dump(mode="json", by_alias=True)))
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
        self.pipeline.configure(plans)
        self.from_api.add(name)
        return self.plan(name)

    def _summary(self, plan: TrackingPlanConfig) -> dict[str, Any]:
        return {
            "name": plan.name,
            "sources": plan.sources,
            "rules": len(plan.rules),
            "enforcement": plan.enforcement.model_dump(mode="json"),
            "origin": "api" if plan.name in self.from_api else "workspace",
        }

    def _no_plan(self, name: str) -> str:
        names = ", ".join(self.pipeline.plans) or "none"
        return f"no tracking plan is named {name!r}; the plans are: {names}"

    # ------------------------------------------------------------------ violations

    async def violations(self, source: str, since_ms: int) -> dict[str, Any]:
        summary = await self.pipeline.store.violations(source, since_ms)
        plan = self.pipeline.plan_of(source)
        blocked = await self.pipeline.store.run(lambda db: db.blocked_counts())
        return {
            "source": source,
            "plan": plan.name if plan else None,
            "total": summary.total,
            "blockedKept": blocked.get(source, 0),
            "events": [asdict(e) for e in summary.events],
        }

    async def resend_blocked(
        self, source: str, since_ms: int, until_ms: int | None
    ) -> dict[str, Any]:
        """Re-check the source's blocked events with today's plan; store those that pass.

        A re-sent event keeps its messageId and its ``receivedAt``; the log files it under
        the time of the re-send, so its retention and delivery start now. A blocked copy is
        deleted only once the event is in the log under this source: if the log already
        holds its messageId under another source, the copy stays (``alreadyInLog``)."""
        resent = still_blocked = refused = elsewhere = 0
        after_ms, after_id = since_ms, -1
        while True:
            batch = await self.pipeline.store.blocked(
                source, after_ms, until_ms, RESEND_BATCH, after_id
            )
            if not batch:
                break
            after_ms, after_id = batch[-1].received_ms, batch[-1].id
            records: list[Record] = []
            main: list[tuple[int, int, str]] = []  # (index in records, blocked id, messageId)
            now = time.time_ns() // 1_000_000
            for blocked in batch:
                event = blocked.event()
                result = self.pipeline.recheck(source, event)
                if result is not None and result.event is None:
                    still_blocked += 1
                    continue
                stored = event if result is None else result.event
                assert stored is not None
                try:
                    own = [to_record(stored, source, now)]
                    if result is not None:
                        own += [to_record(e, s, now) for s, e in result.extra]
                except (ItemError, TypeError, ValueError):
                    refused += 1
                    continue
                main.append((len(records), blocked.id, blocked.message_id))
                records += own
            done: list[int] = []
            if records:  # durable in the log before the blocked copies go
                results = await self.log.append(records)
                for index, blocked_id, message_id in main:
                    if results[index].duplicate:
                        held = await self.log.get(message_id)
                        if held is not None and held.source != source:
                            elsewhere += 1
                            continue
                    done.append(blocked_id)
            if done:
                await self.pipeline.store.delete_blocked(done)
            resent += len(done)
            if len(batch) < RESEND_BATCH:
                break
        return {
            "source": source,
            "resent": resent,
            "stillBlocked": still_blocked,
            "refused": refused,
            "alreadyInLog": elsewhere,
            "note": "alreadyInLog counts events whose messageId the log holds under another "
            "source (it deduplicates by messageId for 24 h): their blocked copies are kept; "
            "re-send them after that, or with a new messageId from the sender",
        }

    # ------------------------------------------------------------------ filters

    def preview(self, destination: str, body: Any) -> dict[str, Any]:
        """What the destination's filters (or ``filters`` given in the body) and its
        transformations would do to ``event``."""
        if destination not in self.destinations:
            names = ", ".join(self.destinations) or "none"
            raise AdminError(
                "not_found",
                f"no destination is named {destination!r}; the destinations are: {names}",
                404,
            )
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            raise AdminError(
                "invalid_preview", 'send {"event": {...}} and optionally "filters": [...]'
            )
        filters = self.destinations[destination]
        if "filters" in body:
            try:
                filters = _FILTERS.validate_python(body["filters"])
            except ValidationError as exc:
                raise AdminError("invalid_filters", _faults(exc, "filters")) from None
        return preview(destination, filters, self.transformations, body["event"])


def preview(
    destination: str,
    filters: list[FilterConfig],
    transformations: list[TransformationConfig],
    event: dict[str, Any],
) -> dict[str, Any]:
    """One event through a destination's filters, then its transformations."""
    steps = []
    for i, config in enumerate(filters):
        single = DestinationFilters([config]).apply(event)
        matched = config.enabled and config.condition(event)
        steps.append(
            {
                "index": i,
                "name": config.name,
                "if": config.if_,
                "enabled": config.enabled,
                "matched": matched,
                "alone": _word(single),
            }
        )
    stage = DestinationStage(destination, filters, transformations)
    outcome = stage.apply(orjson.dumps(event), event)
    if isinstance(outcome, FilteredOut):
        result: dict[str, Any] = {"decision": "dropped", "reason": outcome.reason}
    elif isinstance(outcome, Shaped):
        result = {"decision": "modified", "changes": list(outcome.changes),
                  "event": orjson.loads(outcome.payload)}  # fmt: skip
    else:
        result = {"decision": "unchanged", "event": event}
    return {"destination": destination, "filters": steps, **result}


def _word(result: object) -> str:
    if isinstance(result, Dropped):
        return "drop"
    return "modify" if isinstance(result, Modified) else "keep"


def _faults(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(
        f"{field_path((prefix, *e['loc']) if prefix else e['loc']) or '(top level)'}: "
        f"{e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )
