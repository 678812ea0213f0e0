"""Opening Headwater's own SQLite files (the delivery store, the protocols store, the flow
counts): WAL, a busy timeout for the CLI that opens them beside the server, the schema, and
a schema version refused when it is not the one this Headwater reads.

The event log opens its file itself (:mod:`headwater.log.sqlite`): its layout and pragmas
are its own business.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal

BUSY_TIMEOUT_MS = 10_000


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. On a new file, two processes opening it at once (the server and its
    worker) can get "database is locked" here without SQLite's busy handler being asked, so
    this waits and tries again within the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def open_store(
    path: Path,
    schema: str,
    *,
    what: str,
    version: int | None,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), the schema applied.

    With ``version``, the file's ``meta`` table (which ``schema`` must create) records it,
    and a file written by another version is refused with a message naming ``what``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _wal(conn)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(schema)
    if version is None:
        return conn
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(version),))
    elif int(row[0]) != version:
        conn.close()
        raise RuntimeError(
            f"{path} has {what} schema {row[0]}, this Headwater reads {version}; use the "
            "Headwater version that wrote it"
        )
    return conn
