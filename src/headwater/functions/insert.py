"""Insert functions: run in the destination's worker, on each batch, before the
destination's mapping and encoding.

:class:`InsertedDestination` stands in front of the destination the engine built: each
insert function (in workspace order) gets the batch in one round trip; what it returns
replaces the event, ``None`` drops it (recorded as filtered, naming the function), an error
discards or retries it by Segment's rules. The survivors go to the destination, and every
event's outcome comes back in :attr:`Attempt.per_event`, so retries, dead letters, the
ledger and the trace need nothing of their own. A retried event runs through the insert
function again (the stored event is the one before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import (
    Attempt,
    Delivered,
    Discard,
    Exchange,
    Filtered,
    Outcome,
    Retry,
)
from headwater.destinations.base import Destination
from headwater.destinations.function.encoder import outcome_of
from headwater.functions.pool import FunctionPool


class InsertedDestination:
    """``inner`` with insert functions before it; everything else is ``inner``'s."""

    def __init__(self, inner: Destination[Any], pools: Sequence[FunctionPool]) -> None:
        self.inner = inner
        self.pools = list(pools)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        decided: dict[int, Outcome] = {}
        notes: dict[int, tuple[str, ...]] = {}  # what the functions said they changed
        current = list(events)
        ms = 0.0
        for pool in self.pools:
            if not current:
                break
            current, took = await self._run(pool, current, decided, notes)
            ms += took
        if not current:
            first = decided[events[0].offset]
            return Attempt(first, Exchange({"insertFunctions": [p.spec.name for p in self.pools]}),
                           ms, decided)  # fmt: skip
        attempt = await self.inner.deliver(current)
        outcome, per_event = _noted(attempt.outcome, {**decided, **attempt.per_event}, notes,
                                    [e.offset for e in current])  # fmt: skip
        return Attempt(outcome, lambda: attempt.exchange, attempt.duration_ms + ms, per_event)

    @staticmethod
    async def _run(
        pool: FunctionPool, events: list[OutboundEvent], decided: dict[int, Outcome],
        notes: dict[int, tuple[str, ...]],
    ) -> tuple[list[OutboundEvent], float]:  # fmt: skip
        name = pool.spec.name
        # the stored bytes go to the worker as they are: no parse and re-encode here
        result = await pool.call_events([orjson.Fragment(e.payload) for e in events])
        results = result.results
        if len(results) != len(events):
            results = [{"s": "err", "k": "WorkerLost", "m": "the worker's answer was short"}] * len(
                events
            )
        said = [f"{name}: {', '.join(c) or 'reordered'}" for c in result.changes]
        returned = result.returned()
        survivors: list[OutboundEvent] = []
        for event, r in zip(events, results, strict=True):
            if type(r) is int:  # the compact answers (pool.CallResult): unchanged, or changed
                if r:
                    payload = next(returned)
                    survivors.append(OutboundEvent(event.offset, event.message_id,
                                                   event.received_at_ms, payload))  # fmt: skip
                    notes[event.offset] = (*notes.get(event.offset, ()), said[r - 1])
                else:
                    survivors.append(event)
                continue
            if r.get("s") != "ok":
                outcome = outcome_of(r)
                if isinstance(outcome, Filtered):
                    outcome = Filtered(f"insert function {name}: {outcome.reason}")
                decided[event.offset] = outcome
                continue
            value = r.get("v")
            if value is None:
                pool.stats.dropped += 1
                decided[event.offset] = Filtered(f"dropped by insert function {name} (it "
                                                 "returned None)")  # fmt: skip
            else:
                decided[event.offset] = Discard(f"insert function {name} returned "
                                                f"{type(value).__name__}; return the event (a "
                                                "dict) or None to drop it")  # fmt: skip
        pool.stats.changed += len(result.lens)
        return survivors, result.ms


def _noted(
    outcome: Outcome, per_event: dict[int, Outcome], notes: dict[int, tuple[str, ...]],
    sent: list[int],
) -> tuple[Outcome, dict[int, Outcome]]:  # fmt: skip
    """The attempt's outcomes with each event an insert function changed saying how (the
    ledger's reason, which the trace shows) — delivered, and also retried or discarded by
    the destination, where what the function did may be why. When the functions changed
    every sent event alike — the usual case — the batch's outcome says it once."""
    if not notes:
        return outcome, per_event
    kinds = set(notes.values())
    if (
        len(kinds) == 1
        and len(notes) == len(sent)
        and per_event.keys().isdisjoint(sent)
        and all(map(notes.__contains__, sent))
    ):
        return _with_note(outcome, _note(next(iter(kinds)))), per_event
    texts = {kind: _note(kind) for kind in kinds}
    for offset, kind in notes.items():
        found = per_event.get(offset, outcome)
        if not isinstance(found, Filtered):  # filtered: decided before the destination
            per_event[offset] = _with_note(found, texts[kind])
    return outcome, per_event


def _note(said: tuple[str, ...]) -> str:
    return "changed by insert function " + "; ".join(said)


def _with_note(outcome: Outcome, note: str) -> Outcome:
    if isinstance(outcome, Delivered):
        return Delivered(outcome.status, note)
    if isinstance(outcome, Retry):
        return Retry(f"{outcome.reason} (the event as {note})", outcome.status,
                     outcome.after_secs)  # fmt: skip
    if isinstance(outcome, Discard):
        return Discard(f"{outcome.reason} (the event as {note})", outcome.status)
    return outcome
