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
from collections.abc import Iterable, Sequence
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
    """A request and the events whose fate its answer decides."""

    request: HttpRequest
    events: tuple[OutboundEvent, ...]


def json_body(value: Any) -> bytes:
    """JSON bytes of a payload; integers beyond 64 bits (valid JSON) still encode."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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

    # -- the machinery

    def map_events(
        self, events: Sequence[OutboundEvent]
    ) -> tuple[list[Mapped], dict[int, Discard | Filtered]]:
        """The payloads to send, and the events that are not sent with why."""
        mapped: list[Mapped] = []
        refused: dict[int, Discard | Filtered] = {}
        actions = self.actions
        for event in events:
            body = event.event
            matched = False
            for action in actions:
                try:  # free unless it raises: the loop stays inline, it runs per event
                    if not action.matches(body):
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
        outgoing = self.plan(mapped)
        results: list[tuple[Outgoing, HttpResponse | HttpFailure, Outcome]] = []
        started = time.perf_counter()
        for out in outgoing:
            result = await self.context.http.send(out.request, self.context.timeout_secs)
            results.append((out, result, self.classify(result)))
        duration_ms = (time.perf_counter() - started) * 1000
        return _combine(events, refused, results, duration_ms)


def unique_events(events: Iterable[OutboundEvent]) -> tuple[OutboundEvent, ...]:
    """The events, each once (by offset), in order."""
    seen: dict[int, OutboundEvent] = {}
    for e in events:
        seen.setdefault(e.offset, e)
    return tuple(seen.values())


def _nothing_to_send(
    events: Sequence[OutboundEvent], refused: dict[int, Discard | Filtered]
) -> Attempt:
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
    refused: dict[int, Discard | Filtered],
    results: list[tuple[Outgoing, HttpResponse | HttpFailure, Outcome]],
    duration_ms: float,
) -> Attempt:
    per_event: dict[int, Outcome] = dict(refused)
    for out, _result, outcome in results:
        for event in out.events:
            per_event[event.offset] = _worse(per_event.get(event.offset), outcome)
    largest = max(results, key=lambda r: len(r[0].events))  # the first of the largest
    overall = largest[2]
    differing = {o: v for o, v in per_event.items() if v != overall}
    shown = next((r for r in results if not isinstance(r[2], Delivered)), results[0])
    request, result = shown[0].request, shown[1]
    return Attempt(overall, lambda: exchange(request, result), duration_ms, differing)
