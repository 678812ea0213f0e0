"""Opening Headwater's own SQLite files (the delivery store, the protocols store, the flow
counts): WAL, a busy timeout for the CLI that opens them beside the server, the schema, and
a schema version refused when it is not the one this Headwater reads.

The event log opens its file itself (:mod:`headwater.log.sqlite`): its layout and pragmas
are its own business.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal


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
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA journal_mode=WAL")
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
