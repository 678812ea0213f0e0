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

With ``state: {backend: postgres}`` the same tables, prefixed ``warehouse_`` (and syncs with
the ``node`` that ran them), are the cluster's, in the shared schema (migration 0009): every
worker node runs each warehouse's loop, but a sync happens only on the node that holds the
warehouse's *turn* (a session advisory lock), so syncs of one warehouse never overlap and
the interval is the cluster's, not each node's; requests made on any node are taken by the
next sync, wherever it runs. A node moved to shared state copies its file's history in once.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from headwater.state import postgres
from headwater.state.sql import SqlConn, StateUnavailable
from headwater.warehouses.schema import Discard

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

SCHEMA_VERSION = 1
DB_FILE = "state.sqlite"
HISTORY_KEPT = 500  # syncs kept per warehouse
DISCARDS_KEPT = 20_000  # discarded values remembered per warehouse, for the trace
DISCARDS_KEPT_PER_BATCH = 1000
TURN_LOCK_KEY = 0x4857_5748  # "HWWH": with a warehouse's key, the lock of its turn to sync
SYNC_COLUMNS = ("id, warehouse, started_ms, finished_ms, status, after_offset, last_offset, "
                "events, rows, discards, error, error_kind")  # fmt: skip

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
    node: str | None  # the node that ran it (shared state only)

    def as_dict(self) -> dict[str, Any]:
        duration = None if self.finished_ms is None else self.finished_ms - self.started_ms
        return {"id": self.id, "status": self.status, "startedMs": self.started_ms,
                "finishedMs": self.finished_ms, "durationMs": duration,
                "offsets": [self.after_offset, self.last_offset], "events": self.events,
                "rows": self.rows, "discards": self.discards, "error": self.error,
                "errorKind": self.error_kind, "node": self.node}  # fmt: skip


@dataclass
class Request:
    id: int
    kind: str
    since_ms: int | None


