"""What a delivery attempt can end in, and the states an event goes through per destination.

A destination never decides *how* to retry, only *whether*: it turns each attempt into one
of its outcomes (delivered, retry, discard; filtered for events it does not take at all).
Backoff, the retry window, the circuit breaker and the dead letter store are the delivery
engine's business (:mod:`headwater.delivery.worker`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Delivered:
    """The destination took the events."""

    status: int | None = None  # HTTP status, None for destinations without HTTP
    note: str | None = None  # what happened on the way, for the ledger (an insert function)


@dataclass(frozen=True, slots=True)
class Retry:
    """A failure worth trying again: timeout, connection error, 408, 429, 5xx."""

    reason: str
    status: int | None = None
    after_secs: float | None = None  # the destination's Retry-After, honoured as a minimum


@dataclass(frozen=True, slots=True)
class Discard:
    """A failure that will not get better by trying again (400, 401, 403, 404, 413, 422, ...)."""

    reason: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Filtered:
    """Not sent on purpose, and not a failure: nothing the destination subscribes to (no
    action's trigger matches the event). Recorded as filtered with the reason, never retried,
    as Segment shows unsubscribed events. Only meaningful in :attr:`Attempt.per_event` or
    for a batch of which nothing was sent."""

    reason: str


Outcome = Delivered | Retry | Discard | Filtered


@dataclass(frozen=True, slots=True)
class Exchange:
    """What went over the wire in one attempt, kept for failures and samples of successes.

    Bodies are truncated and secrets (``Authorization`` and the like) redacted before they
    get here, so an Exchange can be stored and shown as it is.
    """

    request: dict[str, object] = field(default_factory=dict)
    response: dict[str, object] = field(default_factory=dict)


class Attempt:
    """One attempt to deliver a batch: its outcome, what was exchanged and how long it took.

    ``exchange`` may be given as a function: most attempts succeed and are not sampled, so
    building the redacted, truncated copy of what went over the wire waits until asked.

    ``per_event`` names the events of the batch whose outcome differs from ``outcome``, by
    their log offset: a vendor that refuses two events of a hundred (Amplitude's
    ``events_with_invalid_fields``, Mixpanel's ``failed_records``), or a mapping that cannot
    build an event the vendor requires a field of. Events not named take ``outcome``.
    """

    __slots__ = ("_exchange", "_make", "duration_ms", "outcome", "per_event")

    def __init__(
        self,
        outcome: Outcome,
        exchange: Exchange | Callable[[], Exchange],
        duration_ms: float,
        per_event: Mapping[int, Outcome] | None = None,
    ) -> None:
        self.outcome = outcome
        self.duration_ms = duration_ms
        self.per_event: Mapping[int, Outcome] = per_event or {}
        self._exchange = exchange if isinstance(exchange, Exchange) else None
        self._make = None if isinstance(exchange, Exchange) else exchange

    @property
    def exchange(self) -> Exchange:
        if self._exchange is None:
            assert self._make is not None  # one of the two is always set
            self._exchange = self._make()
        return self._exchange

    def __repr__(self) -> str:
        return f"Attempt({self.outcome!r}, duration_ms={self.duration_ms:.1f})"


class EventState(enum.Enum):
    """Where an event stands with one destination. Terminal states never change again
    (except that a dead-lettered event can be re-driven, which delivers it anew)."""

    QUEUED = "queued"  # routed, waiting in the destination's queue
    RETRYING = "retrying"  # failed, next attempt scheduled
    DELIVERED = "delivered"
    DISCARDED = "discarded"  # the destination refused it for good; its answer is kept
    DEAD_LETTERED = "dead_lettered"  # still failing when the retry window closed
    FILTERED = "filtered"  # not routed to this destination (integrations, filters)

    @property
    def terminal(self) -> bool:
        return self not in (EventState.QUEUED, EventState.RETRYING)
