"""The processor's part of ingestion: each source's tracking plan, then its transformations.

The gateway calls :meth:`IngestPipeline.hook` for a source and runs the hook on each
normalised event before it is stored (see :mod:`headwater.gateway.hooks` and
docs/decisions.md for why this runs at ingest). A source without a plan or a transformation
gets no hook at all, so it pays nothing.

For each event the hook answers what to store, or that the plan blocks it, plus the events
to forward (blocked events and ``Violation Generated`` events go to the source named by the
plan's enforcement) and the decisions taken, which :meth:`IngestPipeline.keep` hands to the
protocols store (blocked events, durably, before the request is acknowledged; violation
counts and samples), the flow counts and the per-event trace.

Plans can be replaced while the server runs (``PUT /api/v1/tracking-plans/{name}``):
:meth:`IngestPipeline.configure` builds the new hooks and swaps them in one assignment.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from headwater.gateway.hooks import Blocked, Processed, SourceHook
from headwater.processor.protocols.enforcer import PlanEnforcer, PlanVerdict
from headwater.processor.protocols.plans import TrackingPlanConfig
from headwater.processor.protocols_store import NOT_KEPT, NewBlocked, ProtocolsStore
from headwater.processor.transforms import Changed, TransformationConfig, Transformer

logger = logging.getLogger("headwater.processor")

Count = Callable[[str, str, int], None]
"""``count(source, step, n)``: the ingest flow counts (observe)."""
Decided = Callable[[str, str, int, list[dict[str, Any]]], None]
"""``decided(message_id, source, at_ms, decisions)``: kept for the event's trace."""


@dataclass(frozen=True, slots=True)
class _SourceHook:
    source: str
    enforcer: PlanEnforcer | None
    transformer: Transformer
    store: ProtocolsStore

    def __call__(self, event: dict[str, Any]) -> Processed:
        return self.check(event)

    def check(self, event: dict[str, Any], record: bool = True) -> Processed:
        """Decide one event; ``record`` counts its violations (not when re-checking an event
        counted when it arrived)."""
        decisions: list[dict[str, Any]] = []
        extra: list[tuple[str, dict[str, Any]]] = []
        if self.enforcer is not None:
            verdict = self.enforcer.apply(event, self.source)
            if record and (verdict.violations or verdict.unplanned or verdict.unplanned_event):
                self.store.record(self.source, verdict)  # counts and samples, in memory
            if verdict.violation_events and verdict.violations_to:
                extra += [(verdict.violations_to, _normalised(v, event))
                          for v in verdict.violation_events]  # fmt: skip
            decision = _plan_decision(verdict)
            if decision is not None:
                decisions.append(decision)
            if verdict.blocked is not None:
                if verdict.forward_to is not None:
                    extra.append((verdict.forward_to, _forwarded_copy(event)))
                detail = _block_detail(verdict)
                return Processed(None, verdict.blocked, detail, extra, decisions, verdict)
            event = verdict.event
        if self.transformer:
            result = self.transformer.apply(event)
            if isinstance(result, Changed):
                event = result.event
                decisions += [
                    {"stage": "transformation", "decision": "transformed", "detail": change}
                    for change in result.changes
                ]
        return Processed(event, None, None, extra, decisions)


def _plan_decision(verdict: PlanVerdict) -> dict[str, Any] | None:
    if verdict.passed and not verdict.violations and not verdict.unplanned:
        return None
    what = "blocked" if verdict.blocked else "omitted" if (
        verdict.omitted or verdict.omitted_on_violation) else "allowed"  # fmt: skip
    return {
        "stage": "tracking plan",
        "plan": verdict.plan,
        "decision": what,
        "detail": _block_detail(verdict) if verdict.blocked else _summary(verdict),
        "violations": [
            {
                "type": v.type,
                "field": v.field,
                "expected": v.expected,
                "got": v.got,
                "description": v.description,
            }
            for v in verdict.violations
        ],
        "unplanned": list(verdict.unplanned),
        "omitted": list(verdict.omitted),
        "omittedOnViolation": list(verdict.omitted_on_violation),
    }


def _summary(verdict: PlanVerdict) -> str:
    parts = []
    if verdict.violations:
        parts.append(
            f"{len(verdict.violations)} violation(s) of plan {verdict.plan} allowed: "
            + "; ".join(f"{v.field}: {v.description}" for v in verdict.violations[:5])
        )
    if verdict.omitted:
        parts.append(f"unplanned {', '.join(verdict.omitted)} omitted")
    elif verdict.unplanned:
        parts.append(f"unplanned {', '.join(verdict.unplanned)} allowed")
    if verdict.omitted_on_violation:
        parts.append(f"invalid {', '.join(verdict.omitted_on_violation)} omitted")
    return "; ".join(parts)