class WarehouseState:
    """The sync history: the data directory's SQLite file, or the cluster's tables in the
    shared PostgreSQL schema (``state: {backend: postgres}``: its tables are named
    ``warehouse_…``, see migration 0009). Every method is one short transaction (callers run
    them on a thread when they are on an event loop); one connection is used by one thread
    at a time."""

    def __init__(self, data_dir: Path, state: StateConfig | None = None,
                 node: str | None = None, reconnect_secs: float | None = None) -> None:  # fmt: skip
        """``reconnect_secs``: how long a call waits for PostgreSQL at most, when a reader
        must not wait the workspace's ``reconnect_secs`` (a gateway's status and metrics)."""
        self.path = data_dir / "warehouses" / DB_FILE
        self._reconnect_secs = reconnect_secs
        self._closed = False
        self.shared = postgres.uses_postgres(state)
        self.node = node  # who writes the syncs it begins (shown with shared state)
        self._state = state
        self._conn: SqlConn | None = None
        self._p = "warehouse_" if self.shared else ""  # the tables' prefix
        self._seq = "seq" if self.shared else "rowid"  # discarded's insertion order
        self._locked: set[str] = set()

    @property
    def conn(self) -> SqlConn:
        if self._closed:  # a call still in flight at stop must not open a new connection
            raise StateUnavailable(f"the warehouse state at {self.path} is closed")
        if self._conn is None:
            self._conn = postgres.store_conn(self._state, self.path, _SCHEMA,
                                             what="warehouse state", version=SCHEMA_VERSION,
                                             adopt=_adopt,
                                             reconnect_secs=self._reconnect_secs)  # fmt: skip
        return self._conn

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._locked.clear()

    def interrupt(self) -> None:
        """A call waiting for PostgreSQL gives up now, and none opens a connection (stop)."""
        self._closed = True
        if self._conn is not None:
            self._conn.interrupt()

    def try_turn(self, warehouse: str) -> bool:
        """With shared state: whether this node may sync ``warehouse`` now — a session
        advisory lock, which one node of the cluster holds at a time, until
        :meth:`end_turn` or its session ends. Locally the loader's lock file does this."""
        if not self.shared:
            return True
        got = self.conn.execute("SELECT pg_try_advisory_lock(?, ?)",
                                (TURN_LOCK_KEY, _key(warehouse))).fetchone()[0]  # fmt: skip
        if got:
            self._locked.add(warehouse)
        return bool(got)

    def end_turn(self, warehouse: str) -> None:
        if warehouse in self._locked:
            self._locked.discard(warehouse)
            # a session that was lost (and reconnected) holds nothing: false, not an error
            self.conn.execute("SELECT pg_advisory_unlock(?, ?)",
                              (TURN_LOCK_KEY, _key(warehouse)))  # fmt: skip

    def recent_start_ms(self, warehouse: str) -> int | None:
        """When the latest sync of ``warehouse`` started, by any node."""
        row = self.conn.execute(f"SELECT max(started_ms) FROM {self._p}syncs WHERE warehouse=?",
                                (warehouse,)).fetchone()  # fmt: skip
        return None if row is None or row[0] is None else int(row[0])

    def begin_sync(self, warehouse: str, after: int) -> int:
        def work() -> int:
            conn, p = self.conn, self._p
            conn.execute(
                f"UPDATE {p}syncs SET status='interrupted', finished_ms=coalesce(finished_ms, "
                "started_ms) WHERE warehouse=? AND status='running'",
                (warehouse,),
            )
            node = ", node" if self.shared else ""
            values = (warehouse, now_ms(), after, after) + ((self.node,) if self.shared else ())
            sync_id = int(conn.execute(
                f"INSERT INTO {p}syncs(warehouse, started_ms, status, after_offset, last_offset,"
                f" events, rows, discards{node}) VALUES (?, ?, 'running', ?, ?, 0, '{{}}', 0"
                f"{', ?' if self.shared else ''}) RETURNING id", values,
            ).fetchone()[0])  # fmt: skip
            conn.execute(f"DELETE FROM {p}syncs WHERE warehouse=? AND id <= ?",
                         (warehouse, sync_id - HISTORY_KEPT))  # fmt: skip
            return sync_id

        return self.conn.write_once(work)

    def restart_at(self, sync_id: int, warehouse: str, after: int) -> None:
        """The warehouse's own position, once it is open: where the sync really starts."""

        def work() -> None:
            self.conn.execute(f"UPDATE {self._p}syncs SET after_offset=?, last_offset=? WHERE "
                              "id=?", (after, after, sync_id))  # fmt: skip
            self.set_position(warehouse, after)

        self.conn.write_once(work)

    def progress(self, sync_id: int, warehouse: str, last: int, events: int,
                 rows: dict[str, int], discards: int, batch: dict[str, int],
                 discarded: Sequence[Discard] = ()) -> None:  # fmt: skip
        """After each committed batch: the sync's reach (``rows``, ``events`` and
        ``discards`` so far), the committed position, the batch's rows per table and the
        values it sent to ``_discards``."""
        p = self._p

        def work() -> None:
            conn = self.conn
            conn.execute(f"UPDATE {p}syncs SET last_offset=?, events=?, rows=?, discards=? "
                         "WHERE id=?", (last, events, orjson.dumps(rows).decode(), discards,
                                        sync_id))  # fmt: skip
            self.set_position(warehouse, last)
            conn.executemany(
                f"INSERT INTO {p}totals VALUES (?, ?, ?) ON CONFLICT (warehouse, table_name) DO"
                f" UPDATE SET rows = {p}totals.rows + excluded.rows",
                [(warehouse, table, n) for table, n in batch.items()],
            )
            if discarded:
                self._remember(sync_id, warehouse, discarded[:DISCARDS_KEPT_PER_BATCH])

        self.conn.write_once(work)

    def _remember(self, sync_id: int, warehouse: str, discarded: Sequence[Discard]) -> None:
        p, seq = self._p, self._seq
        self.conn.executemany(
            f"INSERT INTO {p}discarded(warehouse, row_id, sync_id, table_name, column_name, "
            "reason) VALUES (?, ?, ?, ?, ?, ?)",
            [(warehouse, d.row_id, sync_id, d.table, d.column, d.reason) for d in discarded],
        )
        self.conn.execute(
            f"DELETE FROM {p}discarded WHERE warehouse=? AND {seq} <= (SELECT max({seq}) FROM "
            f"{p}discarded) - ?", (warehouse, DISCARDS_KEPT))  # fmt: skip

    def discarded(self, warehouse: str, row_id: str) -> list[dict[str, Any]]:
        """What the syncs sent to ``_discards`` of one event (by messageId), newest first."""
        rows = self.conn.execute(
            f"SELECT sync_id, table_name, column_name, reason FROM {self._p}discarded"
            f" WHERE warehouse=? AND row_id=? ORDER BY {self._seq} DESC LIMIT 100",
            (warehouse, row_id),
        ).fetchall()
        return [{"sync": r[0], "table": r[1], "column": r[2], "reason": r[3]} for r in rows]

    def totals(self, warehouse: str) -> dict[str, int]:
        rows = self.conn.execute(f"SELECT table_name, rows FROM {self._p}totals WHERE "
                                 "warehouse=? ORDER BY table_name", (warehouse,))  # fmt: skip
        return {str(r[0]): int(r[1]) for r in rows}

    def set_position(self, warehouse: str, position: int) -> None:
        self.conn.execute(f"INSERT INTO {self._p}positions VALUES (?, ?, ?) ON CONFLICT "
                          "(warehouse) DO UPDATE SET position = excluded.position, "
                          "updated_ms = excluded.updated_ms",
                          (warehouse, position, now_ms()))  # fmt: skip

    def finish_sync(self, sync_id: int, status: str, error: str | None = None,
                    kind: str | None = None) -> None:  # fmt: skip
        self.conn.execute(f"UPDATE {self._p}syncs SET status=?, finished_ms=?, error=?, "
                          "error_kind=? WHERE id=?",
                          (status, now_ms(), error, kind, sync_id))  # fmt: skip

    def _columns(self) -> str:
        return SYNC_COLUMNS + (", node" if self.shared else ", NULL")

    def syncs(self, warehouse: str, limit: int = 20) -> list[SyncRecord]:
        rows = self.conn.execute(f"SELECT {self._columns()} FROM {self._p}syncs WHERE "
                                 "warehouse=? ORDER BY id DESC LIMIT ?",
                                 (warehouse, limit)).fetchall()  # fmt: skip
        return [_record(r) for r in rows]

    def sync_of(self, warehouse: str, offset: int) -> SyncRecord | None:
        """The sync that loaded the event at ``offset`` (the latest, after a backfill)."""
        row = self.conn.execute(
            f"SELECT {self._columns()} FROM {self._p}syncs WHERE warehouse=? AND after_offset"
            " < ? AND last_offset >= ? AND status != 'failed' ORDER BY id DESC LIMIT 1",
            (warehouse, offset, offset),
        ).fetchone()
        return None if row is None else _record(row)

    def position(self, warehouse: str) -> int | None:
        row = self.conn.execute(f"SELECT position FROM {self._p}positions WHERE warehouse=?",
                                (warehouse,)).fetchone()  # fmt: skip
        return None if row is None else int(row[0])

    def request(self, warehouse: str, kind: str, since_ms: int | None = None) -> int:
        def work() -> int:  # exactly once, even when the answer to its COMMIT is lost
            row = self.conn.execute(
                f"INSERT INTO {self._p}requests(warehouse, kind, since_ms, requested_ms) VALUES"
                " (?, ?, ?, ?) RETURNING id",
                (warehouse, kind, since_ms, now_ms()),
            ).fetchone()
            return int(row[0])

        return self.conn.write_once(work)

    def waiting(self, warehouse: str) -> bool:
        """Whether a request for ``warehouse`` waits to be taken."""
        row = self.conn.execute(f"SELECT 1 FROM {self._p}requests WHERE warehouse=? AND "
                                "taken_ms IS NULL LIMIT 1", (warehouse,)).fetchone()  # fmt: skip
        return row is not None

    def take_requests(self, warehouse: str) -> list[Request]:
        """The requests waiting, oldest first, marked taken in one statement (two nodes
        never take one request). A read first: the loop asks every second, and most times
        nothing waits, which needs no write."""
        if not self.waiting(warehouse):
            return []

        def work() -> list[Any]:  # a lost answer must not leave requests taken and not done
            return self.conn.execute(
                f"UPDATE {self._p}requests SET taken_ms=? WHERE warehouse=? AND taken_ms IS NULL"
                " RETURNING id, kind, since_ms",
                (now_ms(), warehouse),
            ).fetchall()

        rows = self.conn.write_once(work)
        return sorted((Request(int(r[0]), str(r[1]), r[2]) for r in rows), key=lambda r: r.id)

    def request_done(self, request_id: int) -> bool:
        """True once a sync that started after the request was taken has finished."""
        row = self.conn.execute(f"SELECT warehouse, taken_ms FROM {self._p}requests WHERE id=?",
                                (request_id,)).fetchone()  # fmt: skip
        if row is None or row[1] is None:
            return False
        done = self.conn.execute(
            f"SELECT 1 FROM {self._p}syncs WHERE warehouse=? AND started_ms >= ? AND"
            " status != 'running' LIMIT 1",
            (row[0], row[1]),
        ).fetchone()
        return done is not None


