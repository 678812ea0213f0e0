"""The delivery store: where each destination stands, what waits for a retry, what happened.

Storage layout, in ``<data-dir>/delivery/delivery.sqlite`` (WAL, ``synchronous=NORMAL``), or
with ``state: {backend: postgres}`` the same tables in the workspace's PostgreSQL schema
(:mod:`headwater.state.migrations`; ``meta`` is ``delivery_meta`` there), shared by every node:

    cursors(destination PRIMARY KEY, offset, updated_ms)
        how far into the log each destination's worker has handed every event an outcome.
        A destination's queue is the log after its cursor: the backlog of a dead
        destination stays in the log on disk, never in memory, and drains in log order.
    retries(id PRIMARY KEY, destination, first_offset, last_offset, count, events BLOB,
            attempts, next_attempt_ms, deadline_ms, first_failed_ms, last_status, last_error)
        batches that failed with a retryable outcome, with a copy of their events (packed by
        :func:`headwater.delivery.events.pack_events`) so they no longer depend on the log.
    ledger(id PRIMARY KEY, destination, state, first_offset, last_offset, offsets BLOB, count,
           at_ms, attempts, status, reason, duration_ms, latency, exchange)
        the delivery ledger: one row per outcome of a batch (of each group of its events
        that share an outcome, when a destination answered per event; successes of one
        commit group merged into one row), ``offsets`` as runs of log offsets, ``latency``
        the end-to-end latencies of delivered events as histogram counts over
        ``LATENCY_BOUNDS_MS``, ``exchange`` the request sent and the response received
        (failures, and samples of successes). Rows older than the log's retention are pruned.
    deadletter(id PRIMARY KEY, destination, offset, message_id, received_ms, payload, reason,
               status, attempts, first_failed_ms, dead_ms, exchange)
        one row per event that was still failing when its retry window closed; kept until an
        operator re-drives (``headwater deadletter retry``) or purges it.
    replays(id PRIMARY KEY, destination, since_ms, until_ms, end_offset, position, state,
            created_ms, finished_ms, sent, filtered, skipped)
        replay jobs: the worker reads the log from ``position`` to ``end_offset`` and sends
        the events received in ``[since_ms, until_ms)`` through today's routing.
    meta(key PRIMARY KEY, value)
        schema_version; ``span:<destination>``, the widest offset range of a ledger row, which
        bounds the search by offset.

Writes come from the delivery workers as lists of operations; concurrent lists are applied
in one transaction (group commit). A cursor moves in the same transaction as the outcomes of
the events it passes, so after a crash a worker re-sends at most what it had not recorded:
delivery is at-least-once. The CLI (``headwater deadletter``, ``replay``) opens the same file
with :class:`StoreDB` while the server runs; SQLite's locking (or PostgreSQL's) keeps them
apart. The SQL is written once for both engines (:mod:`headwater.state.sql`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from headwater.delivery.events import (
    OutboundEvent,
    offsets_contain,
    pack_events,
    pack_offsets,
    unpack_events,
)
from headwater.delivery.outcomes import EventState, Exchange
from headwater.sqlite_files import open_store
from headwater.state import postgres
from headwater.state.sql import SqlConn, SqliteConn

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

T = TypeVar("T")

SCHEMA_VERSION = 1
DB_FILE = "delivery.sqlite"
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000,
                     300_000, 3_600_000)  # fmt: skip
"""Upper bounds of the latency histogram's buckets; one more bucket holds the rest."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors(destination TEXT PRIMARY KEY, "offset" INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS retries(id INTEGER PRIMARY KEY, destination TEXT NOT NULL,
    first_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL, count INTEGER NOT NULL,
    events BLOB NOT NULL, attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL, first_failed_ms INTEGER NOT NULL, last_status INTEGER,
    last_error TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS retries_order ON retries(destination, first_offset);
CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY, destination TEXT NOT NULL,
    state TEXT NOT NULL, first_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL,
    offsets BLOB NOT NULL, count INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL, status INTEGER, reason TEXT, duration_ms REAL, latency BLOB,
    exchange BLOB);
