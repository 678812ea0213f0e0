"""Sync history and requests, beside the warehouses: what status, the API, the console, trace
and diagnose read without touching a warehouse (which may be down, or a DuckDB file an
analyst holds).

Storage layout, in ``<data-dir>/warehouses/state.sqlite`` (WAL):

    meta(key PRIMARY KEY, value)                     schema_version
    syncs(id PRIMARY KEY, warehouse, started_ms, finished_ms, status, after_offset,
          last_offset, events, rows, discards, error, error_kind)
        one row per sync: ``status`` is ``running``, ``success`` (every batch loaded),
        ``partial`` (some batches loaded, then a failure) or ``failed`` (nothing loaded);
        ``rows`` is JSON ``{"schema.table": n}``; the sync loaded the events with offsets
        in ``(after_offset, last_offset]``. A sync the process did not finish (killed) stays
        ``running`` until the next sync of that warehouse marks it ``interrupted``.
    positions(warehouse PRIMARY KEY, position, updated_ms)
        a copy of the committed position the warehouse holds (``_headwater.sync_state``),
        for lag; the warehouse's own is the truth.
    totals(warehouse, table_name, rows)
        rows loaded per ``schema.table`` since the warehouse was first synced (for status and
        ``headwater_warehouse_rows_loaded_total``).
    discarded(warehouse, row_id, sync_id, table_name, column_name, reason)
        the values each sync sent to ``_discards`` (at most ``DISCARDS_KEPT_PER_BATCH`` per
        batch and ``DISCARDS_KEPT`` per warehouse, newest kept), so the trace of a messageId
        can say which of its values went there and why without opening the warehouse.
    requests(id PRIMARY KEY, warehouse, kind, since_ms, requested_ms, taken_ms)
        ``sync`` (now) and ``backfill`` (from ``since_ms``) asked for by the CLI or the API;
        the loader takes them within a second.

The loader (in the delivery worker) writes; every other process only reads it, or adds
requests.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from headwater.sqlite_files import open_store
from headwater.warehouses.schema import Discard

SCHEMA_VERSION = 1
DB_FILE = "state.sqlite"
HISTORY_KEPT = 500  # syncs kept per warehouse
DISCARDS_KEPT = 20_000  # discarded values remembered per warehouse, for the trace
DISCARDS_KEPT_PER_BATCH = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS syncs(id INTEGER PRIMARY KEY, warehouse TEXT NOT NULL,
    started_ms INTEGER NOT NULL, finished_ms INTEGER, status TEXT NOT NULL,
    after_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL, events INTEGER NOT NULL,
    rows TEXT NOT NULL, discards INTEGER NOT NULL, error TEXT, error_kind TEXT);
CREATE INDEX IF NOT EXISTS syncs_by_warehouse ON syncs(warehouse, id);
CREATE TABLE IF NOT EXISTS positions(warehouse TEXT PRIMARY KEY, position INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals(warehouse TEXT NOT NULL, table_name TEXT NOT NULL,
    rows INTEGER NOT NULL, PRIMARY KEY (warehouse, table_name));
CREATE TABLE IF NOT EXISTS discarded(warehouse TEXT NOT NULL, row_id TEXT NOT NULL,
    sync_id INTEGER NOT NULL, table_name TEXT NOT NULL, column_name TEXT NOT NULL,
    reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS discarded_by_row ON discarded(warehouse, row_id);
CREATE TABLE IF NOT EXISTS requests(id INTEGER PRIMARY KEY, warehouse TEXT NOT NULL,
    kind TEXT NOT NULL, since_ms INTEGER, requested_ms INTEGER NOT NULL, taken_ms INTEGER);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SyncRecord:
    id: int
    warehouse: str
    started_ms: int
    finished_ms: int | None
    status: str
    after_offset: int
    last_offset: int
    events: int
    rows: dict[str, int]
    discards: int
    error: str | None
    error_kind: str | None

    def as_dict(self) -> dict[str, Any]:
        duration = None if self.finished_ms is None else self.finished_ms - self.started_ms
        return {"id": self.id, "status": self.status, "startedMs": self.started_ms,
                "finishedMs": self.finished_ms, "durationMs": duration,
                "offsets": [self.after_offset, self.last_offset], "events": self.events,
                "rows": self.rows, "discards": self.discards, "error": self.error,
                "errorKind": self.error_kind}  # fmt: skip


@dataclass
class Request:
    id: int
    kind: str
    since_ms: int | None


class WarehouseState:
    """The state file; every method is one short transaction (callers run them on a thread
    when they are on an event loop)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "warehouses" / DB_FILE
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_store(self.path, _SCHEMA, what="warehouse state",
                                    version=SCHEMA_VERSION)  # fmt: skip
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def begin_sync(self, warehouse: str, after: int) -> int:
        conn = self.conn
        conn.execute(
            "UPDATE syncs SET status='interrupted', finished_ms=coalesce(finished_ms, "
            "started_ms) WHERE warehouse=? AND status='running'",
            (warehouse,),
        )
        cur = conn.execute(
            "INSERT INTO syncs(warehouse, started_ms, status, after_offset, last_offset, events,"
            " rows, discards) VALUES (?, ?, 'running', ?, ?, 0, '{}', 0)",
            (warehouse, now_ms(), after, after),
        )
        conn.execute("DELETE FROM syncs WHERE warehouse=? AND id <= ?",
                     (warehouse, int(cur.lastrowid or 0) - HISTORY_KEPT))  # fmt: skip
        return int(cur.lastrowid or 0)

    def restart_at(self, sync_id: int, warehouse: str, after: int) -> None:
        """The warehouse's own position, once it is open: where the sync really starts."""
        self.conn.execute("UPDATE syncs SET after_offset=?, last_offset=? WHERE id=?",
                          (after, after, sync_id))  # fmt: skip
        self.set_position(warehouse, after)

    def progress(self, sync_id: int, warehouse: str, last: int, events: int,
                 rows: dict[str, int], discards: int, batch: dict[str, int],
                 discarded: Sequence[Discard] = ()) -> None:  # fmt: skip
        """After each committed batch: the sync's reach (``rows``, ``events`` and
        ``discards`` so far), the committed position, the batch's rows per table and the
        values it sent to ``_discards``."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("UPDATE syncs SET last_offset=?, events=?, rows=?, discards=? "
                              "WHERE id=?", (last, events, orjson.dumps(rows).decode(),
                                             discards, sync_id))  # fmt: skip
            self.set_position(warehouse, last)
            self.conn.executemany(
                "INSERT INTO totals VALUES (?, ?, ?) ON CONFLICT (warehouse, table_name) DO "
                "UPDATE SET rows = rows + excluded.rows",
                [(warehouse, table, n) for table, n in batch.items()],
            )
            if discarded:
                self._remember(sync_id, warehouse, discarded[:DISCARDS_KEPT_PER_BATCH])

    def _remember(self, sync_id: int, warehouse: str, discarded: Sequence[Discard]) -> None:
        self.conn.executemany(
            "INSERT INTO discarded VALUES (?, ?, ?, ?, ?, ?)",
            [(warehouse, d.row_id, sync_id, d.table, d.column, d.reason) for d in discarded],
        )
        self.conn.execute(
            "DELETE FROM discarded WHERE warehouse=? AND rowid <= (SELECT max(rowid) FROM "
            "discarded) - ?", (warehouse, DISCARDS_KEPT))  # fmt: skip

    def discarded(self, warehouse: str, row_id: str) -> list[dict[str, Any]]:
        """What the syncs sent to ``_discards`` of one event (by messageId), newest first."""
        rows = self.conn.execute(
            "SELECT sync_id, table_name, column_name, reason FROM discarded"
            " WHERE warehouse=? AND row_id=? ORDER BY rowid DESC LIMIT 100",
            (warehouse, row_id),
        ).fetchall()
        return [{"sync": r[0], "table": r[1], "column": r[2], "reason": r[3]} for r in rows]

    def totals(self, warehouse: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT table_name, rows FROM totals WHERE warehouse=? ORDER BY"
                                 " table_name", (warehouse,)).fetchall()  # fmt: skip
        return {str(r[0]): int(r[1]) for r in rows}

    def set_position(self, warehouse: str, position: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
                          (warehouse, position, now_ms()))  # fmt: skip

    def finish_sync(self, sync_id: int, status: str, error: str | None = None,
                    kind: str | None = None) -> None:  # fmt: skip
        self.conn.execute("UPDATE syncs SET status=?, finished_ms=?, error=?, error_kind=? "
                          "WHERE id=?", (status, now_ms(), error, kind, sync_id))  # fmt: skip

    def syncs(self, warehouse: str, limit: int = 20) -> list[SyncRecord]:
        rows = self.conn.execute("SELECT * FROM syncs WHERE warehouse=? ORDER BY id DESC "
                                 "LIMIT ?", (warehouse, limit)).fetchall()  # fmt: skip
        return [_record(r) for r in rows]

    def sync_of(self, warehouse: str, offset: int) -> SyncRecord | None:
        """The sync that loaded the event at ``offset`` (the latest, after a backfill)."""
        row = self.conn.execute(
            "SELECT * FROM syncs WHERE warehouse=? AND after_offset < ? AND last_offset >= ? "
            "AND status != 'failed' ORDER BY id DESC LIMIT 1",
            (warehouse, offset, offset),
        ).fetchone()
        return None if row is None else _record(row)

    def position(self, warehouse: str) -> int | None:
        row = self.conn.execute("SELECT position FROM positions WHERE warehouse=?",
                                (warehouse,)).fetchone()  # fmt: skip
        return None if row is None else int(row[0])

    def request(self, warehouse: str, kind: str, since_ms: int | None = None) -> int:
        cur = self.conn.execute(
            "INSERT INTO requests(warehouse, kind, since_ms, requested_ms) VALUES (?, ?, ?, ?)",
            (warehouse, kind, since_ms, now_ms()),
        )
        return int(cur.lastrowid or 0)

    def take_requests(self, warehouse: str) -> list[Request]:
        rows = self.conn.execute(
            "SELECT id, kind, since_ms FROM requests WHERE warehouse=? AND "
            "taken_ms IS NULL ORDER BY id",
            (warehouse,),
        ).fetchall()
        if rows:
            self.conn.execute("UPDATE requests SET taken_ms=? WHERE warehouse=? AND taken_ms IS "
                              "NULL AND id <= ?", (now_ms(), warehouse, rows[-1][0]))  # fmt: skip
        return [Request(int(r[0]), str(r[1]), r[2]) for r in rows]

    def request_done(self, request_id: int) -> bool:
        """True once a sync that started after the request was taken has finished."""
        row = self.conn.execute("SELECT warehouse, taken_ms FROM requests WHERE id=?",
                                (request_id,)).fetchone()  # fmt: skip
        if row is None or row[1] is None:
            return False
        done = self.conn.execute(
            "SELECT 1 FROM syncs WHERE warehouse=? AND started_ms >= ? AND"
            " status != 'running' LIMIT 1",
            (row[0], row[1]),
        ).fetchone()
        return done is not None


def _record(row: tuple[Any, ...]) -> SyncRecord:
    return SyncRecord(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                      orjson.loads(row[8]), row[9], row[10], row[11])  # fmt: skip
