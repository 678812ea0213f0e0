"""Where an event stands with each destination: the delivery state, queryable by messageId.

Put together from the log (the event, its offset and source), today's routing, each
destination's cursor, and the delivery store (ledger, retry table, dead letters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headwater.delivery.outcomes import EventState
from headwater.delivery.store import LedgerRow, StoreDB


@dataclass(frozen=True, slots=True)
class DestinationState:
    """One event with one destination."""

    destination: str
    state: EventState | None  # None: the ledger no longer remembers it (past retention)
    attempts: int = 0
    at_ms: int | None = None  # when it reached this state
    status: int | None = None  # the destination's last HTTP status
    reason: str | None = None  # why filtered / discarded / dead-lettered, or the last error
    next_attempt_ms: int | None = None  # retrying: when
    dead_letter_id: int | None = None
    history: list[LedgerRow] = field(default_factory=list)  # every recorded outcome, oldest first

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "state": self.state.value if self.state else "unknown",
            "terminal": self.state.terminal if self.state else None,
            "attempts": self.attempts,
            "atMs": self.at_ms,
            "status": self.status,
            "reason": self.reason,
            "nextAttemptMs": self.next_attempt_ms,
            "deadLetterId": self.dead_letter_id,
            "history": [
                {
                    "state": row.state.value,
                    "atMs": row.at_ms,
                    "attempts": row.attempts,
                    "status": row.status,
                    "reason": row.reason,
                    "durationMs": row.duration_ms,
                    "exchange": row.exchange,
                }
                for row in self.history
            ],
        }


def state_of(
    db: StoreDB, destination: str, offset: int, message_id: str, cursor: int
) -> DestinationState:
    """The state of the event at ``offset`` with ``destination`` (which it is routed to)."""
    history = db.ledger_rows(destination, offset)
    retry = db.retry_holding(destination, offset)
    if retry is not None:
        last = history[-1] if history else None
        return DestinationState(
            destination, EventState.RETRYING, retry.attempts, last.at_ms if last else None,
            retry.last_status, retry.last_error, retry.next_attempt_ms, history=history,
        )  # fmt: skip
    if history:
        last = history[-1]
        dead = db.dead_letter_for(destination, message_id)
        return DestinationState(
            destination, last.state, last.attempts, last.at_ms, last.status, last.reason,
            dead_letter_id=dead.id if dead and last.state is EventState.DEAD_LETTERED else None,
            history=history,
        )  # fmt: skip
    if offset > cursor:
        return DestinationState(destination, EventState.QUEUED)
    return DestinationState(
        destination, None, reason="no record left: the delivery ledger keeps as long as the log"
    )
