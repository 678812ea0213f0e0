"""Reads of the SQLite log (layout in :mod:`headwater.log.sqlite`), on a reader's connection.

Readers never take the write lock. Retention may drop a segment or an id table between the
moment a reader lists it and the moment it reads it; that table's events are gone by
design, so the reader goes on with the next. Every other error is raised.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from headwater.errors import LogClosed
from headwater.log.base import StoredRecord
from headwater.log.frames import unpack

T = TypeVar("T")


class Reader:
    """One read connection of the log's database, used on one worker thread of its own."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headwater-log-read")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def read(self, after: int, limit: int) -> list[StoredRecord]:
        return await self.run(lambda conn: read_after(conn, after, limit))

    async def find(self, message_id: str) -> StoredRecord | None:
        return await self.run(lambda conn: find(conn, message_id))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._conn.close)
        self._pool.shutdown(wait=True)

    async def run(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """``run(connection)`` on the reader's thread."""
        if self._closed:
            raise LogClosed("the event log is closed")

        def call() -> T:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, check_same_thread=False)
                self._conn.execute("PRAGMA busy_timeout=10000")
            return run(self._conn)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)


def _raise_unless_dropped(exc: sqlite3.OperationalError) -> None:
    if "no such table" not in str(exc):
        raise exc


def read_after(conn: sqlite3.Connection, after: int, limit: int) -> list[StoredRecord]:
    out: list[StoredRecord] = []
    segments = conn.execute(
        "SELECT id FROM segments WHERE last_offset > ? ORDER BY id", (after,)
    ).fetchall()
    for (seg_id,) in segments:
        try:
            rows = conn.execute(
                f"SELECT first_offset, data FROM seg_{seg_id} WHERE first_offset >="
                f" coalesce((SELECT max(first_offset) FROM seg_{seg_id}"
                " WHERE first_offset <= ?), 0) ORDER BY first_offset",
                (after,),
            )
            for first, data in rows:
                for record in unpack(first, data):
                    if record.offset > after:
                        out.append(record)
                        if len(out) >= limit:
                            return out
        except sqlite3.OperationalError as exc:
            _raise_unless_dropped(exc)  # else: dropped by retention since we listed it
    return out


def find(conn: sqlite3.Connection, message_id: str) -> StoredRecord | None:
    names = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'ids\\_%' ESCAPE '\\'"
    ).fetchall()
    for day in sorted((int(n[4:]) for (n,) in names), reverse=True):
        try:
            row = conn.execute(
                f"SELECT offset FROM ids_{day} WHERE message_id=?", (message_id,)
            ).fetchone()
        except sqlite3.OperationalError as exc:
            _raise_unless_dropped(exc)
            continue
        if row is None:
            continue
        return at_offset(conn, row[0])
    return None


def at_offset(conn: sqlite3.Connection, offset: int) -> StoredRecord | None:
    seg = conn.execute(
        "SELECT id FROM segments WHERE first_offset <= ?1 AND last_offset >= ?1", (offset,)
    ).fetchone()
    if seg is None:
        return None  # remembered for dedupe, but its segment was dropped
    row = conn.execute(
        f"SELECT first_offset, data FROM seg_{seg[0]} WHERE first_offset <= ?"
        " ORDER BY first_offset DESC LIMIT 1",
        (offset,),
    ).fetchone()
    if row is None:
        return None
    return next((r for r in unpack(row[0], row[1]) if r.offset == offset), None)


def connect_readonly(log_dir: Path) -> sqlite3.Connection:
    """A read-only connection to the log in ``log_dir``, for tools beside a running server."""
    path = log_dir / "events.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"no event log at {path}; check --data-dir")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def offsets_received_between(
    conn: sqlite3.Connection, since_ms: int, until_ms: int
) -> tuple[int, int] | None:
    """``(after, last)``: the offsets bounding every event received in ``[since_ms, until_ms)``
    (read after ``after`` up to ``last``), from the segments' time ranges; None when no
    retained segment overlaps the window."""
    row = conn.execute(
        "SELECT min(first_offset), max(last_offset) FROM segments"
        " WHERE last_received_ms >= ? AND first_received_ms < ? AND records > 0",
        (since_ms, until_ms),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]) - 1, int(row[1])
