"""Counts per source and minute of what happened at ingest, kept across restarts.

The delivery ledger knows what happened with each destination; this knows what happened
before the log: events received, duplicates, requests and items refused (per reason), and
events the processor blocked or changed (tracking plans, source transformations). The
Delivery Overview and diagnose read windows of it ("last hour", "last week").

Counting is a dict increment on the hot path; a background task writes the counts to
``<data-dir>/observe/flow.sqlite`` every ``flush_secs`` (10 s). A crash loses at most
the counts of that interval — never an event: the log and the ledger hold those.

Storage layout (WAL), or with ``state: {backend: postgres}`` the same tables in the
workspace's PostgreSQL schema, where every gateway adds its counts to the same rows:

    flow(minute, source, step, count, PRIMARY KEY(minute, source, step))
        ``minute`` is epoch milliseconds rounded down to the minute; ``step`` is one of
        ``received``, ``duplicate``, ``rejected:<code>``, ``blocked:<reason>``,
        ``violations``, ``transformed``; ``source`` is the source's name, or the rejection's
        scope when no source was known: ``key:*`` for every unknown write key together (their
        prefixes are in the in-memory samples, so random keys cannot grow this table) and
        ``unknown`` when no key was sent.
    decisions(message_id PRIMARY KEY, source, at_ms, decisions)
        what the processor decided about a stored event at ingest (violations allowed,
        properties omitted, transformations), as a JSON list, for the event's trace; only
        events something was decided about have a row. Written with the counts; kept as
        long as the log keeps events, and at most ``MAX_DECISION_ROWS`` rows (the oldest go
        first; a trace then shows the event without its decisions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from headwater.sqlite_files import open_store
from headwater.state import postgres
from headwater.state.sql import SqlConn, SqliteConn

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

logger = logging.getLogger("headwater.observe")

DB_FILE = "flow.sqlite"
MINUTE_MS = 60_000
FLUSH_SECS = 10.0
MAX_PENDING_DECISIONS = 200_000  # a stuck disk must not grow memory without bound
KEEP_MS = 31 * 86_400_000  # the counts: a month of windows
MAX_DECISION_ROWS = 1_000_000  # ~270 MB: the traces' decisions of the newest million events

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flow(minute INTEGER NOT NULL, source TEXT NOT NULL,
    step TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY(minute, source, step))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions(message_id TEXT PRIMARY KEY, source TEXT NOT NULL,
    at_ms INTEGER NOT NULL, decisions BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(at_ms);
"""


def _minute(at_ms: int) -> int:
    return at_ms - at_ms % MINUTE_MS


