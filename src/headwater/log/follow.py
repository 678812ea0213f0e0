"""The SQLite log as a process that does not write it sees it: a follower.

The delivery worker runs in a process of its own (docs/architecture.md) and reads the log
the gateway's writer appends to, as a WAL reader on its own connection. It learns of new
records from a :class:`~headwater.log.notify.WakeListener` (the gateway sends the newest
committed offset) and, in case a wakeup is lost, by looking at the file every
``poll_secs``. Appending and retention belong to the writer: a follower refuses both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from headwater.errors import LogError
from headwater.log.base import AppendResult, LogStats, Record, RetentionReport, StoredRecord
from headwater.log.notify import AppendSignal, WakeListener
from headwater.log.sqlite import DB_FILE
from headwater.log.sqlite_reads import Reader

logger = logging.getLogger(__name__)

POLL_SECS = 0.5
_STATS_SQL = (
    "SELECT min(first_offset), max(last_offset), coalesce(sum(records), 0),"
    " coalesce(sum(bytes), 0), count(*), min(first_received_ms) FROM segments WHERE records > 0"
)


_DiskStats = tuple[int | None, int | None, int, int, int, int | None]


def _disk_stats(conn: sqlite3.Connection) -> _DiskStats:
    row = conn.execute(_STATS_SQL).fetchone()
    return row[0], row[1], int(row[2]), int(row[3]), int(row[4]), row[5]


class FollowerLog:
    """A read-only :class:`~headwater.log.base.EventLog` on the log in ``directory``."""

    def __init__(self, directory: Path, wake_path: Path | None, poll_secs: float = POLL_SECS):
        path = directory / DB_FILE
        if not path.exists():
            raise LogError(f"no event log at {path}; the gateway (log writer) creates it")
        self._path = path
        self._reader = Reader(path)
        self._stats = LogStats(None, None, 0, 0, 0, 0, None, 0, 0, 0.0, None)
        self._signal = AppendSignal(0)
        self._wake_path = wake_path
        self._listener: WakeListener | None = None
        self._poll_secs = poll_secs
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> None:
        """Read where the log stands, and listen for wakeups (on the running loop)."""
        await self.refresh()
        if self._wake_path is not None:
            self._listener = WakeListener(self._wake_path, self._signal)
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="log:follow")

    async def refresh(self) -> None:
        first, last, records, size, segments, oldest = await self._reader.run(_disk_stats)
        self._stats = LogStats(first, last, records, size, size, segments, oldest, 0, 0, 0.0,
                               None)  # fmt: skip
        if last is not None:
            self._signal.advance(last)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_secs)
            try:
                await self.refresh()
            except (LogError, sqlite3.Error) as exc:
                if self._closed:
                    return
                logger.warning("cannot read the log's state: %s", exc)

    async def append(self, records: Sequence[Record]) -> list[AppendResult]:
        raise LogError("this process follows the log; only the gateway's writer appends")

    async def read(self, after: int, limit: int = 500) -> list[StoredRecord]:
        return await self._reader.read(after, limit)

    async def get(self, message_id: str) -> StoredRecord | None:
        return await self._reader.find(message_id)

    async def wait(self, after: int, timeout_secs: float) -> bool:
        return await self._signal.wait(after, timeout_secs)

    async def enforce_retention(self, now_ms: int | None = None) -> RetentionReport:
        raise LogError("retention runs in the log's writer, not in a follower")

    def stats(self) -> LogStats:
        last = self._signal.last_offset or None
        if last is not None and (self._stats.last_offset or 0) < last:
            return replace(self._stats, last_offset=last)
        return self._stats

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._listener is not None:
            self._listener.close()
        await self._reader.close()
