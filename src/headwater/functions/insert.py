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
from headwater.delivery.outcomes import Attempt, Discard, Exchange, Filtered, Outcome
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
        current = list(events)
        ms = 0.0
        for pool in self.pools:
            if not current:
                break
            current, took = await self._run(pool, current, decided)
            ms += took
        if not current:
            first = decided[events[0].offset]
            return Attempt(first, Exchange({"insertFunctions": [p.spec.name for p in self.pools]}),
                           ms, decided)  # fmt: skip
        attempt = await self.inner.deliver(current)
        return Attempt(attempt.outcome, lambda: attempt.exchange, attempt.duration_ms + ms,
                       {**decided, **attempt.per_event})  # fmt: skip

    @staticmethod
    async def _run(
        pool: FunctionPool, events: list[OutboundEvent], decided: dict[int, Outcome]
    ) -> tuple[list[OutboundEvent], float]:
        name = pool.spec.name
        # the stored bytes go to the worker as they are: no parse and re-encode here
        result = await pool.call_events([orjson.Fragment(e.payload) for e in events])
        results = result.results
        if len(results) != len(events):
            results = [{"s": "err", "k": "WorkerLost", "m": "the worker's answer was short"}] * len(
                events
            )
        survivors: list[OutboundEvent] = []
        for event, r in zip(events, results, strict=True):
            if r.get("s") != "ok":
                outcome = outcome_of(r)
                if isinstance(outcome, Filtered):
                    outcome = Filtered(f"insert function {name}: {outcome.reason}")
                decided[event.offset] = outcome
                continue
            text = r.get("j")
            if isinstance(text, str):  # the returned event, as JSON (runtime._encoded)
                encoded = text.encode()
                if encoded == event.payload:
                    survivors.append(event)  # unchanged (the log's bytes are orjson's too)
                else:
                    pool.stats.changed += 1
                    survivors.append(OutboundEvent(event.offset, event.message_id,
                                                   event.received_at_ms, encoded))  # fmt: skip
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
        return survivors, result.ms
