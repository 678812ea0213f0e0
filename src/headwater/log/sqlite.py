"""The embedded event log: one SQLite database in WAL mode, one writer thread, group commit.

Storage layout, in ``<data-dir>/log/events.sqlite``:

    meta(key TEXT PRIMARY KEY, value TEXT)
        schema_version.
    segments(id INTEGER PRIMARY KEY, first_offset, last_offset, records, bytes,
             first_received_ms, last_received_ms, created_ms, sealed)
        one row per segment; the newest unsealed segment takes the writes. ``bytes`` counts
        the events' JSON payloads.
    seg_<id>(first_offset INTEGER PRIMARY KEY, last_offset INTEGER, data BLOB)
        the events of one segment, in rows of consecutive offsets; ``data`` packs them as
        described in :mod:`headwater.log.frames` (each event's payload is its normalised
        JSON). Retention drops whole tables (DROP TABLE), never rows;
        ``auto_vacuum=INCREMENTAL`` gives the pages back to the file system.
    ids_<day>(message_id TEXT PRIMARY KEY, offset INTEGER) WITHOUT ROWID
        the message ids committed on a UTC day (days since the epoch). Deduplication looks in
        today's and yesterday's table, so a duplicate is caught for at least 24 h (at most
        48 h); lookup by message id (``get``) searches every table still retained.

Writes: ``append`` packs its records into one blob (on the caller's thread), queues it and
awaits a future. The writer thread takes everything queued and, in one transaction, looks the
message ids up in one ``json_each`` join, inserts the blobs as a few rows and the ids with
one ``INSERT ... SELECT FROM json_each``, and commits once (``synchronous=FULL`` for
``durability: fsync``, so the WAL is fsync'd before any future is resolved; ``NORMAL`` for
``os``). The per-event work is done inside SQLite with the GIL released, so the writer hands
the GIL back and forth a few times per group, not per event (docs/decisions.md). SQLite's own
auto-checkpoint runs inside the writer's commits; reads use their own connection in a worker
thread.

Back-pressure: after each commit and once a second the writer measures the files, the free
disk space and the commit latency; while any is past its limit, ``append`` raises
:class:`~headwater.errors.LogUnavailable` at once, before anything is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from headwater.config.workspace import LogConfig
from headwater.errors import LogClosed, LogError, LogUnavailable
from headwater.log.base import (
    DEDUPE_WINDOW_SECS,
    AppendResult,
    LogStats,
    Record,
    RetentionReport,
    StoredRecord,
)
from headwater.log.frames import pack, unpack
from headwater.log.notify import AppendSignal
from headwater.log.sqlite_reads import Reader

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DB_FILE = "events.sqlite"
DAY_MS = 86_400_000
MAX_GROUP_RECORDS = 20_000  # records per transaction, bounds commit latency
ROW_MAX_BYTES = 256 * 1024  # appends are packed into rows of about this size
HOUSEKEEPING_SECS = 1.0
RETENTION_EVERY_SECS = 30.0
MEASURE_EVERY_SECS = 0.1  # files, free space and latency are checked at most this often


_REFUSALS = {
    "disk_budget": "the event log is over its disk budget (log.disk_budget_bytes)",
    "disk_full": "the disk holding the event log is nearly full (log.min_free_disk_bytes)",
    "write_latency": "the event log's writes are too slow (log.max_write_latency_ms)",
    "overloaded": "too many events are waiting to be written (log.max_pending_records)",
    "writer_failed": "the event log's writer failed; see the server log",
}


def unavailable(reason: str) -> LogUnavailable:
    """The refusal for one back-pressure reason: what is wrong, which setting, what to do."""
    return LogUnavailable(
        f"{_REFUSALS.get(reason, reason)}; events were not stored, send them again later",
        reason=reason,
        retry_after_secs=5 if reason in ("write_latency", "overloaded") else 30,
    )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Append:
    """One request's records, packed: what the writer stores and what it answers."""

    packed: Packed
    future: asyncio.Future[list[AppendResult]]
    loop: asyncio.AbstractEventLoop
    queued_at: float

    @property
    def count(self) -> int:
        return self.packed.count


