"""Partial batches: which outcome each event of an attempt ends in.

A destination answers for a whole batch (:attr:`Attempt.outcome`) and may name events whose
outcome differs (:attr:`Attempt.per_event`, by log offset): a vendor that refused two events
of a hundred, a mapping that could not build one. The worker records each group of events
that share an outcome on its own — its own ledger row, retry row or dead letters — in the
one transaction of the attempt (:mod:`headwater.delivery.worker`).

The circuit breaker hears one outcome per attempt (:func:`heard`): an attempt in which any
event was delivered is an answer — the destination is up — whatever happened to the rest.
Events a destination filtered (:class:`~headwater.delivery.outcomes.Filtered`: no action
takes them) were never offered to it, so the breaker hears nothing of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import (
    Attempt,
    Delivered,
    Discard,
    EventState,
    Filtered,
    Outcome,
    Retry,
)
from headwater.delivery.store import LedgerEntry

logger = logging.getLogger(__name__)

Group = tuple[Outcome, list[OutboundEvent]]


def outcome_groups(
    events: Sequence[OutboundEvent], attempt: Attempt, destination: str = ""
) -> list[Group]:
    """The events of the batch grouped by their own outcome, each group in batch order and
    the groups in the order of their first event. Offsets in ``per_event`` that are not in
    the batch are a destination's mistake: logged and ignored."""
    per_event = attempt.per_event
    if per_event:
        unknown = set(per_event).difference(e.offset for e in events)
        if unknown:
            logger.warning(
                "destination %s named %d events not in the batch (offsets %s); ignored",
                destination,
                len(unknown),
                sorted(unknown)[:5],
            )
    groups: dict[Outcome, list[OutboundEvent]] = {}
    for event in events:
        outcome = per_event.get(event.offset, attempt.outcome) if per_event else attempt.outcome
        if not isinstance(outcome, Delivered | Retry | Discard | Filtered):
            logger.warning(
                "destination %s gave %r for the event at offset %d, not an outcome; retried",
                destination,
                outcome,
                event.offset,
            )
            outcome = Retry(f"internal error in the destination: {outcome!r} is not an outcome")
        groups.setdefault(outcome, []).append(event)
    return list(groups.items())


def heard(groups: Sequence[Group], attempt: Attempt) -> Outcome:
    """The one outcome the circuit breaker hears of an attempt.

    Any delivered event: the destination is up (Delivered). Else any retried event: a
    failure (the Retry asking for the longest wait, so a ``Retry-After`` is honoured). Else
    every event was discarded: an answer, as a whole-batch Discard is. Filtered events are
    not heard; when every event was filtered, the Filtered comes back (nothing was heard).
    """
    if not groups:
        return attempt.outcome
    outcomes = [outcome for outcome, _ in groups if not isinstance(outcome, Filtered)]
    if not outcomes:
        return groups[0][0]
    delivered = [o for o in outcomes if isinstance(o, Delivered)]
    if delivered:
        return delivered[0]
    retries = [o for o in outcomes if isinstance(o, Retry)]
    if retries:
        return max(retries, key=lambda r: r.after_secs or 0.0)
    return outcomes[0]


def filtered_entry(
    destination: str, events: Sequence[OutboundEvent], outcome: Filtered, at_ms: int
) -> LedgerEntry:
    """The ledger row of events the destination filtered: terminal, no attempt, no status."""
    return LedgerEntry(destination, EventState.FILTERED, [e.offset for e in events], at_ms, 0,
                       None, outcome.reason)  # fmt: skip
