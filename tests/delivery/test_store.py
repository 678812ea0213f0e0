"""The delivery store on its own: ledger, retries, cursors, dead letters, replay jobs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.config.workspace import StateConfig
from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import EventState, Exchange
from headwater.delivery.store import (
    DB_FILE,
    DeleteRetry,
    DeliveryStore,
    LedgerEntry,
    PutDead,
    PutRetry,
    ReplayProgress,
    SetCursor,
    StoreDB,
    now_ms,
)
from headwater.state.sql import PostgresConn


def ev(offset: int) -> OutboundEvent:
    return OutboundEvent(offset, f"m{offset}", 1000 + offset, b'{"n":%d}' % offset)


@pytest.fixture
def db(tmp_path: Path, state_backend: StateConfig | None) -> Iterator[StoreDB]:
    """The store on SQLite and on PostgreSQL: the same SQL must mean the same on both."""
    store = StoreDB.open(tmp_path, state_backend)
    yield store
    store.close()


def reopen(db: StoreDB) -> StoreDB:
    """A second connection to the same store (as the CLI opens beside the server)."""
    if isinstance(db.conn, PostgresConn):
        doc = {"backend": "postgres", "dsn": db.conn.dsn, "schema": db.conn.schema}
        return StoreDB.postgres(StateConfig.model_validate(doc))
    return StoreDB(db.path)


def test_ledger_finds_an_event_in_merged_and_wide_rows(db: StoreDB) -> None:
    at = now_ms()
    db.apply(
        [
            LedgerEntry("a", EventState.DELIVERED, [1, 2], at, 1, 200, latencies_ms=[5, 7]),
            LedgerEntry("a", EventState.DELIVERED, [900], at, 1, 200, latencies_ms=[9]),
            LedgerEntry(
                "a",
                EventState.RETRYING,
                [3],
                at,
                1,
                500,
                "HTTP 500",
                exchange=Exchange({"url": "u"}, {"status": 500}),
            ),
            LedgerEntry("b", EventState.DELIVERED, [2], at, 1, 200),
        ]
    )
    rows = db.conn.execute("SELECT destination, count FROM ledger ORDER BY id").fetchall()
    assert rows == [("a", 3), ("a", 1), ("b", 1)], "plain successes were not merged"
    for offset in (1, 2, 900):
        assert [r.state for r in db.ledger_rows("a", offset)] == [EventState.DELIVERED]
    [retry] = db.ledger_rows("a", 3)
    assert (retry.status, retry.reason, retry.exchange) == (
        500, "HTTP 500", {"request": {"url": "u"}, "response": {"status": 500}}
    )  # fmt: skip
    assert db.ledger_rows("a", 4) == [] and db.ledger_rows("a", 899) == []
    assert db.ledger_rows("nobody", 1) == []
    # A second connection (the CLI) finds them too.
    other = reopen(db)
    assert [r.state for r in other.ledger_rows("a", 900)] == [EventState.DELIVERED]
    other.close()


def test_retries_oldest_first_and_due(db: StoreDB) -> None:
    now = now_ms()
    db.apply([
        PutRetry("a", [ev(5), ev(6)], 1, now + 60_000, now + 3_600_000, now, "HTTP 500", 500),
        PutRetry("a", [ev(2)], 3, now - 1, now + 3_600_000, now, "timeout"),
        PutRetry("b", [ev(1)], 1, now - 1, now + 3_600_000, now, "x"),
    ])  # fmt: skip
    assert [b.events[0].offset for b in db.retries("a")] == [2, 5]
    [due] = db.retries("a", now)
    assert (due.attempts, due.last_error, due.events[0].payload) == (3, "timeout", b'{"n":2}')
    assert db.retry_summary("a") == (3, now - 1)
    db.make_retries_due("a", now)
    assert [b.events[0].offset for b in db.retries("a", now)] == [2, 5]
    assert db.retries("a", now)[0].next_attempt_ms == now - 1, "an earlier retry was delayed"
    holding = db.retry_holding("a", 6)
    assert holding is not None and [e.offset for e in holding.events] == [5, 6]
    assert db.retry_holding("a", 4) is None
    row = holding.row_id
    db.apply([PutRetry("a", holding.events, 2, now + 5, now + 10, now, "again", 503, row)])
    [updated] = [b for b in db.retries("a") if b.row_id == row]
    assert (updated.attempts, updated.last_status, updated.last_error) == (2, 503, "again")
    db.apply([DeleteRetry(row)])
    assert db.retry_holding("a", 6) is None and db.retry_summary("a")[0] == 1


def test_cursor_never_goes_back(db: StoreDB) -> None:
    db.apply([SetCursor("a", 10)])
    db.apply([SetCursor("a", 7), SetCursor("b", 3)])
    assert db.cursors() == {"a": 10, "b": 3}


def test_redrive_takes_only_todays_destinations_in_batches(db: StoreDB) -> None:
    at = now_ms()
    db.apply([
        PutDead("a", [ev(i) for i in range(1, 6)], "window closed", at, 4, 500, at - 10),
        PutDead("gone", [ev(1)], "window closed", at, 4, 500),
    ])  # fmt: skip
    assert db.dead_letter_counts() == {"a": 5, "gone": 1}
    letter = db.dead_letter_for("a", "m3")
    assert letter is not None and (letter.offset, letter.status, letter.attempts) == (3, 500, 4)
    moved = db.redrive({"a": 100.0}, {"a": 2})
    assert moved == {"a": 5}
    batches = db.retries("a")
    assert [[e.offset for e in b.events] for b in batches] == [[1, 2], [3, 4], [5]]
    assert all(b.attempts == 0 and b.next_attempt_ms <= now_ms() for b in batches)
    assert all(99_000 <= b.deadline_ms - b.next_attempt_ms <= 100_000 for b in batches)
    assert db.dead_letter_counts() == {"gone": 1}, "a destination no longer configured"


def test_replay_progress(db: StoreDB) -> None:
    rid = db.create_replay("a", 0, 100, 50, 10)
    job = db.replay(rid)
    assert job is not None and (job.state, job.position, job.end_offset) == ("pending", 10, 50)
    db.apply([ReplayProgress(rid, 30, 5, 1, 2, False)])
    db.apply([ReplayProgress(rid, 50, 3, 0, 1, True)])
    job = db.replay(rid)
    assert job is not None and (job.state, job.position, job.sent, job.filtered, job.skipped) == (
        "done", 50, 8, 1, 3
    )  # fmt: skip
    assert job.finished_ms is not None and db.replays(active_only=True) == []
    other = db.create_replay("a", 0, 100, 50)
    db.conn.execute("UPDATE replays SET state='cancelled' WHERE id=?", (other,))
    db.apply([ReplayProgress(other, 20, 1, 0, 0, False)])
    assert db.replay(other).state == "cancelled"  # type: ignore[union-attr]


def test_prune_drops_old_ledger_rows(db: StoreDB) -> None:
    db.apply([LedgerEntry("a", EventState.DELIVERED, [1], 1000, 1, 200),
              LedgerEntry("a", EventState.FILTERED, [2], now_ms(), 0, None, "why")])  # fmt: skip
    assert db.prune(now_ms() - 60_000) == 1
    assert db.ledger_rows("a", 1) == [] and len(db.ledger_rows("a", 2)) == 1


def test_a_store_of_another_schema_is_refused(tmp_path: Path) -> None:
    StoreDB(tmp_path / DB_FILE).close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema 99"):
        StoreDB(tmp_path / DB_FILE)


async def test_concurrent_writes_are_applied_in_order_in_groups(
    tmp_path: Path, state_backend: StateConfig | None
) -> None:
    store = DeliveryStore(tmp_path, state_backend)
    await store.open()
    try:
        await asyncio.gather(*(store.write([SetCursor("a", i)]) for i in range(1, 201)))
        await asyncio.gather(
            store.write([LedgerEntry("a", EventState.DELIVERED, [1], now_ms(), 1, 200)]),
            store.write([DeleteRetry(1), PutRetry("a", [], 1, 0, 0, 0, "bad")]),  # fails
            return_exceptions=True,
        )
        assert await store.run(lambda db: db.cursors()) == {"a": 200}
        await store.write([LedgerEntry("a", EventState.DELIVERED, [2], now_ms(), 1, 200)])
        assert len(await store.run(lambda db: db.ledger_rows("a", 2))) == 1
    finally:
        await store.close()
