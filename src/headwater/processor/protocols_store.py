"""The protocols store: the events tracking plans blocked, and counts of what violated them.

Storage layout, in ``<data-dir>/protocols/protocols.sqlite`` (WAL, ``synchronous=FULL``), or
with ``state: {backend: postgres}`` the same tables in the workspace's PostgreSQL schema
(``meta`` is not there: migrations version it):

    blocked(id PRIMARY KEY, source, plan, message_id, received_ms, reason, violations, payload)
        events a plan blocked, kept ``RETENTION_MS`` (30 days) so they can be looked at,
        traced by ``messageId`` and re-sent once the plan or the sender is fixed (then
        deleted). ``reason`` is ``unplanned_event`` or ``violation``; ``violations`` a JSON
        list of ``{type, field, description, expected, got, rule}``; ``payload`` the
        normalised event as JSON. A row is on disk when :meth:`ProtocolsStore.put_blocked`
        returns, because the gateway acknowledges the request after it; concurrent calls
        share one transaction (group commit).
    violation_counts(minute, source, plan, event, event_type, violation_type, field, count)
        violations per minute (``minute`` = epoch ms // 60000), with the unplanned events
        and properties (types ``Unplanned Event``, ``Unplanned Property``); 30 days.
    violation_samples(id PRIMARY KEY, source, plan, event, event_type, violation_type, field,
                      expected, got, description, message_id, at_ms)
        the latest ``SAMPLES_PER_FIELD`` occurrences of each (source, plan, event, violation
        type, field); 30 days.
    meta(key PRIMARY KEY, value)
        schema_version.

Counts and samples are added up in memory and written about once a second, in the
transaction of the next blocked events or on their own: a crash loses up to a second of
counts and samples, never a blocked event. The CLI opens the same file with
:class:`ProtocolsDB` while the server runs; SQLite's locking keeps them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from headwater.processor.protocols import (
    UNPLANNED_EVENT,
    UNPLANNED_PROPERTY,
    PlanVerdict,
    Violation,
)
from headwater.sqlite_files import open_store
from headwater.state import postgres
from headwater.state.sql import SqlConn, SqliteConn

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

T = TypeVar("T")
logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROTOCOLS_DIR = "protocols"
DB_FILE = "protocols.sqlite"
RETENTION_MS = 30 * 86_400_000
MAX_BLOCKED_BYTES = 2 * 1024**3
"""The blocked events' budget (their JSON). Past it, newly blocked events are counted but not
kept (Segment keeps none); the store is outside the log's disk budget, and a public write
key must not be able to fill the disk through it."""
NOT_KEPT = -1  # the row id put_blocked gives an event the budget refused
MAX_DISTINCT_NAMES = 1000
"""Unplanned event names and unplanned property fields counted apart per source; beyond,
they are counted together as OTHER_EVENTS / OTHER_FIELDS (senders choose them freely)."""
OTHER_EVENTS = "(other unplanned events)"
OTHER_FIELDS = "(other unplanned properties)"
SAMPLES_PER_FIELD = 5
FLUSH_EVERY_SECS = 1.0
PRUNE_EVERY_SECS = 3600.0
_PAGE = 500  # blocked events read per query while iterating

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocked(id INTEGER PRIMARY KEY, source TEXT NOT NULL,
    plan TEXT NOT NULL, message_id TEXT NOT NULL, received_ms INTEGER NOT NULL,
    reason TEXT NOT NULL, violations BLOB NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS blocked_time ON blocked(source, received_ms, id);
CREATE INDEX IF NOT EXISTS blocked_message ON blocked(message_id);
CREATE INDEX IF NOT EXISTS blocked_age ON blocked(received_ms);
CREATE TABLE IF NOT EXISTS violation_counts(minute INTEGER NOT NULL, source TEXT NOT NULL,
    plan TEXT NOT NULL, event TEXT NOT NULL, event_type TEXT NOT NULL,
    violation_type TEXT NOT NULL, field TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY(source, minute, plan, event, event_type, violation_type, field))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counts_age ON violation_counts(minute);
CREATE TABLE IF NOT EXISTS violation_samples(id INTEGER PRIMARY KEY, source TEXT NOT NULL,
    plan TEXT NOT NULL, event TEXT NOT NULL, event_type TEXT NOT NULL,
    violation_type TEXT NOT NULL, field TEXT NOT NULL, expected TEXT NOT NULL,
    got TEXT NOT NULL, description TEXT NOT NULL, message_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS samples_key
    ON violation_samples(source, plan, event, violation_type, field, id);
CREATE INDEX IF NOT EXISTS samples_age ON violation_samples(at_ms);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def db_path(data_dir: Path) -> Path:
    """Where the store lives in a data directory (for the CLI)."""
    return data_dir / PROTOCOLS_DIR / DB_FILE


# ---------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class NewBlocked:
    """A blocked event to keep."""

    source: str
    plan: str
    message_id: str
    received_ms: int
    reason: str
    violations: Sequence[Violation]
    payload: bytes

    @classmethod
    def of(cls, source: str, verdict: PlanVerdict, received_ms: int) -> NewBlocked:
        """The blocked event of a verdict (``verdict.event`` is the event as received)."""
        event = verdict.event
        message_id = event.get("messageId")
        return cls(source, verdict.plan, str(message_id or ""), received_ms,
                   verdict.blocked or "violation", verdict.violations,
                   orjson.dumps(event))  # fmt: skip


@dataclass(frozen=True, slots=True)
class BlockedEvent:
    id: int
    source: str
    plan: str
    message_id: str
    received_ms: int
    reason: str
    violations: list[dict[str, str]]
    payload: bytes

    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.payload)
        return parsed


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing to count: a violation, an unplanned event or an unplanned property."""

    violation_type: str
    field: str
    description: str
    expected: str = ""
    got: str = ""


