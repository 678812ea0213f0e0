"""Destinations that send mapped payloads: actions (trigger + mapping) -> requests.

A subclass of :class:`MappedDestination` gives its presets (``presets``, or
``presets_for(settings)`` when they depend on the settings), its settings model, and how a
group of payloads of one action kind becomes a request (:meth:`encode_group`, or
:meth:`plan` for anything else). This class does the rest for each batch:

1. every event is matched against the enabled actions' triggers and built by each matching
   action's mapping;
2. an event that an action cannot build (a required field came out missing) is not sent:
   it gets its own ``Discard`` in ``Attempt.per_event`` with the reason (``missing required
   field user_id (mapped from $.userId) for action log_event``); an event no enabled
   action's trigger matches is not sent either and gets a ``Filtered`` (the destination
   does not subscribe to it: Segment shows such events as filtered, not failed);
3. the payloads are grouped by action kind, in the order of the batch, and sent, one
   request per group by default (so a batch of 100 tracks is one request);
4. each event takes the outcome of the requests that carried it (the worst of them if it
   went in several: a retry over a discard over a delivery); the attempt's outcome is that
   of the largest request, and ``per_event`` names the events whose outcome differs.

A batch with nothing to send sends nothing and ends in ``Discard`` (``Filtered`` when no
event of it matched any trigger).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import orjson

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpFailure, HttpRequest, HttpResponse, exchange
from headwater.delivery.outcomes import (
    Attempt,
    Delivered,
    Discard,
    Exchange,
    Filtered,
    Outcome,
    Retry,
)
from headwater.destinations.base import Context, HttpDestination, S
from headwater.mapping.actions import Action, ActionConfig, ActionSpec, Unbuildable, compile_actions

logger = logging.getLogger(__name__)

Refused = dict[int, Discard | Filtered]
"""Events not sent, by offset: refused (a required field missing, a local check) or filtered
(no action's trigger matches)."""


class Mapped(NamedTuple):
    """One event as one action made it: the payload to send. (A named tuple: one is made
    per event and action, and a tuple is made in half the time of a frozen dataclass.)"""

    action: Action
    payload: Any
    event: OutboundEvent

    @property
    def kind(self) -> str:
        return self.action.kind


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request and the events whose fate its answer decides.

    ``mapped`` (optional) are the payloads the request carries, in the order of the request's
    array: vendors whose answers name records by index (Amplitude, Mixpanel) read the events
    from it, and a request too large can be cut from it (:meth:`MappedDestination.smaller`).
    """

    request: HttpRequest
    events: tuple[OutboundEvent, ...]
    mapped: tuple[Mapped, ...] = ()


def json_body(value: Any) -> bytes:
    """JSON bytes of a payload; integers beyond 64 bits (valid JSON) still encode."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def runs_within(
    items: Sequence[Mapped], max_items: int, max_bytes: int, envelope_bytes: int
) -> Iterator[list[Mapped]]:
    """The items in runs of at most ``max_items`` whose payloads, as a JSON array inside an
    envelope of ``envelope_bytes``, fit in ``max_bytes`` (an item larger than that still
    goes, alone: the vendor's answer then refuses it)."""
    run: list[Mapped] = []
    size = envelope_bytes
    for item in items:
        n = len(json_body(item.payload)) + 1
        if run and (len(run) >= max_items or size + n > max_bytes):
            yield run
            run, size = [], envelope_bytes
        run.append(item)
        size += n
    if run:
        yield run


ByType = tuple[dict[str, tuple[tuple[Action, bool], ...]], tuple[tuple[Action, bool], ...]]


def _by_type(actions: Sequence[Action]) -> ByType:
    """For each event type some trigger names, the actions that may match it, in their
    order, each with whether its trigger must still be evaluated; and the actions for any
    other type. A trigger that only names types (``type = "track"``) is decided here."""
    types = {t for a in actions if a.for_types for t in a.for_types}
    by_type = {
        t: tuple(
            (a, a.for_types is None) for a in actions if a.for_types is None or t in a.for_types
        )
        for t in types
    }
    others = tuple((a, True) for a in actions if a.for_types is None)
    return by_type, others