def _block_detail(verdict: PlanVerdict) -> str:
    if verdict.blocked == "unplanned_event":
        return (
            f"{verdict.event_type} {verdict.event_name!r} is not in tracking plan "
            f"{verdict.plan!r}, which blocks unplanned events"
        )
    faults = "; ".join(f"{v.field}: {v.description}" for v in verdict.violations[:5])
    return f"violates tracking plan {verdict.plan!r}, which blocks violations: {faults}"


def _forwarded_copy(event: dict[str, Any]) -> dict[str, Any]:
    """A blocked event as forwarded to another source: under a messageId of its own, derived
    from the original (so a retried request forwards it once), which it names in
    ``context.protocols.blocked_message_id``. With the same messageId the log — which
    deduplicates across sources — would refuse the original when it is re-sent."""
    original = event.get("messageId")
    seed = str(original).encode()
    forwarded_id = "blk-" + hashlib.blake2b(seed, digest_size=16).hexdigest()
    context = event.get("context")
    context = dict(context) if isinstance(context, dict) else {}
    protocols = context.get("protocols")
    protocols = dict(protocols) if isinstance(protocols, dict) else {}
    protocols["blocked_message_id"] = original
    context["protocols"] = protocols
    return {**event, "messageId": forwarded_id, "context": context}


def _normalised(forwarded: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """A forwarded ``Violation Generated`` event with the times of the event it is about."""
    received = original.get("receivedAt")
    return {**forwarded, "receivedAt": received, "timestamp": received,
            "originalTimestamp": received}  # fmt: skip


class IngestPipeline:
    """The gateway's :class:`~headwater.gateway.hooks.IngestProcessor`."""

    def __init__(
        self,
        plans: Sequence[TrackingPlanConfig],
        transformations: Sequence[TransformationConfig],
        store: ProtocolsStore,
        count: Count,
        decided: Decided,
    ) -> None:
        self.store = store
        self._count = count
        self._decided = decided
        self._transformations = list(transformations)
        self._hooks: dict[str, SourceHook] = {}
        self.plans: dict[str, TrackingPlanConfig] = {}
        self.configure(plans)

    def reconfigure(
        self, plans: Sequence[TrackingPlanConfig], transformations: Sequence[TransformationConfig]
    ) -> None:
        """Plans and source transformations changed through the API (hooks swapped at once)."""
        self._transformations = list(transformations)
        self.configure(plans)

    def configure(self, plans: Sequence[TrackingPlanConfig]) -> None:
        """Use these plans from now on (each compiled once, here)."""
        enforcers = {p.name: PlanEnforcer(p) for p in plans}
        by_source = {s: enforcers[p.name] for p in plans for s in p.sources}
        sources = set(by_source) | {t.source for t in self._transformations if t.source}
        hooks: dict[str, SourceHook] = {}
        for source in sources:
            transformer = Transformer.for_source(self._transformations, source)
            enforcer = by_source.get(source)
            if enforcer is not None or transformer:
                hooks[source] = _SourceHook(source, enforcer, transformer, self.store)
        self.plans = {p.name: p for p in plans}
        self._hooks = hooks

    def plan_of(self, source: str) -> TrackingPlanConfig | None:
        return next((p for p in self.plans.values() if source in p.sources), None)

    def hook(self, source: str) -> SourceHook | None:
        return self._hooks.get(source)

    def recheck(self, source: str, event: dict[str, Any]) -> Processed | None:
        """Decide a blocked event again with today's plan, without counting its violations a
        second time; None when nothing applies to the source any more."""
        hook = self._hooks.get(source)
        return hook.check(event, record=False) if isinstance(hook, _SourceHook) else None

    async def keep(
        self, blocked: Sequence[Blocked], decided: Sequence[tuple[str, Processed]]
    ) -> None:
        for source, processed in decided:
            event = processed.event or {}
            self._account(source, processed.decisions)
            message_id = event.get("messageId")
            if isinstance(message_id, str):
                at = time.time_ns() // 1_000_000
                self._decided(message_id, source, at, processed.decisions)
        for item in blocked:
            self._count(item.source, f"blocked:{item.reason}", 1)
            self._account(item.source, item.decisions)
        keep = [NewBlocked.of(b.source, b.opaque, b.received_ms)
                for b in blocked if isinstance(b.opaque, PlanVerdict)]  # fmt: skip
        if keep:
            ids = await self.store.put_blocked(keep)
            for kept, row_id in zip(keep, ids, strict=True):
                if row_id == NOT_KEPT:  # the store's byte budget is spent
                    self._count(kept.source, "blocked_not_kept", 1)
                    logger.warning(
                        "source %s: blocked event %s not kept: the protocols store is full "
                        "(re-send or let 30 days pass to make room)", kept.source, kept.message_id,
                    )  # fmt: skip

    def _account(self, source: str, decisions: list[dict[str, Any]]) -> None:
        for decision in decisions:
            if decision["stage"] == "tracking plan":
                if decision["violations"]:
                    self._count(source, "violations", len(decision["violations"]))
            elif decision["stage"] == "transformation":
                self._count(source, "transformed", 1)