def findings(verdict: PlanVerdict) -> list[Finding]:
    """What a verdict adds to the violations view."""
    out = [Finding(v.type, v.field, v.description, v.expected, v.got) for v in verdict.violations]
    if verdict.unplanned_event:
        name = verdict.event_name
        out.append(Finding(UNPLANNED_EVENT, "event", f"{name!r} is not in the tracking plan",
                           "an event of the plan", name))  # fmt: skip
    section = verdict.section
    for key in verdict.unplanned:
        out.append(Finding(UNPLANNED_PROPERTY, f"{section}.{key}",
                           f"{section}.{key} is not in the tracking plan", "", key))  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class Sample:
    violation_type: str
    field: str
    expected: str
    got: str
    description: str
    message_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class FieldViolations:
    """How often one field of an event had one kind of violation, with the latest samples."""

    violation_type: str
    field: str
    count: int
    samples: list[Sample]


@dataclass(frozen=True, slots=True)
class EventViolations:
    plan: str
    event: str
    event_type: str
    total: int
    by_type: dict[str, int]
    fields: list[FieldViolations]  # most frequent first


@dataclass(frozen=True, slots=True)
class ViolationSummary:
    """A source's violations since ``since_ms``, by event (most frequent first)."""

    source: str
    since_ms: int
    total: int
    events: list[EventViolations]


@dataclass(frozen=True, slots=True)
class Pruned:
    blocked: int
    counts: int
    samples: int


CountKey = tuple[
    int, str, str, str, str, str, str
]  # minute, source, plan, event, type, vtype, field
SampleKey = tuple[str, str, str, str, str, str]  # source, plan, event, event_type, vtype, field