def finish_each(
    mapped: list[Mapped],
    refused: Refused,
    kind: str,
    finish: Callable[[dict[str, Any]], Any],
    vendor: str,
) -> list[Mapped]:
    """Each object payload of action ``kind`` through ``finish``, which gives the payload to
    send, or a string that says why the vendor would refuse it; such an event joins
    ``refused`` and none of its payloads is sent (never half-sent)."""
    finished: list[Mapped] = []
    for item in mapped:
        if item.kind != kind or not isinstance(item.payload, dict):
            finished.append(item)
            continue
        payload = finish(item.payload)
        if isinstance(payload, str):
            reason = f"{payload} (action {item.action.name}): not sent to {vendor}"
            refused.setdefault(item.event.offset, Discard(reason))
        else:
            finished.append(Mapped(item.action, payload, item.event))
    return [m for m in finished if m.event.offset not in refused]


_SEVERITY = {Filtered: -1, Delivered: 0, Discard: 1, Retry: 2}


def _worse(a: Outcome | None, b: Outcome) -> Outcome:
    return b if a is None or _SEVERITY[type(b)] > _SEVERITY[type(a)] else a


def summary(event: dict[str, Any]) -> str:
    """``type=track, event=Signed Up`` for reasons."""
    parts = [f"type={event.get('type')}"]
    if "event" in event:
        parts.append(f"event={event.get('event')}")
    return ", ".join(parts)


class MappedDestination(HttpDestination[S]):
    """A destination whose payloads are built by actions (docs/mapping.md)."""

    presets: ClassVar[tuple[ActionSpec, ...]] = ()
    """The actions this type ships; the workspace may change them (``actions:``)."""

    def __init__(self, name: str, settings: S, context: Context) -> None:
        super().__init__(name, settings, context)
        self.actions = self.compile_actions(settings, context.actions, f"destination {name}")
        self._by_type = _by_type(self.actions)

    @classmethod
    def presets_for(cls, settings: S) -> tuple[ActionSpec, ...]:
        """The presets for these settings (default: ``presets``)."""
        return cls.presets

    @classmethod
    def compile_actions(
        cls, settings: S, configs: Sequence[ActionConfig] | None, where: str
    ) -> tuple[Action, ...]:
        """The enabled actions; MappingError naming the place (the workspace calls this when
        it loads, with ``where`` = ``destinations[i]``)."""
        return compile_actions(cls.presets_for(settings), configs, where)

    # -- what a subclass writes

    def encode_group(self, kind: str, items: Sequence[Mapped]) -> HttpRequest:
        """One request carrying the payloads of ``items``, all of action kind ``kind``."""
        raise NotImplementedError(f"{type(self).__name__} must define encode_group or plan")

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        """The requests for a batch's payloads: by default one per action kind, in order of
        first appearance. Override for vendors that need several calls per payload."""
        groups: dict[str, list[Mapped]] = {}
        for item in mapped:
            groups.setdefault(item.kind, []).append(item)
        return [
            Outgoing(self.encode_group(kind, items), unique_events(i.event for i in items))
            for kind, items in groups.items()
        ]

    def classify_outgoing(
        self, out: Outgoing, result: HttpResponse | HttpFailure
    ) -> tuple[Outcome, dict[int, Outcome]]:
        """The outcome of one request, and those of its events (by offset) that differ from
        it: a vendor that refuses some records of a request and takes, or wants resent, the
        others. Default: :meth:`classify`, the same for every event."""
        return self.classify(result), {}

    def smaller(self, out: Outgoing, result: HttpResponse | HttpFailure) -> list[Outgoing]:
        """Requests to send instead of ``out`` when its answer says it was too large (a
        413), each carrying fewer events; empty: the answer stands. Default: empty."""
        return []

    # -- the machinery

    def map_events(self, events: Sequence[OutboundEvent]) -> tuple[list[Mapped], Refused]:
        """The payloads to send, and the events that are not sent with why."""
        mapped: list[Mapped] = []
        refused: Refused = {}
        by_type, others = self._by_type
        for event in events:
            body = event.event
            matched = False
            kind = body.get("type") if type(body) is dict else None
            for action, check in by_type.get(kind, others) if type(kind) is str else others:
                try:  # free unless it raises: the loop stays inline, it runs per event
                    if check and not action.matches(body):
                        continue
                    result = action.build(body)
                except Exception as exc:  # a bug in the kit must not stop the destination
                    logger.exception("action %s of %s failed on an event", action.name, self.name)
                    result = Unbuildable(f"action {action.name} failed on this event: {exc!r}")
                matched = True
                if type(result) is Unbuildable:
                    refused.setdefault(event.offset, Discard(result.reason))
                else:
                    mapped.append(Mapped(action, result, event))
            if not matched:
                refused[event.offset] = Filtered(
                    f"no action's trigger matches ({summary(body)}): not sent; to send such"
                    f" events, add an action to destination {self.name} (docs/mapping.md)"
                )
        return mapped, refused

    def encode(self, events: Sequence[OutboundEvent]) -> HttpRequest:
        """The one request for ``events`` (for previews); ValueError if there is not one."""
        mapped, refused = self.map_events(events)
        outgoing = self.plan(mapped) if mapped else []
        if len(outgoing) != 1:
            reasons = "; ".join(d.reason for d in refused.values())
            raise ValueError(f"these events make {len(outgoing)} requests, not 1. {reasons}")
        return outgoing[0].request

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        mapped, refused = self.map_events(events)
        if not mapped:
            return _nothing_to_send(events, refused)
        queue = self.plan(mapped)
        results: list[Sent] = []
        started = time.perf_counter()
        while queue:
            out = queue.pop(0)
            result = await self.context.http.send(out.request, self.context.timeout_secs)
            parts = self.smaller(out, result) if len(out.events) > 1 else []
            if parts:  # each part carries fewer events: this ends
                queue[0:0] = parts
                continue
            outcome, differing = self.classify_outgoing(out, result)
            results.append(Sent(out, result, outcome, differing))
        duration_ms = (time.perf_counter() - started) * 1000
        return _combine(events, refused, results, duration_ms)