class FlowDB:
    """The counts on one connection (the server's writer thread, or a CLI): a SQLite file,
    or PostgreSQL with :meth:`open`."""

    def __init__(self, path: Path | None = None, *, conn: SqlConn | None = None) -> None:
        if conn is None:
            if path is None:
                raise TypeError("FlowDB needs a path or a connection")
            conn = SqliteConn(open_store(path, _SCHEMA, what="flow counts", version=None),
                              str(path))  # fmt: skip
        self.conn = conn

    @classmethod
    def open(cls, data_dir: Path, state: StateConfig | None = None) -> FlowDB:
        """The counts where the workspace keeps them: ``data_dir``'s file, or PostgreSQL."""
        if postgres.uses_postgres(state):
            return cls(conn=postgres.connect(state))
        return cls(data_dir / DB_FILE)

    def add(
        self,
        counts: Iterable[tuple[int, str, str, int]],
        decisions: Iterable[tuple[str, str, int, bytes]] = (),
    ) -> None:
        """Add the counts (several gateways add to the same rows) and keep the decisions, in
        one transaction that is applied at most once (a lost COMMIT answer is looked up)."""
        counts, decisions = list(counts), list(decisions)

        def work() -> None:
            self.conn.executemany(
                "INSERT INTO flow(minute, source, step, count) VALUES (?, ?, ?, ?) ON CONFLICT"
                "(minute, source, step) DO UPDATE SET count = flow.count + excluded.count",
                counts,
            )
            self.conn.executemany(
                "INSERT INTO decisions(message_id, source, at_ms, decisions) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(message_id) DO UPDATE SET source=excluded.source,"
                " at_ms=excluded.at_ms, decisions=excluded.decisions",
                decisions,
            )

        self.conn.write_once(work)

    def decisions(self, message_id: str) -> list[dict[str, Any]]:
        row = self.conn.execute(
            "SELECT decisions FROM decisions WHERE message_id=?", (message_id,)
        ).fetchone()
        return [] if row is None else list(orjson.loads(row[0]))

    def totals(self, since_ms: int, until_ms: int, source: str | None = None) -> Counter[str]:
        """Counts per step in ``[since, until)`` (whole minutes), for a source or all."""
        sql = "SELECT step, CAST(SUM(count) AS BIGINT) FROM flow WHERE minute >= ? AND minute < ?"
        args: list[object] = [_minute(since_ms), until_ms]
        if source is not None:
            sql += " AND source = ?"
            args.append(source)
        return Counter(dict(self.conn.execute(sql + " GROUP BY step", args).fetchall()))

    def by_source(self, since_ms: int, until_ms: int) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for source, step, count in self.conn.execute(
            "SELECT source, step, CAST(SUM(count) AS BIGINT) FROM flow WHERE minute >= ?"
            " AND minute < ? "
            "GROUP BY source, step",
            (_minute(since_ms), until_ms),
        ):
            out.setdefault(source, Counter())[step] = count
        return out

    def prune(self, before_ms: int) -> None:
        """Counts older than ``before_ms`` go."""
        self.conn.execute("DELETE FROM flow WHERE minute < ?", (before_ms,))

    def decision_rows(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM decisions").fetchone()[0])

    def prune_decisions(self, before_ms: int, max_rows: int) -> int:
        """Decisions older than ``before_ms`` (the log's retention: their events are gone)
        go, and the oldest beyond ``max_rows``; returns the rows left."""
        no_limit = "LIMIT -1" if self.conn.dialect == "sqlite" else "LIMIT ALL"

        def work() -> None:
            self.conn.execute("DELETE FROM decisions WHERE at_ms < ?", (before_ms,))
            self.conn.execute(
                "DELETE FROM decisions WHERE message_id IN (SELECT message_id FROM decisions"
                f" ORDER BY at_ms DESC {no_limit} OFFSET ?)",
                (max_rows,),
            )

        self.conn.write_once(work)
        return self.decision_rows()

    def close(self) -> None:
        self.conn.close()


class Flow:
    """Counts kept in memory and written every ``flush_secs``; reads include unwritten ones."""

    def __init__(
        self,
        data_dir: Path,
        flush_secs: float = FLUSH_SECS,
        decisions_keep_secs: float = 7 * 86_400,
        max_decision_rows: int = MAX_DECISION_ROWS,
        state: StateConfig | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.state = state
        self.flush_secs = flush_secs
        self._pending: Counter[tuple[int, str, str]] = Counter()
        self._decisions: list[tuple[str, str, int, bytes]] = []
        self.decisions_keep_secs = decisions_keep_secs
        self.max_decision_rows = max_decision_rows
        self._decision_rows = 0  # rows in the table, as of the last prune plus those written
        self._db: FlowDB | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headwater-flow")
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._pool, FlowDB.open, self.data_dir, self.state)
        self._decision_rows = await loop.run_in_executor(self._pool, self._db.decision_rows)
        self._task = asyncio.create_task(self._run(), name="headwater-flow")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._db is not None:
            await self.flush()
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        self._pool.shutdown(wait=True)

    def add(self, source: str, step: str, count: int = 1, at_ms: int | None = None) -> None:
        """Count ``count`` events of ``source`` at ``step`` (now, unless ``at_ms``)."""
        if count:
            at = time.time_ns() // 1_000_000 if at_ms is None else at_ms
            key = (at - at % MINUTE_MS, source, step)
            pending = self._pending
            pending[key] = pending.get(key, 0) + count

    def decided(
        self, message_id: str, source: str, at_ms: int, decisions: list[dict[str, Any]]
    ) -> None:
        """Keep what was decided about a stored event, for its trace."""
        self._decisions.append((message_id, source, at_ms, orjson.dumps(decisions)))
        if len(self._decisions) >= MAX_PENDING_DECISIONS:
            self._decisions = self._decisions[-MAX_PENDING_DECISIONS:]

    async def flush(self) -> None:
        if (not self._pending and not self._decisions) or self._db is None:
            return
        pending, self._pending = self._pending, Counter()
        decisions, self._decisions = self._decisions, []
        rows = [(m, s, step, n) for (m, s, step), n in pending.items()]
        db = self._db
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, db.add, rows, decisions)
            self._decision_rows += len(decisions)
        except Exception:
            self._pending.update(pending)  # try again next time
            self._decisions[:0] = decisions
            raise

    async def decisions(self, message_id: str) -> list[dict[str, Any]]:
        if any(d[0] == message_id for d in self._decisions):
            await self.flush()
        db = self._require()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, db.decisions, message_id
        )

    async def totals(self, since_ms: int, until_ms: int, source: str | None = None) -> Counter[str]:
        await self.flush()
        db = self._require()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, db.totals, since_ms, until_ms, source
        )

    async def by_source(self, since_ms: int, until_ms: int) -> dict[str, Counter[str]]:
        await self.flush()
        db = self._require()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, db.by_source, since_ms, until_ms
        )

    def _require(self) -> FlowDB:
        if self._db is None:
            raise RuntimeError("the flow counts are not open")
        return self._db

    async def _run(self) -> None:
        pruned_at = 0.0
        while True:
            await asyncio.sleep(self.flush_secs)
            try:
                await self.flush()
                now_ms = time.time_ns() // 1_000_000
                db = self._require()
                loop = asyncio.get_running_loop()
                if time.monotonic() - pruned_at > 3600:
                    pruned_at = time.monotonic()
                    await loop.run_in_executor(self._pool, db.prune, now_ms - KEEP_MS)
                    self._decision_rows = self.max_decision_rows + 1  # prune them too, now
                if self._decision_rows > self.max_decision_rows:
                    keep_from = now_ms - int(self.decisions_keep_secs * 1000)
                    self._decision_rows = await loop.run_in_executor(
                        self._pool, db.prune_decisions, keep_from, self.max_decision_rows
                    )
            except Exception:
                logger.exception("cannot write the ingest flow counts")