@dataclass
class _Pending:
    """Counts and samples waiting to be written, added up."""

    counts: dict[CountKey, int] = field(default_factory=dict)
    samples: dict[SampleKey, deque[Sample]] = field(default_factory=dict)

    def add(
        self,
        source: str,
        verdict: PlanVerdict,
        items: Sequence[Finding],
        at_ms: int,
        event: str | None = None,
    ) -> None:
        minute = at_ms // 60_000
        message_id = str(verdict.event.get("messageId") or "")
        plan, kind = verdict.plan, verdict.event_type
        event = verdict.event_name if event is None else event
        for item in items:
            key = (minute, source, plan, event, kind, item.violation_type, item.field)
            self.counts[key] = self.counts.get(key, 0) + 1
            skey = (source, plan, event, kind, item.violation_type, item.field)
            held = self.samples.get(skey)
            if held is None:
                held = self.samples[skey] = deque(maxlen=SAMPLES_PER_FIELD)
            held.append(Sample(item.violation_type, item.field, item.expected, item.got,
                               item.description, message_id, at_ms))  # fmt: skip

    def take(self) -> _Pending:
        taken = _Pending(self.counts, self.samples)
        self.counts, self.samples = {}, {}
        return taken

    def restore(self, taken: _Pending) -> None:
        """Put back what a failed write took (added to what arrived meanwhile)."""
        for key, count in taken.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        for skey, samples in taken.samples.items():
            held = self.samples.setdefault(skey, deque(maxlen=SAMPLES_PER_FIELD))
            held.extendleft(reversed(samples))

    def __bool__(self) -> bool:
        return bool(self.counts)


# ---------------------------------------------------------------------- the database


