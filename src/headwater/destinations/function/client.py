"""The ``function`` destination: each batch goes to the function's pool in one round trip
(``on_batch`` when the function has it, else its per-event handlers), and each event gets
its own outcome (:attr:`Attempt.per_event`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import Attempt, Exchange, Outcome, Retry
from headwater.destinations.base import Destination
from headwater.destinations.function.encoder import outcome_of
from headwater.destinations.function.settings import FunctionSettings
from headwater.functions.pool import CallResult, FunctionPool

LOG_LINES_KEPT = 50


class FunctionDestination(Destination[FunctionSettings]):
    type = "function"
    settings_model = FunctionSettings
    vendor = "destination function"
    default_batch_events = 20  # Segment's onBatch default
    max_batch_events = 400

    pool: FunctionPool | None = None  # given by the engine once the function's workers run

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        if self.pool is None:
            reason = f"destination function {self.settings.function!r} is not running"
            return Attempt(Retry(reason), Exchange(), 0.0)
        result = await self.pool.call_events([e.event for e in events])
        outcomes = [outcome_of(r) for r in _aligned(result, len(events))]
        return attempt_of(self.settings.function, events, outcomes, result)


def _aligned(result: CallResult, n: int) -> list[dict[str, Any]]:
    results = result.results
    if len(results) != n:  # a runtime fault; every event is tried again
        return [{"s": "err", "k": "WorkerLost", "m": "the worker answered for "
                 f"{len(results)} events of {n}"}] * n  # fmt: skip
    return results


def attempt_of(
    function: str, events: Sequence[OutboundEvent], outcomes: list[Outcome], result: CallResult
) -> Attempt:
    """The attempt: the most common outcome for the batch, the others per event; the call's
    results and log lines as the exchange (Segment shows logs with failed payloads)."""
    if not outcomes:
        return Attempt(Retry("no events"), Exchange(), result.ms)
    main = Counter(outcomes).most_common(1)[0][0]
    per_event = {e.offset: o for e, o in zip(events, outcomes, strict=True) if o != main}

    def exchange() -> Exchange:
        return Exchange(
            {"function": function, "events": len(events)},
            {
                "results": result.results[:20],
                "logs": "".join(result.logs).splitlines()[-LOG_LINES_KEPT:],
            },
        )

    return Attempt(main, exchange, result.ms, per_event)