@dataclass(frozen=True, slots=True)
class Sent:
    """A request sent, its answer, its outcome and its events' outcomes that differ."""

    out: Outgoing
    result: HttpResponse | HttpFailure
    outcome: Outcome
    differing: dict[int, Outcome]


def unique_events(events: Iterable[OutboundEvent]) -> tuple[OutboundEvent, ...]:
    """The events, each once (by offset), in order."""
    seen: dict[int, OutboundEvent] = {}
    for e in events:
        seen.setdefault(e.offset, e)
    return tuple(seen.values())


def _nothing_to_send(events: Sequence[OutboundEvent], refused: Refused) -> Attempt:
    reasons = {d.reason for d in refused.values()}
    if len(reasons) == 1:
        [reason] = reasons
    else:
        reason = f"none of the {len(events)} events could be mapped; each has its reason"
    record: dict[str, object] = {"note": "nothing was sent: no event of the batch could be mapped"}
    unsubscribed = all(isinstance(o, Filtered) for o in refused.values())
    overall: Outcome = Filtered(reason) if unsubscribed else Discard(reason)
    return Attempt(overall, Exchange(record, {}), 0.0, dict(refused))


def _combine(
    events: Sequence[OutboundEvent],
    refused: Refused,
    results: list[Sent],
    duration_ms: float,
) -> Attempt:
    per_event: dict[int, Outcome] = dict(refused)
    for sent in results:
        for event in sent.out.events:
            own = sent.differing.get(event.offset, sent.outcome)
            per_event[event.offset] = _worse(per_event.get(event.offset), own)
    largest = max(results, key=lambda r: len(r.out.events))  # the first of the largest
    overall = largest.outcome
    differing = {o: v for o, v in per_event.items() if v != overall}
    failed = (r for r in results if r.differing or not isinstance(r.outcome, Delivered))
    shown = next(failed, results[0])
    request, result = shown.out.request, shown.result
    return Attempt(overall, lambda: exchange(request, result), duration_ms, differing)