class ProtocolsDB:
    """The store on one connection (a SQLite file, or PostgreSQL with :meth:`open`); every
    method runs on the caller's thread."""

    def __init__(
        self,
        path: Path | None = None,
        max_blocked_bytes: int | None = None,
        *,
        conn: SqlConn | None = None,
    ) -> None:
        self.path = path
        self.max_blocked_bytes = MAX_BLOCKED_BYTES if max_blocked_bytes is None else (
            max_blocked_bytes)  # fmt: skip
        if conn is None:
            if path is None:
                raise TypeError("ProtocolsDB needs a path or a connection")
            # FULL: a blocked event is acknowledged to its sender once it is here
            conn = SqliteConn(open_store(path, _SCHEMA, what="protocols store",
                                         version=SCHEMA_VERSION, synchronous="FULL"),
                              str(path))  # fmt: skip
        self.conn = conn
        self.commits = 0  # transactions written (group commit shows in tests)
        self.blocked_bytes = int(self.conn.execute(
            "SELECT CAST(COALESCE(SUM(length(payload)), 0) AS BIGINT) FROM blocked"
        ).fetchone()[0])  # fmt: skip
        self.not_kept = 0  # blocked events refused by the byte budget since opened

    @classmethod
    def open(
        cls, directory: Path, state: StateConfig | None = None, max_blocked_bytes: int | None = None
    ) -> ProtocolsDB:
        """The store where the workspace keeps it: ``directory``'s file, or PostgreSQL."""
        if postgres.uses_postgres(state):
            return cls(max_blocked_bytes=max_blocked_bytes, conn=postgres.connect(state))
        return cls(directory / DB_FILE, max_blocked_bytes)

    def close(self) -> None:
        self.conn.close()

    # -- writes

    def write(
        self, blocked: Sequence[NewBlocked] = (), pending: _Pending | None = None
    ) -> list[int]:
        """Blocked events, counts and samples in one transaction (applied at most once);
        the blocked events' ids."""
        added = [0, 0]  # bytes kept, events not kept: counted once the transaction is in

        def work() -> list[int]:
            added[:] = [0, 0]
            ids = [self._put(item, added) for item in blocked]
            if pending is not None:
                self._add_counts(pending.counts, pending.samples)
            return ids

        ids = self.conn.write_once(work)
        self.blocked_bytes += added[0]
        self.not_kept += added[1]
        self.commits += 1
        return ids

    def put_blocked(self, blocked: Sequence[NewBlocked]) -> list[int]:
        return self.write(blocked)

    def _put(self, item: NewBlocked, added: list[int]) -> int:
        """Keep one blocked event; an SDK's retry of one already kept is kept once."""
        if item.message_id:
            row = self.conn.execute(
                "SELECT id FROM blocked WHERE message_id=? AND source=?",
                (item.message_id, item.source),
            ).fetchone()
            if row is not None:
                return int(row[0])
        if self.blocked_bytes + added[0] + len(item.payload) > self.max_blocked_bytes:
            added[1] += 1  # the store is full: this one is counted, not kept
            return NOT_KEPT
        violations = [
            {"type": v.type, "field": v.field, "description": v.description,
             "expected": v.expected, "got": v.got, "rule": v.rule}
            for v in item.violations
        ]  # fmt: skip
        row = self.conn.execute(
            "INSERT INTO blocked(source, plan, message_id, received_ms, reason, violations,"
            " payload) VALUES (?,?,?,?,?,?,?) RETURNING id",
            (item.source, item.plan, item.message_id, item.received_ms, item.reason,
             orjson.dumps(violations), item.payload),
        ).fetchone()  # fmt: skip
        added[0] += len(item.payload)
        return int(row[0])

    def _add_counts(
        self, counts: Mapping[CountKey, int], samples: Mapping[SampleKey, deque[Sample]]
    ) -> None:
        conn = self.conn
        conn.executemany(
            "INSERT INTO violation_counts VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(source, minute,"
            " plan, event, event_type, violation_type, field) DO UPDATE"
            " SET count = violation_counts.count + excluded.count",
            [(*key, count) for key, count in counts.items()],
        )
        for (source, plan, event, kind, vtype, fld), held in samples.items():
            conn.executemany(
                "INSERT INTO violation_samples(source, plan, event, event_type, violation_type,"
                " field, expected, got, description, message_id, at_ms)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(source, plan, event, kind, vtype, fld, s.expected, s.got, s.description,
                  s.message_id, s.at_ms) for s in held],
            )  # fmt: skip
            conn.execute(
                "DELETE FROM violation_samples WHERE source=? AND plan=? AND event=?"
                " AND violation_type=? AND field=? AND id NOT IN (SELECT id FROM"
                " violation_samples WHERE source=? AND plan=? AND event=? AND violation_type=?"
                " AND field=? ORDER BY id DESC LIMIT ?)",
                (source, plan, event, vtype, fld) * 2 + (SAMPLES_PER_FIELD,),
            )

    def delete_blocked(self, ids: Sequence[int]) -> int:
        """Forget blocked events (after they were re-sent); how many were deleted."""
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        size = self.conn.execute(
            f"SELECT CAST(COALESCE(SUM(length(payload)), 0) AS BIGINT) FROM blocked"
            f" WHERE id IN ({marks})",
            tuple(ids),
        ).fetchone()[0]
        deleted = self.conn.execute(f"DELETE FROM blocked WHERE id IN ({marks})", tuple(ids))
        self.blocked_bytes -= int(size)
        return int(deleted.rowcount)

    def prune(self, now: int, retention_ms: int = RETENTION_MS) -> Pruned:
        """Drop what is older than ``retention_ms`` at ``now`` (epoch ms)."""
        before = now - retention_ms
        conn = self.conn

        def work() -> tuple[int, Pruned]:
            size = conn.execute(
                "SELECT CAST(COALESCE(SUM(length(payload)), 0) AS BIGINT) FROM blocked"
                " WHERE received_ms < ?",
                (before,),
            ).fetchone()[0]
            blocked = conn.execute("DELETE FROM blocked WHERE received_ms < ?", (before,))
            counts = conn.execute(
                "DELETE FROM violation_counts WHERE minute < ?", (before // 60_000,)
            )
            samples = conn.execute("DELETE FROM violation_samples WHERE at_ms < ?", (before,))
            return int(size), Pruned(blocked.rowcount, counts.rowcount, samples.rowcount)

        size, pruned = conn.write_once(work)
        self.blocked_bytes -= size
        return pruned

    # -- reads

    def violations(self, source: str, since_ms: int) -> ViolationSummary:
        """The source's violations since ``since_ms``, by event, with samples."""
        rows = self.conn.execute(
            "SELECT plan, event, event_type, violation_type, field, CAST(sum(count) AS BIGINT)"
            " FROM violation_counts WHERE source=? AND minute >= ?"
            " GROUP BY plan, event, event_type, violation_type, field",
            (source, since_ms // 60_000),
        ).fetchall()
        samples: dict[tuple[str, str, str, str, str], list[Sample]] = {}
        for r in self.conn.execute(
            "SELECT plan, event, event_type, violation_type, field, expected, got, description,"
            " message_id, at_ms FROM violation_samples WHERE source=? AND at_ms >= ?"
            " ORDER BY id DESC",
            (source, since_ms),
        ):
            samples.setdefault((r[0], r[1], r[2], r[3], r[4]), []).append(
                Sample(r[3], r[4], r[5], r[6], r[7], r[8], r[9])
            )
        events: dict[tuple[str, str, str], list[FieldViolations]] = {}
        for plan, event, kind, vtype, fld, count in rows:
            found = samples.get((plan, event, kind, vtype, fld), [])
            events.setdefault((plan, event, kind), []).append(
                FieldViolations(vtype, fld, count, found)
            )
        out = []
        for (plan, event, kind), fields in events.items():
            fields.sort(key=lambda f: (-f.count, f.field, f.violation_type))
            by_type: dict[str, int] = {}
            for f in fields:
                by_type[f.violation_type] = by_type.get(f.violation_type, 0) + f.count
            out.append(EventViolations(plan, event, kind, sum(by_type.values()), by_type, fields))
        out.sort(key=lambda e: (-e.total, e.event))
        return ViolationSummary(source, since_ms, sum(e.total for e in out), out)

    def blocked(
        self, source: str, since_ms: int = 0, until_ms: int | None = None, after_id: int = -1
    ) -> Iterator[BlockedEvent]:
        """The source's blocked events received in ``[since_ms, until_ms)``, oldest first,
        read a page at a time; ``after_id`` skips those received at ``since_ms`` with an id
        up to it (to page on from the last one seen)."""
        until = until_ms if until_ms is not None else 2**62
        after = (since_ms, after_id)
        while True:
            rows = self.conn.execute(
                f"SELECT {_BLOCKED_COLUMNS} FROM blocked WHERE source=?"
                " AND (received_ms, id) > (?, ?) AND received_ms < ?"
                " ORDER BY received_ms, id LIMIT ?",
                (source, after[0], after[1], until, _PAGE),
            ).fetchall()
            yield from (_blocked(r) for r in rows)
            if len(rows) < _PAGE:
                return
            after = (rows[-1][4], rows[-1][0])

    def blocked_event(self, message_id: str) -> BlockedEvent | None:
        """The latest blocked event with this ``messageId`` (for the per-event trace)."""
        row = self.conn.execute(
            f"SELECT {_BLOCKED_COLUMNS} FROM blocked WHERE message_id=? ORDER BY id DESC LIMIT 1",
            (message_id,),
        ).fetchone()
        return None if row is None else _blocked(row)

    def blocked_counts(self) -> dict[str, int]:
        """Blocked events kept, per source."""
        return dict(
            self.conn.execute("SELECT source, count(*) FROM blocked GROUP BY source").fetchall()
        )


_BLOCKED_COLUMNS = "id, source, plan, message_id, received_ms, reason, violations, payload"


def _blocked(r: Sequence[Any]) -> BlockedEvent:
    return BlockedEvent(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]), bytes(r[7]))


