"""Event Delivery for one destination over a window, read from the delivery ledger.

Segment shows delivered / not delivered, a P95 latency and an error table with samples.
Here, over any window the ledger still covers (as long as the log's retention):

- counts of events per outcome: delivered, retried (failed attempts that will be tried
  again), discarded, dead-lettered, filtered; and what waits for a retry right now;
- end-to-end latency (received by Headwater → accepted by the destination) p50/p95/p99,
  from the histograms the ledger keeps per row — each figure is the upper bound of its
  histogram bucket, so "≤ 25 ms" rather than a false precision;
- a time series for the chart (delivered and failed per bucket);
- the error table: failures grouped by outcome, HTTP status and reason, each with the
  newest sample of what was sent and answered, and the first log offset of that batch so
  the caller can show "the event as Headwater received it".

Everything here runs on a :class:`~headwater.delivery.store.StoreDB` connection (a thread
of the delivery store, or a CLI's own), never on the event loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from headwater.delivery.outcomes import EventState
from headwater.delivery.store import LATENCY_BOUNDS_MS, StoreDB

FAILED_STATES = (EventState.DISCARDED, EventState.DEAD_LETTERED)
MAX_ERROR_GROUPS = 50
MAX_FILTER_REASONS = 50


@dataclass
class ErrorGroup:
    """Failures that share an outcome, an HTTP status and a reason."""

    state: EventState
    status: int | None
    reason: str
    events: int = 0  # events affected (a batch of 100 that failed counts 100)
    attempts: int = 0  # ledger rows: failed requests
    first_at_ms: int = 0
    last_at_ms: int = 0
    sample_offset: int | None = None  # first event of the newest failing batch
    sample_exchange: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "status": self.status,
            "reason": self.reason,
            "events": self.events,
            "requests": self.attempts,
            "firstAtMs": self.first_at_ms,
            "lastAtMs": self.last_at_ms,
            "sample": {"offset": self.sample_offset, "exchange": self.sample_exchange},
        }


@dataclass
class DeliveryReport:
    destination: str
    since_ms: int
    until_ms: int
    bucket_ms: int
    counts: Counter[str] = field(default_factory=Counter)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    series: dict[int, Counter[str]] = field(default_factory=dict)
    errors: dict[tuple[str, int | None, str], ErrorGroup] = field(default_factory=dict)
    filtered: Counter[str] = field(default_factory=Counter)
    retrying_now: int = 0  # events in the retry table
    retry_deadline_ms: int | None = None  # when the oldest retrying batch gives up
    dead_letters: int = 0  # events in the dead-letter store, any age

    def percentile_ms(self, fraction: float) -> int | None:
        """The upper bound of the latency bucket holding this fraction of deliveries."""
        total = sum(self.latency)
        if not total:
            return None
        running = 0
        for i, count in enumerate(self.latency):
            running += count
            if running >= fraction * total:
                return LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else None
        return None

    def error_groups(self) -> list[ErrorGroup]:
        groups = sorted(self.errors.values(), key=lambda g: (-g.events, -g.last_at_ms))
        return groups[:MAX_ERROR_GROUPS]

    def as_dict(self) -> dict[str, Any]:
        buckets = range(self.since_ms - self.since_ms % self.bucket_ms, self.until_ms,
                        self.bucket_ms)  # fmt: skip
        return {
            "destination": self.destination,
            "window": {"sinceMs": self.since_ms, "untilMs": self.until_ms},
            "counts": {
                "delivered": self.counts["delivered"],
                "retried": self.counts["retrying"],
                "discarded": self.counts["discarded"],
                "deadLettered": self.counts["dead_lettered"],
                "filtered": self.counts["filtered"],
            },
            "retryingNow": self.retrying_now,
            "retryDeadlineMs": self.retry_deadline_ms,
            "deadLetters": self.dead_letters,
            "latencyMs": {
                "p50": self.percentile_ms(0.50),
                "p95": self.percentile_ms(0.95),
                "p99": self.percentile_ms(0.99),
                "bucketBoundsMs": list(LATENCY_BOUNDS_MS),
                "histogram": self.latency,
            },
            "series": [
                {
                    "atMs": at,
                    "delivered": self.series.get(at, Counter())["delivered"],
                    "failed": self.series.get(at, Counter())["failed"],
                    "retried": self.series.get(at, Counter())["retrying"],
                }
                for at in buckets
            ],
            "errors": [g.as_dict() for g in self.error_groups()],
            "filteredReasons": [
                {"reason": r, "events": n} for r, n in self.filtered.most_common(MAX_FILTER_REASONS)
            ],
        }


def bucket_for(window_ms: int) -> int:
    """Chart buckets: about 60 of them, on round boundaries."""
    for bucket in (60_000, 300_000, 900_000, 3_600_000, 10_800_000, 86_400_000):
        if window_ms / bucket <= 72:
            return bucket
    return 86_400_000


def delivery_report(
    db: StoreDB, destination: str, since_ms: int, until_ms: int, bucket_ms: int | None = None
) -> DeliveryReport:
    bucket = bucket_ms or bucket_for(until_ms - since_ms)
    report = DeliveryReport(destination, since_ms, until_ms, bucket)
    rows = db.conn.execute(
        "SELECT state, count, at_ms, status, reason, latency, exchange, first_offset"
        " FROM ledger WHERE destination=? AND at_ms>=? AND at_ms<? ORDER BY at_ms",
        (destination, since_ms, until_ms),
    )
    for state_value, count, at_ms, status, reason, latency, exchange, first_offset in rows:
        state = EventState(state_value)
        report.counts[state.value] += count
        point = report.series.setdefault(at_ms - at_ms % bucket, Counter())
        if state is EventState.DELIVERED:
            point["delivered"] += count
            if latency is not None:
                for i, n in enumerate(orjson.loads(latency)):
                    report.latency[i] += n
            continue
        if state is EventState.FILTERED:
            report.filtered[reason or "filtered"] += count
            continue
        point["failed" if state in FAILED_STATES else "retrying"] += count
        key = (state.value, status, reason or "")
        group = report.errors.get(key)
        if group is None:
            group = report.errors[key] = ErrorGroup(state, status, reason or "", first_at_ms=at_ms)
        group.events += count
        group.attempts += 1
        group.last_at_ms = at_ms
        if exchange is not None or group.sample_exchange is None:
            group.sample_offset = first_offset
            group.sample_exchange = orjson.loads(exchange) if exchange else None
    count, deadline = db.conn.execute(
        "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT), MIN(deadline_ms) FROM retries"
        " WHERE destination=?",
        (destination,),
    ).fetchone()
    report.retrying_now, report.retry_deadline_ms = count, deadline
    report.dead_letters = db.dead_letter_counts().get(destination, 0)
    return report
