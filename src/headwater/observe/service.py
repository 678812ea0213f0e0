""" "Where did my event go?" — the one object the API, the console and the CLI ask.

It owns the debugger and the ingest flow counts (fed by the gateway through the
:class:`IngestRecorder`), and reads the log, the delivery ledger and the delivery engine's
workers to answer: the debugger, Event Delivery per destination, the Delivery Overview per
source, the trace of one messageId, and diagnose. It never sits on the delivery path.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from headwater.config.workspace import DestinationConfig, SourceConfig, Workspace
from headwater.delivery.store import StoreDB
from headwater.delivery.view import DeliveryView
from headwater.delivery.worker import PAUSED
from headwater.destinations import TYPES
from headwater.gateway.normalize import iso_ms
from headwater.gateway.stats import IngestStats, Rejection, redact_key, vars_of
from headwater.log.base import AppendResult, EventLog, Record, StoredRecord
from headwater.observe.debugger import Debugger
from headwater.observe.delivery_report import DeliveryReport, delivery_report
from headwater.observe.diagnose import (
    DestinationEvidence,
    Evidence,
    Finding,
    RefusalGroup,
    SourceEvidence,
    diagnose,
)
from headwater.observe.findings import SEVERITY_ORDER
from headwater.observe.flow import Flow
from headwater.processor.fanout import FilteredOut, Shaped
from headwater.state.audit import AuditEntry, AuditLog

OBSERVE_DIR = "observe"
UNKNOWN_KEYS = "key:*"  # the flow counts' one scope for every unknown write key
WINDOWS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SAMPLE_IDS = 5


class ObserveError(Exception):
    """A question that cannot be answered as asked; ``status`` is the HTTP status to use."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def duration_secs(text: str) -> int:
    """``30m``, ``1h``, ``1d``, ``1w`` → seconds."""
    match = re.fullmatch(r"(\d{1,6})([smhdw])", text.strip())
    if not match:
        raise ObserveError(
            "invalid_window", f"window {text!r} is not a duration; write e.g. 15m, 1h, 1d or 7d"
        )
    return int(match.group(1)) * WINDOWS[match.group(2)]


def parse_window(text: str, max_secs: float) -> int:
    """A window's length in seconds: more than none, at most ``max_secs`` (the log's
    retention)."""
    secs = duration_secs(text)
    if secs == 0:
        raise ObserveError(
            "invalid_window", f"window {text!r} is not a duration; write e.g. 15m, 1h, 1d or 7d"
        )
    if secs > max_secs:
        raise ObserveError(
            "invalid_window",
            f"window {text} reaches past what Headwater keeps ({max_secs / 86400:g} days, "
            "log.retention_max_age_secs); choose a shorter one",
        )
    return secs


class IngestRecorder:
    """What the gateway reports, handed to the debugger and the flow counts."""

    def __init__(self, debugger: Debugger, flow: Flow) -> None:
        self.debugger = debugger
        self.flow = flow

    def accepted(
        self,
        source: str,
        records: Sequence[Record],
        results: Sequence[AppendResult],
        duplicates: int,
    ) -> None:
        """On the ingest hot path: a deque extend and a counter increment."""
        self.debugger.accepted(source, records, results, duplicates)
        self.flow.add(source, "received", len(results) - duplicates)
        if duplicates:
            self.flow.add(source, "duplicate", duplicates)

    def refused(self, rejection: Rejection) -> None:
        self.debugger.refused(rejection)
        scope = rejection.scope
        if scope.startswith("key:"):  # every unknown key in one row a minute; the prefixes
            scope = UNKNOWN_KEYS  # are in IngestStats' samples (random keys must not grow it)
        self.flow.add(scope, f"rejected:{rejection.code}")


@dataclass(frozen=True, slots=True)
class Window:
    since_ms: int
    until_ms: int
    label: str


DISABLED_REASONS = ("the destination is disabled", PAUSED)
PAST = {"disable": "disabled", "enable": "enabled", "delete": "deleted", "create": "created",
        "update": "changed", "rotate-write-key": "given a new write key"}  # fmt: skip


