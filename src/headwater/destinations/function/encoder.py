"""What a function's answer means for each event, in the delivery engine's outcomes.

Segment's rules: ``EventNotSupported``, ``InvalidEventPayload`` and ``ValidationError`` are
discarded with their message; ``RetryError`` and timeouts are retried (so is a worker that
died or hung); any other exception is discarded as a failure, with its traceback. An
insert function's handler without a handler for the type blocks the event (filtered).
"""

from __future__ import annotations

from typing import Any

from headwater.delivery.outcomes import Delivered, Discard, Filtered, Outcome, Retry

DISCARDED = frozenset({"EventNotSupported", "InvalidEventPayload", "ValidationError"})
RETRIED = frozenset({"RetryError", "Timeout", "WorkerLost"})
TRACEBACK_CHARS = 1500


def outcome_of(result: dict[str, Any]) -> Outcome:
    state = result.get("s")
    if state == "ok":
        return Delivered()
    message = str(result.get("m") or "")
    if state == "skip":
        return Filtered(message)
    kind = str(result.get("k") or "Exception")
    if kind in RETRIED:
        return Retry(f"{kind}: {message}")
    if kind in DISCARDED:
        return Discard(f"{kind}: {message}")
    trace = result.get("tb")
    detail = f"\n{str(trace)[-TRACEBACK_CHARS:]}" if trace else ""
    return Discard(f"the function failed: {message}{detail}")