def _record(row: Sequence[Any]) -> SyncRecord:
    return SyncRecord(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                      orjson.loads(row[8]), row[9], row[10], row[11], row[12])  # fmt: skip


def _key(warehouse: str) -> int:
    """The second half of a warehouse's turn lock: a signed 32-bit hash of its name."""
    return int.from_bytes(hashlib.blake2b(warehouse.encode(), digest_size=4).digest(), "big",
                          signed=True)  # fmt: skip


def _adopt(conn: SqlConn, local: sqlite3.Connection) -> str:
    """A node's sync history from before shared state, into the cluster's: its syncs (new
    ids, in their order), the values they discarded, its rows per table (added), its copy of
    each warehouse's position (the newest copy wins; the warehouse's own is the truth anyway)
    and the requests it had not taken yet."""
    ids: dict[int, int] = {}
    for row in local.execute(f"SELECT {SYNC_COLUMNS} FROM syncs ORDER BY id"):
        ids[int(row[0])] = int(conn.execute(
            f"INSERT INTO warehouse_syncs({SYNC_COLUMNS.replace('id, ', '', 1)}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id", tuple(row[1:]),
        ).fetchone()[0])  # fmt: skip
    discarded = [(w, r, ids[s], t, c, why) for w, r, s, t, c, why in local.execute(
        "SELECT warehouse, row_id, sync_id, table_name, column_name, reason FROM discarded "
        "ORDER BY rowid") if s in ids]  # fmt: skip
    conn.executemany("INSERT INTO warehouse_discarded(warehouse, row_id, sync_id, table_name, "
                     "column_name, reason) VALUES (?, ?, ?, ?, ?, ?)", discarded)  # fmt: skip
    conn.executemany("INSERT INTO warehouse_totals VALUES (?, ?, ?) ON CONFLICT (warehouse, "
                     "table_name) DO UPDATE SET rows = warehouse_totals.rows + excluded.rows",
                     local.execute("SELECT warehouse, table_name, rows FROM totals"))  # fmt: skip
    conn.executemany("INSERT INTO warehouse_positions VALUES (?, ?, ?) ON CONFLICT (warehouse) "
                     "DO UPDATE SET position = excluded.position, updated_ms = "
                     "excluded.updated_ms WHERE excluded.updated_ms > "
                     "warehouse_positions.updated_ms",
                     local.execute("SELECT warehouse, position, updated_ms FROM positions"),
                     )  # fmt: skip
    waiting = list(local.execute("SELECT warehouse, kind, since_ms, requested_ms FROM requests "
                                 "WHERE taken_ms IS NULL ORDER BY id"))  # fmt: skip
    conn.executemany("INSERT INTO warehouse_requests(warehouse, kind, since_ms, requested_ms) "
                     "VALUES (?, ?, ?, ?)", waiting)  # fmt: skip
    return (f"{len(ids)} warehouse sync{'' if len(ids) == 1 else 's'} copied, with "
            f"{len(discarded)} discarded value{'' if len(discarded) == 1 else 's'} and "
            f"{len(waiting)} waiting request{'' if len(waiting) == 1 else 's'}")  # fmt: skip