@dataclass(frozen=True, slots=True)
class Packed:
    """Records as the writer takes them; built by the caller (or by the writer process's parent)."""

    count: int
    blob: bytes  # frames.pack(records)
    ids: bytes  # the message ids as the inside of a JSON array: b'"a","b"'
    payload_bytes: int
    first_received_ms: int
    last_received_ms: int

    @classmethod
    def of(cls, records: Sequence[Record]) -> Packed:
        return cls(
            count=len(records),
            blob=pack(records),
            ids=orjson.dumps([r.message_id for r in records])[1:-1],
            payload_bytes=sum(len(r.payload) for r in records),
            first_received_ms=min(r.received_at_ms for r in records),
            last_received_ms=max(r.received_at_ms for r in records),
        )

    def records(self) -> list[Record]:
        return [
            Record(r.message_id, r.source, r.type, r.received_at_ms, r.payload)
            for r in unpack(0, self.blob)
        ]


@dataclass(slots=True)
class _Command:
    """Work that must run on the writer thread (it owns the only write connection)."""

    run: Callable[[sqlite3.Connection], object]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()
_Settled = tuple[asyncio.Future[list[AppendResult]], list[AppendResult]]


@dataclass(slots=True)
class _Segment:
    id: int
    first_offset: int | None
    last_offset: int | None
    records: int
    bytes: int
    first_received_ms: int | None
    last_received_ms: int | None
    created_ms: int
    sealed: bool

    @property
    def table(self) -> str:
        return f"seg_{self.id}"


@dataclass(slots=True)
class _State:
    """Owned by the writer thread; the event loop only reads ``SqliteLog.stats()``."""

    segments: list[_Segment] = field(default_factory=list)
    next_offset: int = 1
    id_days: list[int] = field(default_factory=list)  # days that have an ids_<day> table
    appended_total: int = 0
    duplicates_total: int = 0
    latency_ms: float = 0.0
    disk_bytes: int = 0


