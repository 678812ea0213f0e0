"""Event Delivery read from a real delivery store (SQLite in tmp_path): counts per outcome,
latency percentiles as bucket bounds, the chart's series, the error table with samples, and
what waits for a retry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.config.workspace import StateConfig
from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import EventState, Exchange
from headwater.delivery.store import LedgerEntry, PutDead, PutRetry, StoreDB
from headwater.observe.delivery_report import bucket_for, delivery_report

MIN = 60_000
HOUR = 3_600_000
SINCE = 1_800_000_000_000 - 1_800_000_000_000 % HOUR  # a window of one hour, on the hour
UNTIL = SINCE + HOUR


@pytest.fixture
def db(tmp_path: Path, state_backend: StateConfig | None) -> Iterator[StoreDB]:
    store = StoreDB.open(tmp_path, state_backend)  # SQLite and PostgreSQL
    yield store
    store.close()


def outbound(offsets: range | list[int]) -> list[OutboundEvent]:
    return [OutboundEvent(o, f"m{o}", SINCE, b'{"type":"track"}') for o in offsets]


def answer(status: int, body: str) -> Exchange:
    return Exchange({"method": "POST", "url": "https://hooks.example/in", "body": body},
                    {"status": status, "body": '{"error":"no"}'})  # fmt: skip


def test_counts_per_outcome_in_the_window_only(db: StoreDB) -> None:
    D, S = EventState.DELIVERED, EventState
    db.apply([
        LedgerEntry("hook", D, [1, 2, 3], SINCE + 1 * MIN, latencies_ms=[10, 10, 10]),
        LedgerEntry("hook", D, [4], SINCE + 2 * MIN, attempts=2, latencies_ms=[900]),
        LedgerEntry("hook", S.RETRYING, [5, 6], SINCE + 3 * MIN, status=503, reason="unavailable"),
        LedgerEntry("hook", S.RETRYING, [5, 6], SINCE + 4 * MIN, 2, 503, "unavailable"),
        LedgerEntry("hook", S.DISCARDED, [7], SINCE + 5 * MIN, status=400, reason="bad request"),
        LedgerEntry("hook", S.DEAD_LETTERED, [5, 6], SINCE + 6 * MIN, 3, 503, "window closed"),
        LedgerEntry("hook", S.FILTERED, [8, 9, 10], SINCE + 7 * MIN, 0, reason="integrations"),
        LedgerEntry("other", D, [1, 2, 3], SINCE + MIN, latencies_ms=[1, 1, 1]),
    ])  # fmt: skip
    # apart: plain successes written together are merged into one row
    db.apply([LedgerEntry("hook", D, [11], SINCE - 1, latencies_ms=[1])])  # before the window
    db.apply([LedgerEntry("hook", D, [12], UNTIL, latencies_ms=[1])])  # its end is open
    doc = delivery_report(db, "hook", SINCE, UNTIL).as_dict()
    assert doc["destination"] == "hook"
    assert doc["window"] == {"sinceMs": SINCE, "untilMs": UNTIL}
    assert doc["counts"] == {"delivered": 4, "retried": 4, "discarded": 1, "deadLettered": 2,
                             "filtered": 3}  # fmt: skip
    assert doc["filteredReasons"] == [{"reason": "integrations", "events": 3}]
    assert sum(doc["latencyMs"]["histogram"]) == 4  # delivered events in the window only
    assert doc["retryingNow"] == 0 and doc["retryDeadlineMs"] is None and doc["deadLetters"] == 0


def test_percentiles_are_the_upper_bounds_of_their_buckets(db: StoreDB) -> None:
    latencies = [3] * 50 + [5] * 10 + [6] * 25 + [20] * 10 + [4000] * 4 + [7_200_000]
    db.apply([LedgerEntry("hook", EventState.DELIVERED, list(range(1, 101)), SINCE + MIN,
                          latencies_ms=latencies, exchange=answer(200, "{}"))])  # fmt: skip
    doc = delivery_report(db, "hook", SINCE, UNTIL).as_dict()["latencyMs"]
    bounds = doc["bucketBoundsMs"]
    assert bounds[:3] == [5, 10, 25] and len(doc["histogram"]) == len(bounds) + 1
    # 60 events ≤ 5 ms (a bound belongs to its bucket), 25 ≤ 10, 10 ≤ 25, 4 ≤ 5 s, 1 above all
    assert doc["histogram"][:3] == [60, 25, 10] and doc["histogram"][bounds.index(5000)] == 4
    assert doc["histogram"][-1] == 1
    assert doc["p50"] == 5
    assert doc["p95"] == 25
    assert doc["p99"] == 5000


def test_no_deliveries_no_percentiles_and_the_top_bucket_has_no_bound(db: StoreDB) -> None:
    assert delivery_report(db, "hook", SINCE, UNTIL).as_dict()["latencyMs"]["p50"] is None
    db.apply([LedgerEntry("hook", EventState.DELIVERED, [1], SINCE, latencies_ms=[10**8])])
    assert delivery_report(db, "hook", SINCE, UNTIL).as_dict()["latencyMs"]["p50"] is None


def test_the_series_has_a_point_per_bucket(db: StoreDB) -> None:
    D, R, X = EventState.DELIVERED, EventState.RETRYING, EventState.DISCARDED
    db.apply([
        LedgerEntry("hook", D, [1, 2], SINCE + 30_000, latencies_ms=[1, 1]),
        LedgerEntry("hook", D, [3], SINCE + 59_999, latencies_ms=[1]),
        LedgerEntry("hook", R, [4], SINCE + 10 * MIN, status=500, reason="boom"),
        LedgerEntry("hook", X, [5, 6], SINCE + 10 * MIN + 1, status=404, reason="gone"),
        LedgerEntry("hook", EventState.DEAD_LETTERED, [7], UNTIL - 1, 2, 500, "boom"),
    ])  # fmt: skip
    series = delivery_report(db, "hook", SINCE, UNTIL).as_dict()["series"]
    assert len(series) == 60  # one-minute points over an hour
    assert [p["atMs"] for p in series[:2]] == [SINCE, SINCE + MIN]
    assert series[0] == {"atMs": SINCE, "delivered": 3, "failed": 0, "retried": 0}
    assert series[10] == {"atMs": SINCE + 10 * MIN, "delivered": 0, "failed": 2, "retried": 1}
    assert series[59] == {"atMs": SINCE + 59 * MIN, "delivered": 0, "failed": 1, "retried": 0}
    assert sum(p["delivered"] + p["failed"] + p["retried"] for p in series) == 7


@pytest.mark.parametrize(
    ("window_ms", "bucket_ms"),
    [(15 * MIN, MIN), (HOUR, MIN), (6 * HOUR, 5 * MIN), (24 * HOUR, HOUR),
     (7 * 24 * HOUR, 3 * HOUR), (31 * 24 * HOUR, 24 * HOUR)],
)  # fmt: skip
def test_chart_buckets_keep_about_sixty_points(window_ms: int, bucket_ms: int) -> None:
    assert bucket_for(window_ms) == bucket_ms
    assert window_ms / bucket_ms <= 72


def test_errors_are_grouped_with_the_newest_sample(db: StoreDB) -> None:
    X, R = EventState.DISCARDED, EventState.RETRYING
    db.apply([
        LedgerEntry("hook", X, [1], SINCE + 1 * MIN, status=401, reason="unauthorized",
                    exchange=answer(401, "first")),
        LedgerEntry("hook", R, [2, 3, 4], SINCE + 2 * MIN, status=503, reason="unavailable",
                    exchange=answer(503, "busy")),
        LedgerEntry("hook", X, [5, 6], SINCE + 3 * MIN, status=401, reason="unauthorized",
                    exchange=answer(401, "second")),
        # held while the breaker was open: no request, so no exchange to show
        LedgerEntry("hook", R, [7, 8], SINCE + 4 * MIN, 0, None, "breaker open"),
        LedgerEntry("hook", X, [9], SINCE + 5 * MIN, status=401, reason="unauthorized"),
    ])  # fmt: skip
    errors = delivery_report(db, "hook", SINCE, UNTIL).as_dict()["errors"]
    by_key = {(e["state"], e["status"], e["reason"]): e for e in errors}
    assert set(by_key) == {("discarded", 401, "unauthorized"), ("retrying", 503, "unavailable"),
                           ("retrying", None, "breaker open")}  # fmt: skip
    unauthorized = by_key[("discarded", 401, "unauthorized")]
    assert unauthorized["events"] == 4 and unauthorized["requests"] == 3
    assert unauthorized["firstAtMs"] == SINCE + MIN and unauthorized["lastAtMs"] == SINCE + 5 * MIN
    # the newest request that has an exchange, and the first event of that batch
    assert unauthorized["sample"]["offset"] == 5
    assert unauthorized["sample"]["exchange"]["request"]["body"] == "second"
    assert unauthorized["sample"]["exchange"]["response"]["status"] == 401
    assert by_key[("retrying", None, "breaker open")]["sample"] == {"offset": 7, "exchange": None}
    # the groups concerning most events come first
    assert [e["events"] for e in errors] == [4, 3, 2]


def test_what_waits_for_a_retry_and_in_the_dead_letter_store(db: StoreDB) -> None:
    db.apply([
        PutRetry("hook", outbound(range(1, 4)), 1, SINCE + HOUR, SINCE + 4 * HOUR, SINCE, "503"),
        PutRetry("hook", outbound([7, 8]), 2, SINCE + HOUR, SINCE + 2 * HOUR, SINCE, "503"),
        PutRetry("other", outbound([9]), 1, SINCE, SINCE + HOUR, SINCE, "503"),
        PutDead("hook", outbound([10, 11]), "window closed", SINCE, 5),
        PutDead("other", outbound([12]), "window closed", SINCE, 5),
    ])  # fmt: skip
    # the retry table and dead letters are "now", whatever the window
    doc = delivery_report(db, "hook", UNTIL + 10 * HOUR, UNTIL + 11 * HOUR).as_dict()
    assert doc["retryingNow"] == 5
    assert doc["retryDeadlineMs"] == SINCE + 2 * HOUR  # the first batch to give up
    assert doc["deadLetters"] == 2
    assert doc["counts"]["retried"] == 0  # no ledger row in that window