def cite(entry: AuditEntry) -> str:
    """An audit entry in words: what, when, by whom and from where."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.at_ms / 1000))
    actor = entry.actor
    if actor == "workspace":
        who = "an edit of the workspace file, at a start"
    elif actor.startswith("local:"):
        who = f"{actor.removeprefix('local:')} on the server's machine"
    elif actor == "admin":
        who = "the admin token"
    else:
        who = f"token {actor}"
    return f"{PAST.get(entry.action, entry.action)} at {when} by {who} ({entry.origin})"


class Observer:
    def __init__(self, workspace: Workspace, data_dir: Path, stats: IngestStats) -> None:
        self.workspace = workspace
        self.stats = stats
        self.debugger = Debugger()
        self.flow = Flow(
            data_dir / OBSERVE_DIR,
            decisions_keep_secs=workspace.log.retention_max_age_secs,
            state=workspace.state,
        )
        self.recorder = IngestRecorder(self.debugger, self.flow)
        self.log: EventLog | None = None
        self.delivery: DeliveryView | None = None
        self.stages: list[Callable[[StoredRecord], Awaitable[list[dict[str, Any]]]]] = []
        """Later stages (the processor) add what they decided about an event to its trace."""
        self.unstored: list[Callable[[str], Awaitable[dict[str, Any] | None]]] = []
        """Where to look for an event the log does not have (blocked by a plan)."""
        self.findings: list[Callable[[int], Awaitable[list[Finding]]]] = []
        """More of diagnose's findings since a time, from parts that keep their own evidence
        (the warehouses' syncs, identity resolution per space)."""
        self.audit: AuditLog | None = None
        """The audit trail, cited when a trace or a finding names a change (app.py sets it)."""

    async def last_change(self, resource: str, actions: Sequence[str]) -> str | None:
        """Who last made one of ``actions`` to ``resource``, in words for a trace or a
        finding ("disabled at 2026-12-08 14:02:11 UTC by token ci-deploy (api)"); None when
        the trail holds none (or cannot be read: a citation never fails a diagnosis)."""
        if self.audit is None:
            return None
        audit = self.audit
        try:
            entries = await asyncio.to_thread(audit.entries, resource, None, 20)
        except Exception:
            return None
        for entry in entries.entries:
            if entry.resource == resource and entry.action in actions:
                return cite(entry)
        return None

    async def start(self, log: EventLog, delivery: DeliveryView) -> None:
        self.log, self.delivery = log, delivery
        await self.flow.open()

    async def stop(self) -> None:
        await self.flow.close()

    def window(self, text: str, now_ms: int | None = None) -> Window:
        secs = parse_window(text, self.workspace.log.retention_max_age_secs)
        until = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return Window(until - secs * 1000, until, text)

    # ------------------------------------------------------------------ sources

    def source_names(self) -> list[str]:
        return [s.name for s in self.workspace.sources]

    def require_source(self, name: str) -> SourceConfig:
        """The source named so, or a 404 naming the sources there are."""
        source = self.workspace.source(name)
        if source is None:
            raise ObserveError(
                "not_found",
                f"no source is named {name!r}; the sources are: "
                f"{', '.join(self.source_names()) or 'none'}",
                404,
            )
        return source

    def require_destination(self, name: str) -> DestinationConfig:
        """The destination named so, or a 404 naming the destinations there are."""
        config = self.workspace.destination(name)
        if config is None:
            names = ", ".join(d.name for d in self.workspace.destinations) or "none"
            raise ObserveError(
                "not_found", f"no destination is named {name!r}; the destinations are: {names}",
                404,
            )  # fmt: skip
        return config

    async def overview(self, source: str, window: Window) -> dict[str, Any]:
        """Segment's Delivery Overview: received → failed on ingest → filtered at source →
        per destination: filtered → failed → delivered."""
        self.require_source(source)
        flow = await self.flow.totals(window.since_ms, window.until_ms, source)
        rejected = {k.removeprefix("rejected:"): n for k, n in flow.items()
                    if k.startswith("rejected:")}  # fmt: skip
        blocked = {k.removeprefix("blocked:"): n for k, n in flow.items()
                   if k.startswith("blocked:")}  # fmt: skip
        destinations = []
        for dest in self.workspace.destinations:
            if source not in dest.sources:
                continue
            report = await self._report(dest.name, window)
            counts = report.counts
            destinations.append(
                {
                    "destination": dest.name,
                    "type": dest.type,
                    "sharedWith": [s for s in dest.sources if s != source],
                    "filtered": counts["filtered"],
                    "failed": counts["discarded"] + counts["dead_lettered"],
                    "retrying": report.retrying_now,
                    "delivered": counts["delivered"],
                }
            )
        return {
            "source": source,
            "window": _window_doc(window),
            "received": flow["received"],
            "duplicates": flow["duplicate"],
            "failedOnIngest": sum(rejected.values()),
            "failedOnIngestByReason": rejected,
            "filteredAtSource": sum(blocked.values()),
            "filteredAtSourceByReason": blocked,
            "unknownWriteKeyRequests": await self._unattributed(window),
            "destinations": destinations,
            "note": "destination counts cover every source of a destination; a destination "
            "shared with other sources (sharedWith) counts their events too",
        }

    async def _unattributed(self, window: Window) -> int:
        by_source = await self.flow.by_source(window.since_ms, window.until_ms)
        return sum(
            n
            for scope, counts in by_source.items()
            if scope == "unknown" or scope.startswith("key:")
            for step, n in counts.items()
            if step.startswith("rejected:")
        )

    # ------------------------------------------------------------------ destinations

    async def _report(self, destination: str, window: Window) -> DeliveryReport:
        engine = self._engine()
        return await engine.store.run(
            lambda db: delivery_report(db, destination, window.since_ms, window.until_ms)
        )

    async def delivery_report(self, destination: str, window: Window) -> dict[str, Any]:
        """Event Delivery, with each error's sample: the event as Headwater received it."""
        self.require_destination(destination)
        report = await self._report(destination, window)
        doc = report.as_dict()
        for group in doc["errors"]:
            offset = group["sample"]["offset"]
            record = await self._record_at(offset) if offset is not None else None
            group["sample"]["messageId"] = record.message_id if record else None
            group["sample"]["event"] = orjson.loads(record.payload) if record else None
        engine = self._engine()
        await engine.refresh()
        worker = engine.workers.get(destination)
        doc["breaker"] = worker.breaker.state.value if worker else "stopped"
        doc["window"]["label"] = window.label
        return doc

    async def _record_at(self, offset: int) -> StoredRecord | None:
        assert self.log is not None
        records = await self.log.read(offset - 1, 1)
        return records[0] if records and records[0].offset == offset else None

    # ------------------------------------------------------------------ trace

    async def trace(self, message_id: str) -> dict[str, Any]:
        engine = self._engine()
        found = await engine.states(message_id)
        if found is None:
            for look in self.unstored:
                doc = await look(message_id)
                if doc is not None:
                    return doc
            raise ObserveError("not_found", self._not_found(message_id), 404)
        record, states = found
        event = orjson.loads(record.payload)
        stages: list[dict[str, Any]] = [
            {
                "stage": "received",
                "atMs": record.received_at_ms,
                "decision": "stored",
                "detail": f"accepted from source {record.source} and stored at log offset "
                f"{record.offset}",
            }
        ]
        stages.extend(await self.flow.decisions(record.message_id))
        for stage in self.stages:
            stages.extend(await stage(record))
        destinations = [
            {**s.as_dict(), "filters": self._shaping(s.destination, record.payload, event)}
            for s in states
        ]
        for doc in destinations:
            if doc["reason"] in DISABLED_REASONS:
                doc["change"] = await self.last_change(f"destinations/{doc['destination']}",
                                                       ("disable", "create", "delete"))  # fmt: skip
        destinations += await self._held(record, {s.destination for s in states})
        return {
            "messageId": record.message_id,
            "offset": record.offset,
            "source": record.source,
            "type": record.type,
            "receivedAt": iso_ms(record.received_at_ms),
            "event": event,
            "stages": stages,
            "destinations": destinations,
        }

    async def _held(self, record: StoredRecord, shown: set[str]) -> list[dict[str, Any]]:
        """Destinations of the event's source disabled through a change: they run no
        worker, so the ledger says nothing of the event; say why it is not sent."""
        held = getattr(self._engine(), "held", ())
        out = []
        for name in sorted(set(held) - shown):
            config = self.workspace.destination(name)
            if config is None or record.source not in config.sources:
                continue
            change = await self.last_change(f"destinations/{name}", ("disable", "create"))
            out.append({
                "destination": name, "state": "held", "terminal": False, "attempts": 0,
                "atMs": None, "status": None, "nextAttemptMs": None, "deadLetterId": None,
                "history": [], "filters": None, "change": change,
                "reason": "the destination is disabled: nothing is sent to it; what it had not "
                "delivered before is kept (sent when it is enabled again, or purged), what "
                "is accepted while it is disabled never goes",
            })  # fmt: skip
        return out

    def _shaping(
        self, destination: str, payload: bytes, event: dict[str, Any]
    ) -> dict[str, Any] | None:
        """What the destination's filters and transformations make of the event, by today's
        configuration (None when it has neither)."""
        worker = self._engine().workers.get(destination)
        if worker is None or not worker.stage:
            return None
        try:
            outcome = worker.stage.apply(payload, event, count=False)
        except Exception as exc:  # the worker records such a fault as filtered, too
            return {"decision": "failed", "detail": str(exc)}
        if isinstance(outcome, FilteredOut):
            return {"decision": "dropped", "detail": outcome.reason}
        if isinstance(outcome, Shaped):
            return {
                "decision": "modified",
                "detail": "; ".join(outcome.changes),
                "changes": list(outcome.changes),
                "event": orjson.loads(outcome.payload),
            }
        return {"decision": "unchanged", "detail": "no filter or transformation changed it"}

    def _not_found(self, message_id: str) -> str:
        assert self.log is not None
        oldest = self.log.stats().oldest_received_at_ms
        since = (
            f"the oldest event retained was received at {iso_ms(oldest)}"
            if oldest is not None
            else "the log is empty"
        )
        days = self.workspace.log.retention_max_age_secs / 86400
        refused = [r for r in self._rejections() if r.message_id == message_id]
        if refused:
            r = refused[-1]
            return (
                f"the event with messageId {message_id!r} was refused at {r.at}: {r.code} — "
                f"{r.message}"
            )
        return (
            f"no event with messageId {message_id!r} in the log; it keeps events for "
            f"{days:g} days (log.retention_max_age_secs) and {since}. Check the messageId, "
            "or whether the request was rejected (the source's debugger shows refusals)."
        )

    def _rejections(self) -> list[Rejection]:
        return [r for (scope, code) in self.stats.rejected for r in self.stats.latest(scope, code)]

    # ------------------------------------------------------------------ diagnose

    async def diagnose(
        self, window: Window, source: str | None = None, destination: str | None = None
    ) -> dict[str, Any]:
        if source is not None:
            self.require_source(source)
        if destination is not None:
            self.require_destination(destination)
        evidence = await self._evidence(window, source, destination)
        findings = diagnose(evidence)
        if destination is None:
            for more in self.findings:
                findings.extend(await more(window.since_ms))
            findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], -f.events))
        if source is not None:
            findings = [
                f
                for f in findings
                if f.source in (source, None)
                and (f.destination is None or _serves(self.workspace, f.destination, source))
            ]
        if destination is not None:
            findings = [f for f in findings if f.destination in (destination, None)
                        and f.source is None]  # fmt: skip
        return {
            "window": _window_doc(window),
            "source": source,
            "destination": destination,
            "healthy": not any(f.severity != "info" for f in findings),
            "findings": [f.as_dict() for f in findings],
        }

    async def _evidence(
        self, window: Window, source: str | None, destination: str | None
    ) -> Evidence:
        by_source = await self.flow.by_source(window.since_ms, window.until_ms)
        sources = [
            SourceEvidence(s.name, s.enabled, by_source.get(s.name, Counter()),
                           self._last_received(s.name))
            for s in self.workspace.sources
        ]  # fmt: skip
        refusals = self._refusal_groups(window, by_source)
        destinations = [
            await self._destination_evidence(d.name, window)
            for d in self.workspace.destinations
            if destination is None or d.name == destination
        ]
        keys = {s.name: redact_key(s.write_key) for s in self.workspace.sources if s.write_key}
        return Evidence(window.since_ms, window.until_ms, sources, destinations, refusals, keys)

    def _last_received(self, source: str) -> int | None:
        return self.debugger.last_received_ms(source)

    def _refusal_groups(
        self, window: Window, by_source: dict[str, Counter[str]]
    ) -> list[RefusalGroup]:
        groups = []
        for scope, counts in by_source.items():
            for step, count in counts.items():
                if not step.startswith("rejected:") or not count:
                    continue
                code = step.removeprefix("rejected:")
                label, latest = scope, self.stats.latest(scope, code)
                if scope == UNKNOWN_KEYS:  # the keys' prefixes, from the samples
                    latest = sorted(
                        (r for sc, cd in list(self.stats.rejected)
                         if sc.startswith("key:") and cd == code
                         for r in self.stats.latest(sc, cd)),
                        key=lambda r: r.at,
                    )  # fmt: skip
                    prefixes = sorted({r.scope.removeprefix("key:") for r in latest})
                    shown = ", ".join(prefixes[:5]) + (" and others" if len(prefixes) > 5 else "")
                    label = f"key:{shown or '(unknown keys)'}"
                samples = [vars_of(r) for r in latest[-MAX_SAMPLE_IDS:]][::-1]
                message = latest[-1].message if latest else code
                groups.append(RefusalGroup(label, code, count, message, samples))
        return groups

    async def _destination_evidence(self, name: str, window: Window) -> DestinationEvidence:
        config = self.require_destination(name)
        engine = self._engine()
        report = await self._report(name, window)
        await engine.refresh()
        worker = engine.workers.get(name)
        samples: dict[tuple[str, int | None, str], list[str]] = {}
        for group in report.error_groups():
            key = (group.state.value, group.status, group.reason)
            offsets = await engine.store.run(
                lambda db, key=key: _failing_offsets(db, name, key, window)  # type: ignore[misc]
            )
            ids = []
            for offset in offsets:
                record = await self._record_at(offset)
                if record is not None:
                    ids.append(record.message_id)
            samples[key] = ids
        last = self.log.stats().last_offset if self.log is not None else None
        queued = max(0, (last or 0) - worker.live.committed) if worker else 0
        changed = 0
        if worker is not None:
            changed = worker.stage.transformed + sum(f["modified"] for f in worker.stage.stats())
        kind = TYPES.get(config.type)
        cited = None
        if not config.enabled:
            cited = await self.last_change(f"destinations/{name}", ("disable", "create"))
        return DestinationEvidence(
            name, config.type, config.enabled, list(config.sources), report,
            worker.breaker.state.value if worker else "stopped", queued, samples, changed,
            kind.vendor if kind else "", kind.key_settings if kind else (), cited,
        )  # fmt: skip

    def _engine(self) -> DeliveryView:
        if self.delivery is None:
            raise ObserveError("starting", "Headwater is starting; try again", 503)
        return self.delivery