CREATE INDEX IF NOT EXISTS ledger_offsets ON ledger(destination, first_offset);
CREATE INDEX IF NOT EXISTS ledger_time ON ledger(at_ms);
CREATE INDEX IF NOT EXISTS ledger_window ON ledger(destination, at_ms);
CREATE TABLE IF NOT EXISTS deadletter(id INTEGER PRIMARY KEY, destination TEXT NOT NULL,
    "offset" INTEGER NOT NULL, message_id TEXT NOT NULL, received_ms INTEGER NOT NULL,
    payload BLOB NOT NULL, reason TEXT NOT NULL, status INTEGER, attempts INTEGER NOT NULL,
    first_failed_ms INTEGER, dead_ms INTEGER NOT NULL, exchange BLOB);
CREATE INDEX IF NOT EXISTS deadletter_dest ON deadletter(destination, id);
CREATE INDEX IF NOT EXISTS deadletter_message ON deadletter(message_id);
CREATE TABLE IF NOT EXISTS replays(id INTEGER PRIMARY KEY, destination TEXT NOT NULL,
    since_ms INTEGER NOT NULL, until_ms INTEGER NOT NULL, end_offset INTEGER NOT NULL,
    position INTEGER NOT NULL, state TEXT NOT NULL, created_ms INTEGER NOT NULL,
    finished_ms INTEGER, sent INTEGER NOT NULL DEFAULT 0, filtered INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def latency_histogram(latencies_ms: Sequence[float]) -> list[int]:
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for value in latencies_ms:
        counts[bisect_left(LATENCY_BOUNDS_MS, value)] += 1
    return counts


# ---------------------------------------------------------------------- operations


@dataclass(slots=True)
class LedgerEntry:
    """An outcome for some of a destination's events."""

    destination: str
    state: EventState
    offsets: list[int]
    at_ms: int
    attempts: int = 1
    status: int | None = None
    reason: str | None = None
    duration_ms: float | None = None
    latencies_ms: list[int] = field(default_factory=list)
    exchange: Exchange | None = None


@dataclass(slots=True)
class PutRetry:
    """Schedule a batch's next attempt (a new row, or an update of ``row_id``)."""

    destination: str
    events: Sequence[OutboundEvent]
    attempts: int
    next_attempt_ms: int
    deadline_ms: int
    first_failed_ms: int
    error: str
    status: int | None = None
    row_id: int | None = None


@dataclass(slots=True)
class DeleteRetry:
    row_id: int


@dataclass(slots=True)
class PutDead:
    """Move events to the dead letter store."""

    destination: str
    events: Sequence[OutboundEvent]
    reason: str
    at_ms: int
    attempts: int
    status: int | None = None
    first_failed_ms: int | None = None
    exchange: Exchange | None = None


@dataclass(slots=True)
class RetriesDue:
    """An outage ended: every retry of the destination waiting now is due at ``at_ms``
    (retries scheduled later in the same transaction keep their own time)."""

    destination: str
    at_ms: int


@dataclass(slots=True)
class SetCursor:
    destination: str
    offset: int


@dataclass(slots=True)
class ReplayProgress:
    replay_id: int
    position: int
    sent: int
    filtered: int
    skipped: int
    done: bool


Op = LedgerEntry | PutRetry | DeleteRetry | PutDead | RetriesDue | SetCursor | ReplayProgress


# ---------------------------------------------------------------------- what reads return


@dataclass(frozen=True, slots=True)
class RetryBatch:
    row_id: int
    destination: str
    events: list[OutboundEvent]
    attempts: int
    next_attempt_ms: int
    deadline_ms: int
    first_failed_ms: int
    last_status: int | None
    last_error: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    destination: str
    offset: int
    message_id: str
    received_ms: int
    payload: bytes
    reason: str
    status: int | None
    attempts: int
    first_failed_ms: int | None
    dead_ms: int
    exchange: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Replay:
    id: int
    destination: str
    since_ms: int
    until_ms: int
    end_offset: int
    position: int
    state: str  # pending | running | done | cancelled
    created_ms: int
    finished_ms: int | None
    sent: int
    filtered: int
    skipped: int


@dataclass(frozen=True, slots=True)
class LedgerRow:
    destination: str
    state: EventState
    at_ms: int
    attempts: int
    status: int | None
    reason: str | None
    duration_ms: float | None
    exchange: dict[str, Any] | None


# ---------------------------------------------------------------------- the database


def _exchange_blob(exchange: Exchange | None) -> bytes | None:
    if exchange is None:
        return None
    return orjson.dumps({"request": exchange.request, "response": exchange.response})


def _json(blob: bytes | None) -> dict[str, Any] | None:
    return None if blob is None else orjson.loads(blob)


class StoreDB:
    """The store on one connection (a SQLite file, or PostgreSQL with :meth:`postgres`);
    every method runs on the caller's thread."""

    def __init__(self, path: Path | None = None, *, conn: SqlConn | None = None) -> None:
        self.path = path
        if conn is None:
            if path is None:
                raise TypeError("StoreDB needs a path or a connection")
            raw = open_store(path, _SCHEMA, what="delivery store", version=SCHEMA_VERSION)
            conn = SqliteConn(raw, str(path))
        self.conn = conn
        self._meta = "meta" if conn.dialect == "sqlite" else "delivery_meta"
        self._spans = {
            k.removeprefix("span:"): int(v)
            for k, v in self.conn.execute(
                f"SELECT key, value FROM {self._meta} WHERE key LIKE 'span:%'"
            )
        }

    @classmethod
    def postgres(cls, state: StateConfig) -> StoreDB:
        """The store in the PostgreSQL schema ``state`` names, migrated to this version."""
        return cls(conn=postgres.connect(state))

    @classmethod
    def open(cls, data_dir: Path, state: StateConfig | None) -> StoreDB:
        """The store where the workspace keeps it: ``data_dir``'s file, or PostgreSQL."""
        if postgres.uses_postgres(state):
            return cls.postgres(state)
        return cls(data_dir / DB_FILE)

    def close(self) -> None:
        self.conn.close()

    # -- writes

    def apply(self, ops: Sequence[Op]) -> None:
        """Apply operations in one transaction, merging plain successes into few rows."""
        merged = _merge_ledger(ops)

        def work() -> None:
            for op in merged:
                self._apply_one(op)

        self.conn.write_once(work)

    def _apply_one(self, op: Op) -> None:
        conn = self.conn
        if isinstance(op, LedgerEntry):
            if not op.offsets:
                return
            first, last = min(op.offsets), max(op.offsets)
            self._widen_span(op.destination, last - first)
            conn.execute(
                "INSERT INTO ledger(destination, state, first_offset, last_offset, offsets,"
                " count, at_ms, attempts, status, reason, duration_ms, latency, exchange)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    op.destination,
                    op.state.value,
                    first,
                    last,
                    pack_offsets(op.offsets),
                    len(op.offsets),
                    op.at_ms,
                    op.attempts,
                    op.status,
                    op.reason,
                    op.duration_ms,
                    orjson.dumps(latency_histogram(op.latencies_ms)) if op.latencies_ms else None,
                    _exchange_blob(op.exchange),
                ),
            )
        elif isinstance(op, PutRetry):
            values = (
                op.attempts,
                op.next_attempt_ms,
                op.deadline_ms,
                op.first_failed_ms,
                op.status,
                op.error,
            )
            if op.row_id is None:
                offsets = [e.offset for e in op.events]
                conn.execute(
                    "INSERT INTO retries(destination, first_offset, last_offset, count, events,"
                    " attempts, next_attempt_ms, deadline_ms, first_failed_ms, last_status,"
                    " last_error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        op.destination,
                        min(offsets),
                        max(offsets),
                        len(offsets),
                        pack_events(op.events),
                        *values,
                    ),
                )
            else:
                conn.execute(
                    "UPDATE retries SET attempts=?, next_attempt_ms=?, deadline_ms=?,"
                    " first_failed_ms=?, last_status=?, last_error=? WHERE id=?",
                    (*values, op.row_id),
                )
        elif isinstance(op, DeleteRetry):
            conn.execute("DELETE FROM retries WHERE id=?", (op.row_id,))
        elif isinstance(op, RetriesDue):
            self.make_retries_due(op.destination, op.at_ms)
        elif isinstance(op, PutDead):
            exchange = _exchange_blob(op.exchange)
            conn.executemany(
                'INSERT INTO deadletter(destination, "offset", message_id, received_ms, payload,'
                " reason, status, attempts, first_failed_ms, dead_ms, exchange)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        op.destination,
                        e.offset,
                        e.message_id,
                        e.received_at_ms,
                        e.payload,
                        op.reason,
                        op.status,
                        op.attempts,
                        op.first_failed_ms,
                        op.at_ms,
                        exchange,
                    )
                    for e in op.events
                ],
            )
        elif isinstance(op, SetCursor):
            conn.execute(
                'INSERT INTO cursors VALUES (?,?,?) ON CONFLICT(destination) DO UPDATE SET "offset"'
                '=CASE WHEN excluded."offset" > cursors."offset" THEN excluded."offset" ELSE'
                ' cursors."offset" END, updated_ms=excluded.updated_ms',
                (op.destination, op.offset, now_ms()),
            )
        elif isinstance(op, ReplayProgress):
            conn.execute(
                "UPDATE replays SET position=?, sent=sent+?, filtered=filtered+?,"
                " skipped=skipped+?, state=CASE WHEN state='cancelled' THEN state"
                " WHEN ? THEN 'done' ELSE 'running' END,"
                " finished_ms=CASE WHEN ? THEN ? ELSE finished_ms END WHERE id=?",
                (
                    op.position,
                    op.sent,
                    op.filtered,
                    op.skipped,
                    op.done,
                    op.done,
                    now_ms(),
                    op.replay_id,
                ),
            )

    def _widen_span(self, destination: str, span: int) -> None:
        if span > self._spans.get(destination, -1):
            self._spans[destination] = span
            meta = self._meta  # the widest wins: another node may have stored a wider one
            self.conn.execute(
                f"INSERT INTO {meta} VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value ="
                f" CASE WHEN CAST(excluded.value AS BIGINT) > CAST({meta}.value AS BIGINT)"
                f" THEN excluded.value ELSE {meta}.value END",
                (f"span:{destination}", str(span)),
            )

    # -- cursors and retries

    def cursors(self) -> dict[str, int]:
        return dict(self.conn.execute('SELECT destination, "offset" FROM cursors').fetchall())

    def retries(
        self, destination: str, due_before_ms: int | None = None, limit: int = 100
    ) -> list[RetryBatch]:
        """Retry batches oldest first (by log offset); only the due ones with ``due_before_ms``."""
        sql = (
            "SELECT id, destination, events, attempts, next_attempt_ms, deadline_ms,"
            " first_failed_ms, last_status, last_error FROM retries WHERE destination=?"
        )
        args: tuple[Any, ...] = (destination,)
        if due_before_ms is not None:
            sql += " AND next_attempt_ms <= ?"
            args += (due_before_ms,)
        rows = self.conn.execute(sql + " ORDER BY first_offset LIMIT ?", (*args, limit))
        return [
            RetryBatch(r[0], r[1], unpack_events(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    def retry_summary(self, destination: str) -> tuple[int, int | None]:
        """(events waiting for a retry, the earliest next attempt)."""
        row = self.conn.execute(
            "SELECT CAST(coalesce(sum(count), 0) AS BIGINT), min(next_attempt_ms) FROM retries"
            " WHERE destination=?",
            (destination,),
        ).fetchone()
        return int(row[0]), row[1]

    def make_retries_due(self, destination: str, at_ms: int) -> None:
        self.conn.execute(
            "UPDATE retries SET next_attempt_ms=? WHERE destination=? AND next_attempt_ms>?",
            (at_ms, destination, at_ms),
        )

    # -- dead letters

    def dead_letters(
        self,
        destination: str | None = None,
        ids: Sequence[int] | None = None,
        limit: int | None = 100,
        before_ms: int | None = None,
    ) -> list[DeadLetter]:
        sql, args = self._dead_filter(destination, ids, before_ms)
        sql = (
            'SELECT id, destination, "offset", message_id, received_ms, payload, reason, status,'
            " attempts, first_failed_ms, dead_ms, exchange FROM deadletter" + sql + " ORDER BY id"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self.conn.execute(sql, args).fetchall()
        return [
            DeadLetter(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], _json(r[11])
            )
            for r in rows
        ]

    def dead_letter_counts(self) -> dict[str, int]:
        return dict(
            self.conn.execute(
                "SELECT destination, count(*) FROM deadletter GROUP BY destination"
            ).fetchall()
        )

    @staticmethod
    def _dead_filter(
        destination: str | None, ids: Sequence[int] | None, before_ms: int | None
    ) -> tuple[str, tuple[Any, ...]]:
        clauses: list[str] = []
        args: list[Any] = []
        if destination is not None:
            clauses.append("destination=?")
            args.append(destination)
        if ids is not None:
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        if before_ms is not None:
            clauses.append("dead_ms < ?")
            args.append(before_ms)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)

    def redrive(
        self,
        windows_secs: dict[str, float],
        batch_events: dict[str, int],
        destination: str | None = None,
        ids: Sequence[int] | None = None,
    ) -> dict[str, int]:
        """Move dead letters back into their destination's retry queue, due now, with a fresh
        retry window. Only destinations in ``windows_secs`` (today's workspace) are taken.
        Returns the number of events re-driven per destination."""
        moved: dict[str, int] = {}
        at = now_ms()

        def work() -> None:
            moved.clear()
            for dest, window in windows_secs.items():
                if destination is not None and dest != destination:
                    continue
                letters = self.dead_letters(dest, ids, limit=None)
                size = max(1, batch_events.get(dest, 1))
                for i in range(0, len(letters), size):
                    chunk = letters[i : i + size]
                    events = [
                        OutboundEvent(d.offset, d.message_id, d.received_ms, d.payload)
                        for d in chunk
                    ]
                    self._apply_one(
                        PutRetry(
                            dest,
                            events,
                            attempts=0,
                            next_attempt_ms=at,
                            deadline_ms=at + int(window * 1000),
                            first_failed_ms=at,
                            error="re-driven from the dead letter store",
                        )
                    )
                if letters:
                    self.conn.executemany(
                        "DELETE FROM deadletter WHERE id=?", [(d.id,) for d in letters]
                    )
                    moved[dest] = len(letters)

        self.conn.write_once(work)
        return moved

    def purge(
        self,
        destination: str | None = None,
        ids: Sequence[int] | None = None,
        before_ms: int | None = None,
    ) -> int:
        sql, args = self._dead_filter(destination, ids, before_ms)
        return self.conn.execute("DELETE FROM deadletter" + sql, args).rowcount

    # -- replays

    def create_replay(
        self, destination: str, since_ms: int, until_ms: int, end_offset: int, after: int = 0
    ) -> int:
        """A replay job of the events received in ``[since_ms, until_ms)``, read from the log
        after offset ``after`` up to ``end_offset``."""

        def work() -> int:  # once: a replay created twice would send its window twice
            row = self.conn.execute(
                "INSERT INTO replays(destination, since_ms, until_ms, end_offset, position,"
                " state, created_ms) VALUES (?,?,?,?,?,?,?) RETURNING id",
                (destination, since_ms, until_ms, end_offset, after, "pending", now_ms()),
            ).fetchone()
            return int(row[0])

        return self.conn.write_once(work)

    def replays(self, destination: str | None = None, active_only: bool = False) -> list[Replay]:
        sql = (
            "SELECT id, destination, since_ms, until_ms, end_offset, position, state,"
            " created_ms, finished_ms, sent, filtered, skipped FROM replays"
        )
        clauses, args = [], []
        if destination is not None:
            clauses.append("destination=?")
            args.append(destination)
        if active_only:
            clauses.append("state IN ('pending', 'running')")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return [Replay(*r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def replay(self, replay_id: int) -> Replay | None:
        return next((r for r in self.replays() if r.id == replay_id), None)

    # -- the ledger

    def ledger_rows(self, destination: str, offset: int) -> list[LedgerRow]:
        """The ledger rows that name ``offset`` for this destination, oldest first."""
        span = self._spans.get(destination)
        if span is None or self.conn.dialect != "sqlite":  # shared: others widen it too
            stored = self._load_span(destination)
            if stored is None and span is None:
                return []
            span = max(span or 0, stored or 0)
        rows = self.conn.execute(
            "SELECT offsets, state, at_ms, attempts, status, reason, duration_ms, exchange"
            " FROM ledger WHERE destination=? AND first_offset BETWEEN ? AND ? ORDER BY id",
            (destination, offset - span, offset),
        )
        return [
            LedgerRow(destination, EventState(r[1]), r[2], r[3], r[4], r[5], r[6], _json(r[7]))
            for r in rows
            if offsets_contain(r[0], offset)
        ]

    def _load_span(self, destination: str) -> int | None:
        row = self.conn.execute(
            f"SELECT value FROM {self._meta} WHERE key=?", (f"span:{destination}",)
        ).fetchone()
        return None if row is None else int(row[0])

    def retry_holding(self, destination: str, offset: int) -> RetryBatch | None:
        rows = self.conn.execute(
            "SELECT id FROM retries WHERE destination=? AND first_offset<=? AND last_offset>=?",
            (destination, offset, offset),
        ).fetchall()
        for (row_id,) in rows:
            for batch in self._retry_by_id(row_id):
                if any(e.offset == offset for e in batch.events):
                    return batch
        return None

    def _retry_by_id(self, row_id: int) -> list[RetryBatch]:
        rows = self.conn.execute(
            "SELECT id, destination, events, attempts, next_attempt_ms, deadline_ms,"
            " first_failed_ms, last_status, last_error FROM retries WHERE id=?",
            (row_id,),
        )
        return [
            RetryBatch(r[0], r[1], unpack_events(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    def dead_letter_for(self, destination: str, message_id: str) -> DeadLetter | None:
        rows = self.conn.execute(
            "SELECT id FROM deadletter WHERE message_id=? AND destination=?",
            (message_id, destination),
        ).fetchall()
        letters = self.dead_letters(destination, [r[0] for r in rows]) if rows else []
        return letters[-1] if letters else None

    def prune(self, before_ms: int) -> int:
        """Drop ledger rows older than ``before_ms`` (the log's retention)."""
        return self.conn.execute("DELETE FROM ledger WHERE at_ms < ?", (before_ms,)).rowcount


def _merge_ledger(ops: Sequence[Op]) -> list[Op]:
    """Plain successes (no exchange kept) of the same destination, attempts and status become
    one ledger row, and the cursor moves of a destination one upsert (to the furthest: a
    cursor never goes back); everything else keeps its order."""
    merged: dict[tuple[str, int, int | None], LedgerEntry] = {}
    cursors: dict[str, SetCursor] = {}
    out: list[Op] = []
    for op in ops:
        if isinstance(op, SetCursor):
            held = cursors.get(op.destination)
            if held is None:
                cursors[op.destination] = held = SetCursor(op.destination, op.offset)
                out.append(held)
            held.offset = max(held.offset, op.offset)
        elif isinstance(op, LedgerEntry) and op.state is EventState.DELIVERED and not op.exchange:
            key = (op.destination, op.attempts, op.status)
            into = merged.get(key)
            if into is None:
                merged[key] = into = LedgerEntry(
                    op.destination, op.state, [], op.at_ms, op.attempts, op.status, duration_ms=0
                )
                out.append(into)
            n = len(into.offsets)
            into.offsets.extend(op.offsets)
            into.latencies_ms.extend(op.latencies_ms)
            into.at_ms = max(into.at_ms, op.at_ms)
            if op.duration_ms is not None and into.duration_ms is not None:
                # weighted mean over events, for the per-request time
                total = n + len(op.offsets)
                into.duration_ms = (into.duration_ms * n + op.duration_ms * len(op.offsets)) / total
        else:
            out.append(op)
    return out


class DeliveryStore:
    """:class:`StoreDB` for asyncio: one thread, and group commit of concurrent writes."""

    def __init__(self, data_dir: Path, state: StateConfig | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headwater-delivery")
        self._db: StoreDB | None = None
        self._data_dir = data_dir
        self._state = state
        self._pending: list[tuple[Sequence[Op], asyncio.Future[None]]] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._pool, StoreDB.open, self._data_dir, self._state)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        self._pool.shutdown(wait=True)

    async def run(self, fn: Callable[[StoreDB], T]) -> T:
        """Run ``fn`` with the database on the store's thread."""
        db = self._db
        if db is None:
            raise RuntimeError("the delivery store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, db)

    async def write(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` atomically, together with whatever else is being written now."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((ops, future))
        if not self._flushing:
            self._flushing = True
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                ops = [op for batch, _ in group for op in batch]
                try:
                    await self.run(functools.partial(StoreDB.apply, ops=ops))
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, future in group:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._flushing = False