# ---------------------------------------------------------------------- asyncio


class ProtocolsStore:
    """:class:`ProtocolsDB` for asyncio: one thread, group commit of blocked events, counts
    and samples written in the background (``directory`` is ``<data-dir>/protocols``)."""

    def __init__(
        self,
        directory: Path,
        *,
        flush_every_secs: float = FLUSH_EVERY_SECS,
        prune_every_secs: float = PRUNE_EVERY_SECS,
        retention_ms: int = RETENTION_MS,
        state: StateConfig | None = None,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headwater-protocols")
        self._directory = directory
        self._state = state
        self._db: ProtocolsDB | None = None
        self._flush_every = flush_every_secs
        self._prune_every = prune_every_secs
        self.retention_ms = retention_ms
        self._pending = _Pending()
        self._event_names: dict[str, set[str]] = {}  # unplanned event names seen, per source
        self._fields: dict[str, set[str]] = {}  # unplanned property fields seen, per source
        self._waiting: list[tuple[Sequence[NewBlocked], asyncio.Future[list[int]]]] = []
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(
            self._pool, ProtocolsDB.open, self._directory, self._state
        )
        self._tasks = [
            loop.create_task(self._flush_loop(), name="protocols:flush"),
            loop.create_task(self._prune_loop(), name="protocols:prune"),
        ]

    async def close(self) -> None:
        """Stop the background writers and write what is pending."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._drain_task is not None:
            await asyncio.gather(self._drain_task, return_exceptions=True)
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self.flush()
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        self._pool.shutdown(wait=True)

    async def run(self, fn: Callable[[ProtocolsDB], T]) -> T:
        """Run ``fn`` with the database on the store's thread."""
        db = self._db
        if db is None:
            raise RuntimeError("the protocols store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, db)

    # -- writes

    async def put_blocked(self, items: Sequence[NewBlocked]) -> list[int]:
        """Keep blocked events; returns once they are on disk (with their row ids)."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        if not self._draining:
            self._draining = True
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    def record(self, source: str, verdict: PlanVerdict, at_ms: int | None = None) -> None:
        """Count what a verdict found (violations, unplanned event and properties); written
        within about a second. Costs a few dictionary updates; never waits."""
        items = findings(verdict)
        if items:
            name = verdict.event_name
            if verdict.unplanned_event:  # names the sender chose: a bounded number of them
                name = self._bounded(self._event_names, source, name, OTHER_EVENTS)
            items = [
                replace(i, field=self._bounded(self._fields, source, i.field, OTHER_FIELDS))
                if i.violation_type == UNPLANNED_PROPERTY else i
                for i in items
            ]  # fmt: skip
            self._pending.add(source, verdict, items, now_ms() if at_ms is None else at_ms, name)

    @staticmethod
    def _bounded(seen: dict[str, set[str]], source: str, value: str, other: str) -> str:
        """``value``, or ``other`` once the source has shown MAX_DISTINCT_NAMES others."""
        held = seen.setdefault(source, set())
        if value in held:
            return value
        if len(held) >= MAX_DISTINCT_NAMES:
            return other
        held.add(value)
        return value

    async def flush(self) -> None:
        """Write the pending counts and samples now."""
        if not self._pending:
            return
        taken = self._pending.take()
        try:
            await self.run(functools.partial(ProtocolsDB.write, pending=taken))
        except Exception:
            self._pending.restore(taken)
            raise

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                items = [item for batch, _ in group for item in batch]
                taken = self._pending.take()
                try:
                    ids = await self.run(
                        functools.partial(ProtocolsDB.write, blocked=items, pending=taken)
                    )
                except Exception as exc:
                    self._pending.restore(taken)
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for batch, future in group:
                    if not future.done():
                        future.set_result(ids[start : start + len(batch)])
                    start += len(batch)
        finally:
            self._draining = False

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_every)
            try:
                await self.flush()
            except Exception:
                logger.exception("protocols store: cannot write violation counts")

    async def _prune_loop(self) -> None:
        while True:
            try:
                pruned = await self.prune(now_ms())
                if pruned.blocked or pruned.counts or pruned.samples:
                    logger.info("protocols store: pruned %s", pruned)
            except Exception:
                logger.exception("protocols store: cannot prune")
            await asyncio.sleep(self._prune_every)

    # -- reads and maintenance

    async def prune(self, now: int) -> Pruned:
        return await self.run(lambda db: db.prune(now, self.retention_ms))

    async def violations(self, source: str, since_ms: int) -> ViolationSummary:
        """The source's violations, including the counts not yet written."""
        await self.flush()
        return await self.run(lambda db: db.violations(source, since_ms))

    async def blocked(
        self,
        source: str,
        since_ms: int = 0,
        until_ms: int | None = None,
        limit: int = 1000,
        after_id: int = -1,
    ) -> list[BlockedEvent]:
        """The first ``limit`` blocked events of the source in ``[since_ms, until_ms)``
        (``after_id``: as :meth:`ProtocolsDB.blocked`)."""

        def read(db: ProtocolsDB) -> list[BlockedEvent]:
            found = db.blocked(source, since_ms, until_ms, after_id)
            return [event for _, event in zip(range(limit), found, strict=False)]

        return await self.run(read)

    async def blocked_event(self, message_id: str) -> BlockedEvent | None:
        return await self.run(lambda db: db.blocked_event(message_id))

    async def delete_blocked(self, ids: Sequence[int]) -> int:
        return await self.run(lambda db: db.delete_blocked(ids))