def _failing_offsets(
    db: StoreDB, destination: str, key: tuple[str, int | None, str], window: Window
) -> list[int]:
    state, status, reason = key
    same = "IS" if db.conn.dialect == "sqlite" else "IS NOT DISTINCT FROM"  # SQLite < 3.39
    rows = db.conn.execute(
        "SELECT first_offset FROM ledger WHERE destination=? AND state=? AND"
        f" status {same} ? AND COALESCE(reason, '')=? AND at_ms>=?"
        " AND at_ms<? ORDER BY at_ms DESC LIMIT ?",
        (destination, state, status, reason, window.since_ms, window.until_ms, MAX_SAMPLE_IDS),
    )
    return [r[0] for r in rows]


def _serves(workspace: Workspace, destination: str, source: str) -> bool:
    config = workspace.destination(destination)
    return config is not None and source in config.sources


def _window_doc(window: Window) -> dict[str, Any]:
    return {"label": window.label, "sinceMs": window.since_ms, "untilMs": window.until_ms,
            "since": iso_ms(window.since_ms), "until": iso_ms(window.until_ms)}  # fmt: skip


__all__ = [
    "Finding",
    "IngestRecorder",
    "ObserveError",
    "Observer",
    "Window",
    "duration_secs",
    "parse_window",
]