def _connect(path: Path, durability: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # auto_vacuum must be chosen before the file becomes a WAL database, or it is ignored
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA cache_size=-32000")
    return conn


class _SchemaMismatch(Exception):
    def __init__(self, found: int) -> None:
        super().__init__(f"schema version {found}")
        self.found = found


def _lock_directory(directory: Path, wait_secs: float) -> int:
    """Hold an exclusive lock on the log directory for the life of the process.

    Two processes writing one log would hand out the same offsets. The kernel drops the lock
    when the process dies, kill -9 included; waiting a little lets the writer of a server
    that was just killed finish dying.
    """
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_secs
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LogError(
                    f"another Headwater process is using the event log in {directory}; stop "
                    "it, or give this one its own --data-dir"
                ) from None
            time.sleep(0.05)


def _open_error(path: Path, exc: Exception) -> LogError:
    if isinstance(exc, _SchemaMismatch):
        return LogError(
            f"the event log at {path} has schema version {exc.found}; this Headwater reads "
            f"version {SCHEMA_VERSION}. Run the Headwater version that wrote it, or move the "
            "data directory aside to start with an empty log."
        )
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return LogError(
            f"cannot write the event log at {path} ({text}): check that the data directory "
            "exists, is writable by this user and is not on a read-only file system"
        )
    return LogError(
        f"cannot open the event log at {path} ({text}). If the file is damaged, move it "
        "aside (keep it for recovery) and start again with an empty log."
    )


class SqliteLog:
    """The embedded :class:`~headwater.log.base.EventLog` backend. See the module docstring."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        lock_wait_secs: float = 5.0,
    ) -> None:
        self._dir = directory
        self._config = config
        self._clock_ms = clock_ms
        self._path = directory / DB_FILE
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._refusing: str | None = None
        self._closed = False
        self._state = _State()
        self._snapshot = self._make_snapshot()
        self._stale = False
        self._next_measure = 0.0
        self._retention_due = 0.0
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(directory, lock_wait_secs)
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(self._path, config.durability)
            self._init_schema(conn)
            self._load_state(conn)
        except (sqlite3.Error, _SchemaMismatch) as exc:
            if conn is not None:
                conn.close()
            os.close(self._lock_fd)
            raise _open_error(self._path, exc) from exc
        self._measure_disk(conn)
        self._stale = True
        self._writer = threading.Thread(
            target=self._run_writer, args=(conn,), name="headwater-log-writer", daemon=True
        )
        self._reader = Reader(self._path)
        self._signal = AppendSignal(self._state.next_offset - 1)
        self._writer.start()

    # ------------------------------------------------------------------ the EventLog API

    async def append(self, records: Sequence[Record]) -> list[AppendResult]:
        if self._closed:
            raise LogClosed("the event log is closed")
        if not records:
            return []
        return await self.append_packed(Packed.of(records))

    async def append_packed(self, packed: Packed) -> list[AppendResult]:
        """``append`` for records packed already (the writer process takes them this way)."""
        if self._closed:
            raise LogClosed("the event log is closed")
        if self._refusing is not None:
            raise self._unavailable(self._refusing)
        with self._pending_lock:  # a lone request larger than the limit is still taken
            if self._pending and self._pending + packed.count > self._config.max_pending_records:
                raise self._unavailable("overloaded")
            self._pending += packed.count
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendResult]] = loop.create_future()
        self._queue.put(_Append(packed, future, loop, time.perf_counter()))
        if not self._writer.is_alive():  # it died between the checks above and the put
            self._fail_queued()
        results = await future
        self._signal.committed(results)
        return results

    async def read(self, after: int, limit: int = 500) -> list[StoredRecord]:
        return await self._reader.read(after, limit)

    async def get(self, message_id: str) -> StoredRecord | None:
        return await self._reader.find(message_id)

    async def wait(self, after: int, timeout_secs: float) -> bool:
        return await self._signal.wait(after, timeout_secs)

    @property
    def signal(self) -> AppendSignal:
        """Wakes readers of this process when records are committed."""
        return self._signal

    async def enforce_retention(self, now_ms: int | None = None) -> RetentionReport:
        report = await self._on_writer(lambda conn: self._retain(conn, now_ms))
        assert isinstance(report, RetentionReport)
        return report

    def stats(self) -> LogStats:
        if self._stale:  # built on demand: the writer only marks it stale
            self._stale = False
            self._snapshot = self._make_snapshot()
        return self._snapshot

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        await self._reader.close()
        os.close(self._lock_fd)

    # ------------------------------------------------------------------ helpers for callers

    def _unavailable(self, reason: str) -> LogUnavailable:
        return unavailable(reason)

    async def _on_writer(self, run: Callable[[sqlite3.Connection], object]) -> object:
        if self._closed:
            raise LogClosed("the event log is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._queue.put(_Command(run, future, loop))
        return await future

    # ------------------------------------------------------------------ schema and state

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_size_limit=67108864")
        # SQLite checkpoints inside the writer's commits (every 1,000 pages): under steady
        # writes a checkpoint from another connection never catches up with the writer, and
        # the WAL then grows without bound (measured: 234 MB in 3 s).
        conn.execute("PRAGMA wal_autocheckpoint=1000")
        conn.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS segments(id INTEGER PRIMARY KEY, first_offset INTEGER,"
            " last_offset INTEGER, records INTEGER NOT NULL, bytes INTEGER NOT NULL,"
            " first_received_ms INTEGER, last_received_ms INTEGER, created_ms INTEGER NOT NULL,"
            " sealed INTEGER NOT NULL)"
        )
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise _SchemaMismatch(int(row[0]))

    def _load_state(self, conn: sqlite3.Connection) -> None:
        state = self._state
        rows = conn.execute(
            "SELECT id, first_offset, last_offset, records, bytes, first_received_ms,"
            " last_received_ms, created_ms, sealed FROM segments ORDER BY id"
        ).fetchall()
        state.segments = [
            _Segment(
                id=row[0], first_offset=row[1], last_offset=row[2], records=row[3], bytes=row[4],
                first_received_ms=row[5], last_received_ms=row[6], created_ms=row[7],
                sealed=bool(row[8]),
            )
            for row in rows
        ]  # fmt: skip
        last = max((s.last_offset for s in state.segments if s.last_offset), default=0)
        # retention may have dropped every segment: offsets never go back (readers' cursors)
        row = conn.execute("SELECT value FROM meta WHERE key='next_offset'").fetchone()
        state.next_offset = max(last + 1, int(row[0]) if row else 1)
        names = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'ids\\_%' ESCAPE '\\'"
        ).fetchall()
        state.id_days = sorted(int(name[4:]) for (name,) in names)

    def _new_segment(self, conn: sqlite3.Connection, now_ms: int) -> _Segment:
        cur = conn.execute(
            "INSERT INTO segments(records, bytes, created_ms, sealed) VALUES (0, 0, ?, 0)",
            (now_ms,),
        )
        seg = _Segment(
            id=int(cur.lastrowid or 0), first_offset=None, last_offset=None, records=0, bytes=0,
            first_received_ms=None, last_received_ms=None, created_ms=now_ms, sealed=False,
        )  # fmt: skip
        conn.execute(
            f"CREATE TABLE {seg.table}(first_offset INTEGER PRIMARY KEY,"
            " last_offset INTEGER NOT NULL, data BLOB NOT NULL)"
        )
        self._state.segments.append(seg)
        return seg

    def _writable_segment(self, conn: sqlite3.Connection, now_ms: int) -> _Segment:
        segments = self._state.segments
        if segments and not segments[-1].sealed:
            seg = segments[-1]
            too_big = seg.bytes >= self._config.segment_max_bytes
            too_old = now_ms - seg.created_ms >= self._config.segment_max_age_secs * 1000
            if not (seg.records and (too_big or too_old)):
                return seg
            seg.sealed = True
            conn.execute("UPDATE segments SET sealed=1 WHERE id=?", (seg.id,))
        return self._new_segment(conn, now_ms)

    def _ids_table(self, conn: sqlite3.Connection, day: int) -> str:
        if day not in self._state.id_days:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS ids_{day}(message_id TEXT PRIMARY KEY,"
                " offset INTEGER NOT NULL) WITHOUT ROWID"
            )
            self._state.id_days.append(day)
            self._state.id_days.sort()
        return f"ids_{day}"

    # ------------------------------------------------------------------ the writer thread

    def _run_writer(self, conn: sqlite3.Connection) -> None:
        last_housekeeping = time.monotonic()
        try:
            while True:
                try:
                    first = self._queue.get(timeout=HOUSEKEEPING_SECS)
                except queue.Empty:
                    first = None
                batch, stop = self._drain(first)
                try:
                    appends = [item for item in batch if isinstance(item, _Append)]
                    if appends:
                        self._commit(conn, appends)
                    for item in batch:
                        if isinstance(item, _Command):
                            self._run_command(conn, item)
                    if time.monotonic() - last_housekeeping >= HOUSEKEEPING_SECS:
                        last_housekeeping = time.monotonic()
                        self._housekeeping(conn)
                except BaseException:
                    self._fail(batch)  # whatever was in hand gets an answer
                    raise
                if stop:
                    break
        except Exception:  # never leave callers waiting on a dead writer
            logger.exception("the event log's writer thread failed")
            self._refusing = "writer_failed"
            self._stale = True
            self._fail_queued()
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()

    def _drain(self, first: object) -> tuple[list[object], bool]:
        if first is None:
            return [], False
        if first is _STOP:
            return [], True
        batch = [first]
        count = first.count if isinstance(first, _Append) else 0
        while count < MAX_GROUP_RECORDS:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
            if isinstance(item, _Append):
                count += item.count
        return batch, False

    def _fail(self, items: list[object]) -> None:
        error = self._unavailable("writer_failed")
        for item in items:
            if isinstance(item, _Append | _Command):
                item.loop.call_soon_threadsafe(_settle, item.future, None, error)

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._fail([item])

    def _commit(self, conn: sqlite3.Connection, appends: list[_Append]) -> None:
        started = time.perf_counter()
        count = sum(a.count for a in appends)
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = self._insert(conn, appends)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            error = self._translate(exc)
            with self._pending_lock:
                self._pending -= count
            for a in appends:
                a.loop.call_soon_threadsafe(_settle, a.future, None, error)
            return
        with self._pending_lock:
            self._pending -= count
        elapsed_ms = (time.perf_counter() - started) * 1000
        waited_ms = (started - min(a.queued_at for a in appends)) * 1000
        state = self._state
        state.latency_ms = 0.8 * state.latency_ms + 0.2 * (elapsed_ms + waited_ms)
        if time.monotonic() >= self._next_measure:
            self._measure_disk(conn)
        self._stale = True  # before callers wake up and look at stats()
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
        for a, result in zip(appends, results, strict=True):
            by_loop.setdefault(a.loop, []).append((a.future, result))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_many, settled)

    def _insert(self, conn: sqlite3.Connection, appends: list[_Append]) -> list[list[AppendResult]]:
        """Store one group; the caller holds the transaction. Returns results per append."""
        state = self._state
        now_ms = self._clock_ms()
        day = now_ms // DAY_MS
        ids_table = self._ids_table(conn, day)
        ids_json = _ids_json(appends)
        known = self._known_ids(conn, [d for d in (day, day - 1) if d in state.id_days], ids_json)
        total = sum(a.count for a in appends)
        if known or len(set(orjson.loads(ids_json))) != total:
            appends, results = self._without_duplicates(appends, known)
            ids_json = _ids_json(appends)
        else:
            results = None
        seg = self._writable_segment(conn, now_ms)
        first = state.next_offset
        rows: list[tuple[int, int, bytes]] = []
        row_parts: list[bytes] = []
        row_first = offset = first
        row_bytes = 0
        for a in appends:
            if row_parts and row_bytes + len(a.packed.blob) > ROW_MAX_BYTES:
                rows.append((row_first, offset - 1, b"".join(row_parts)))
                row_parts, row_first, row_bytes = [], offset, 0
            row_parts.append(a.packed.blob)
            row_bytes += len(a.packed.blob)
            offset += a.count
        if row_parts:
            rows.append((row_first, offset - 1, b"".join(row_parts)))
        stored = offset - first
        if stored:
            conn.executemany(f"INSERT INTO {seg.table} VALUES (?,?,?)", rows)
            conn.execute(
                f"INSERT INTO {ids_table}(message_id, offset) SELECT value, ?1 + key"
                " FROM json_each(?2)",
                (first, ids_json),
            )
            received = [
                t for a in appends for t in (a.packed.first_received_ms, a.packed.last_received_ms)
            ]
            seg.first_offset = seg.first_offset or first
            seg.last_offset = offset - 1
            seg.records += stored
            seg.bytes += sum(a.packed.payload_bytes for a in appends)
            seg.first_received_ms = min(seg.first_received_ms or min(received), min(received))
            seg.last_received_ms = max(seg.last_received_ms or 0, max(received))
            conn.execute(
                "UPDATE segments SET first_offset=?, last_offset=?, records=?, bytes=?,"
                " first_received_ms=?, last_received_ms=? WHERE id=?",
                (seg.first_offset, seg.last_offset, seg.records, seg.bytes,
                 seg.first_received_ms, seg.last_received_ms, seg.id),
            )  # fmt: skip
        state.next_offset = offset
        state.appended_total += stored
        state.duplicates_total += total - stored
        if results is None:  # no duplicates: every record got the next offset
            results = []
            offset = first
            for a in appends:
                n = a.count
                results.append([AppendResult(o, False) for o in range(offset, offset + n)])
                offset += n
        return results

    def _known_ids(
        self, conn: sqlite3.Connection, days: list[int], ids_json: str
    ) -> dict[str, int]:
        if not days:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT j.value, i.offset FROM json_each(?1) j JOIN ids_{d} i"
            " ON i.message_id = j.value"
            for d in days
        )
        return dict(conn.execute(sql, (ids_json,)).fetchall())

    def _without_duplicates(
        self, appends: list[_Append], known: dict[str, int]
    ) -> tuple[list[_Append], list[list[AppendResult]]]:
        """The slow path: drop records already stored (or repeated in this group).

        Returns the appends to store (repacked) and the results for every original append,
        offsets counted from ``next_offset`` as the fast path does.
        """
        offset = self._state.next_offset
        seen = dict(known)
        kept_appends: list[_Append] = []
        results: list[list[AppendResult]] = []
        for a in appends:
            kept: list[Record] = []
            out: list[AppendResult] = []
            for r in a.packed.records():
                existing = seen.get(r.message_id)
                if existing is not None:
                    out.append(AppendResult(existing, True))
                    continue
                seen[r.message_id] = offset
                kept.append(r)
                out.append(AppendResult(offset, False))
                offset += 1
            results.append(out)
            if kept:
                repacked = _Append(Packed.of(kept), a.future, a.loop, a.queued_at)
                kept_appends.append(repacked)
        return kept_appends, results

    def _rollback(self, conn: sqlite3.Connection) -> None:
        """Undo a failed transaction and re-read the state it may have changed in memory."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        self._reload_after_rollback(conn)

    def _reload_after_rollback(self, conn: sqlite3.Connection) -> None:
        self._state.segments.clear()
        self._state.id_days.clear()
        self._load_state(conn)

    def _translate(self, exc: sqlite3.Error) -> LogError:
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
            self._refusing = "disk_full"
            return self._unavailable("disk_full")
        logger.error("the event log failed to write: %s", exc)
        return LogError(f"the event log could not store the events ({exc}); send them again")

    def _run_command(self, conn: sqlite3.Connection, command: _Command) -> None:
        result: object = None
        error: Exception | None = None
        try:
            result = command.run(conn)
        except Exception as exc:
            self._rollback(conn)
            error = exc
        self._stale = True
        command.loop.call_soon_threadsafe(_settle, command.future, result, error)

    def _housekeeping(self, conn: sqlite3.Connection) -> None:
        now = time.monotonic()
        if now >= self._retention_due or self._refusing in ("disk_budget", "disk_full"):
            self._retention_due = now + RETENTION_EVERY_SECS
            try:
                self._retain(conn, None)
            except sqlite3.Error:
                logger.exception("retention failed; will try again")
                self._rollback(conn)
        self._measure_disk(conn)
        self._stale = True

    # ------------------------------------------------------------------ retention

    def _retain(self, conn: sqlite3.Connection, now_ms: int | None) -> RetentionReport:
        now_ms = self._clock_ms() if now_ms is None else now_ms
        state = self._state
        cutoff = now_ms - self._config.retention_max_age_secs * 1000
        total = sum(s.bytes for s in state.segments)
        doomed: list[_Segment] = []
        for seg in state.segments:
            expired = seg.last_received_ms is not None and seg.last_received_ms < cutoff
            oversize = total > self._config.retention_max_bytes and seg is not state.segments[-1]
            if not (expired or oversize):
                break  # segments are in age order: keep this one and every newer one
            doomed.append(seg)
            total -= seg.bytes
        if not doomed and not self._expired_id_days(now_ms):
            return RetentionReport(0, 0, 0)
        kept = state.segments[len(doomed) :]
        oldest_kept = min((s.first_received_ms for s in kept if s.first_received_ms), default=None)
        expired_days = self._expired_id_days(now_ms, oldest_kept)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for seg in doomed:
                conn.execute(f"DROP TABLE IF EXISTS {seg.table}")
                conn.execute("DELETE FROM segments WHERE id=?", (seg.id,))
            for day in expired_days:
                conn.execute(f"DROP TABLE IF EXISTS ids_{day}")
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_offset', ?)",
                (str(state.next_offset),),
            )
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        state.segments = kept  # only once the drops are committed
        state.id_days = [d for d in state.id_days if d not in expired_days]
        # executescript steps the pragma to the end; execute() would free a single page
        conn.executescript("PRAGMA incremental_vacuum;")
        report = RetentionReport(
            segments_dropped=len(doomed),
            records_dropped=sum(s.records for s in doomed),
            bytes_dropped=sum(s.bytes for s in doomed),
        )
        if doomed:
            logger.info(
                "retention dropped %d segment(s), %d events", len(doomed), report.records_dropped
            )
        self._measure_disk(conn)
        return report

    def _expired_id_days(self, now_ms: int, oldest_kept_ms: int | None = None) -> list[int]:
        """Id tables no longer needed: past the dedupe window and holding no retained event."""
        window_start = (now_ms - DEDUPE_WINDOW_SECS * 1000) // DAY_MS
        segments = self._state.segments
        if oldest_kept_ms is None:
            oldest_kept_ms = min(
                (s.first_received_ms for s in segments if s.first_received_ms), default=now_ms
            )
        oldest_day = min(window_start, oldest_kept_ms // DAY_MS)
        return [d for d in self._state.id_days if d < oldest_day]

    # ------------------------------------------------------------------ back-pressure

    def _measure_disk(self, conn: sqlite3.Connection) -> None:
        """Bytes the log holds on disk (the main file's used pages plus the WAL), then whether
        writes must be refused now.

        Free pages in the main file are reused before the file grows, so they do not count.
        """
        self._next_measure = time.monotonic() + MEASURE_EVERY_SECS
        pages, free, page_size = (
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        wal = 0
        with contextlib.suppress(FileNotFoundError):
            wal = os.stat(f"{self._path}-wal").st_size
        self._state.disk_bytes = (pages - free) * page_size + wal
        self._update_refusing()

    def _update_refusing(self) -> None:
        config = self._config
        reason: str | None = None
        budget = config.disk_budget_bytes
        if budget is not None and self._state.disk_bytes >= budget:
            reason = "disk_budget"
        elif shutil.disk_usage(self._dir).free < config.min_free_disk_bytes:
            reason = "disk_full"
        elif self._state.latency_ms > config.max_write_latency_ms:
            reason = "write_latency"
        if self._refusing != reason:
            if reason:
                logger.warning("event log refusing writes: %s", reason)
            elif self._refusing:
                logger.warning("event log accepting writes again (was: %s)", self._refusing)
        self._refusing = reason
        if reason == "write_latency":
            # decay so that one slow commit does not refuse writes for ever when idle
            self._state.latency_ms *= 0.5

    # ------------------------------------------------------------------ stats

    def _make_snapshot(self) -> LogStats:
        state = self._state
        segs = state.segments
        with_data = [s for s in segs if s.records]
        return LogStats(
            first_offset=with_data[0].first_offset if with_data else None,
            last_offset=with_data[-1].last_offset if with_data else None,
            records=sum(s.records for s in segs),
            payload_bytes=sum(s.bytes for s in segs),
            disk_bytes=state.disk_bytes,
            segments=len(segs),
            oldest_received_at_ms=min(
                (s.first_received_ms for s in with_data if s.first_received_ms), default=None
            ),
            appended_total=state.appended_total,
            duplicates_total=state.duplicates_total,
            commit_latency_ms=state.latency_ms,
            refusing=self._refusing,
        )


def _ids_json(appends: list[_Append]) -> str:
    """The message ids of a group as one JSON array, bound as text (a blob would be JSONB)."""
    return "[" + b",".join(a.packed.ids for a in appends).decode() + "]"


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():
        return  # the caller went away (client disconnected); the write itself stands
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_many(settled: list[_Settled]) -> None:
    for future, result in settled:
        if not future.done():
            future.set_result(result)
