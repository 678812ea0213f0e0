"""The configuration store: the workspace as resources with versions, in
``<data-dir>/state/config.sqlite``. It is the one source of truth of a running Headwater;
the workspace file seeds and updates it at start (docs/configuration.md says which wins).

Layout::

    resources(kind, name, position, version, doc)   one row per resource (config/resources.py);
                                                    version = the revision that last changed it
    meta(key, value)                                schema_version, revision (one counter for
                                                    the workspace), file_digest (the file last
                                                    seeded from)
    retired_keys(source, key, until_ms)             write keys still accepted after a rotation
    pauses(destination, disabled_at, enabled_at)    log offsets: events accepted while a
                                                    destination was disabled are never sent

Every change is one transaction (``BEGIN IMMEDIATE``), checked against the versions its
caller read (ETag / ``If-Match``): a concurrent edit is refused, never half-written.
Writes go through a thread (:func:`asyncio.to_thread`): a commit's fsync must not stall the
event loop that answers the Tracking API.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from headwater.config.resources import Resources, join, split
from headwater.sqlite_files import open_store

FILE = "config.sqlite"
OPEN_END = 2**62  # the end of a pause that has not ended (the delivery engine reads it)
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL,
    version INTEGER NOT NULL, doc BLOB NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS retired_keys (
    source TEXT NOT NULL, key TEXT NOT NULL PRIMARY KEY, until_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pauses (
    destination TEXT NOT NULL, disabled_at INTEGER NOT NULL, enabled_at INTEGER);
"""

Key = tuple[str, str]


class Conflict(Exception):
    """The resource changed since the caller read it (HTTP 412)."""

    def __init__(self, key: Key, expected: int | None, current: int | None) -> None:
        kind, name = key
        now = "does not exist" if current is None else f"is at version {current}"
        super().__init__(
            f"{kind}/{name} changed since you read it (you sent version {expected}; it {now}); "
            "read it again, reapply your change and send the new ETag in If-Match"
        )
        self.key, self.expected, self.current = key, expected, current


@dataclass(frozen=True)
class Snapshot:
    """The stored configuration at one revision."""

    revision: int
    resources: Resources
    versions: dict[Key, int]

    def document(self) -> dict[str, Any]:
        return join(self.resources)


@dataclass(frozen=True)
class Written:
    revision: int
    created: list[Key]
    changed: list[Key]
    deleted: list[Key]

    @property
    def empty(self) -> bool:
        return not (self.created or self.changed or self.deleted)


def digest(document: Any) -> str:
    """A SHA-256 of a document (the workspace file's bytes, or a workspace given in code)."""
    data = (
        document
        if isinstance(document, bytes)
        else orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    )
    return hashlib.sha256(data).hexdigest()


class ConfigStore:
    """One file, one connection, a lock around it (the API's writes run on a thread; reads
    come from the event loop). This process is the store's only writer, so the snapshot is
    kept in memory after each write: a read never waits for a commit's fsync."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE
        self._conn = open_store(
            self.path, SCHEMA, what="configuration", version=SCHEMA_VERSION, synchronous="FULL"
        )
        self._lock = threading.Lock()
        self._snapshot = self._read()

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> Snapshot:
        """The configuration as last written (kept in memory; do not change its dicts)."""
        return self._snapshot

    def _read(self) -> Snapshot:
        with self._lock:
            rows = self._conn.execute(
                "SELECT kind, name, version, doc FROM resources ORDER BY position"
            ).fetchall()
            revision = self._meta("revision")
        resources = {(k, n): orjson.loads(d) for k, n, _, d in rows}
        return Snapshot(int(revision or 0), resources, {(k, n): v for k, n, v, _ in rows})

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ seeding

    def seed(self, document: dict[str, Any], file_digest: str) -> tuple[Snapshot, Written | None]:
        """At start: an empty store takes the file; a file changed since it was last seeded
        (``file_digest``: a SHA-256 of the file as written) is applied over the store (the
        file wins, like ``headwater apply``); an unchanged file leaves the store as the API
        left it. Returns the snapshot to run and what the file changed (None when it changed
        nothing)."""
        with self._lock:
            seeded = self._meta("file_digest")
        if seeded == file_digest:
            return self.snapshot(), None
        written = self._write(split(document), None, file_digest)
        return self.snapshot(), written

    # ------------------------------------------------------------------ writing

    async def replace(self, target: Resources, expected: dict[Key, int | None]) -> Written:
        """Make the store hold exactly ``target`` (in its order), in one transaction, if
        every resource in ``expected`` is still at the version given (None: absent)."""
        return await asyncio.to_thread(self._write, target, expected, None)

    def _write(
        self, target: Resources, expected: dict[Key, int | None] | None, file_digest: str | None
    ) -> Written:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute("SELECT kind, name, version, doc FROM resources").fetchall()
                current = {(k, n): (v, bytes(d)) for k, n, v, d in rows}
                for key, version in (expected or {}).items():
                    found = current.get(key)
                    if (found[0] if found else None) != version:
                        raise Conflict(key, version, found[0] if found else None)
                before = int(self._meta("revision") or 0)
                revision = before + 1
                created, changed = [], []
                for position, (key, doc) in enumerate(target.items()):
                    blob = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
                    old = current.get(key)
                    version = revision if old is None or old[1] != blob else old[0]
                    if old is None:
                        created.append(key)
                    elif old[1] != blob:
                        changed.append(key)
                    conn.execute(
                        "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?)",
                        (key[0], key[1], position, version, blob),
                    )
                deleted = [key for key in current if key not in target]
                for kind, name in deleted:
                    conn.execute("DELETE FROM resources WHERE kind=? AND name=?", (kind, name))
                if created or changed or deleted:
                    conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (str(revision),)
                    )
                else:
                    revision = before  # nothing changed: no new revision
                if file_digest is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('file_digest', ?)", (file_digest,)
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._snapshot = self._read()
        return Written(revision, created, changed, deleted)

    # ------------------------------------------------------------------ keys and pauses

    def retire_key(self, source: str, key: str, grace_secs: float) -> int:
        until = int((time.time() + grace_secs) * 1000)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO retired_keys VALUES (?, ?, ?)", (source, key, until)
            )
        return until

    def unretire(self, key: str) -> None:
        """A rotation that did not happen: its old key is the source's key again."""
        with self._lock:
            self._conn.execute("DELETE FROM retired_keys WHERE key=?", (key,))

    def drop_retired(self, source: str) -> None:
        """A deleted source's old keys go with it (a source made again under its name does
        not take them back)."""
        with self._lock:
            self._conn.execute("DELETE FROM retired_keys WHERE source=?", (source,))

    def retired_keys(self) -> dict[str, tuple[str, int]]:
        """Still-valid old write keys: key → (source, valid until, ms since the epoch)."""
        now = int(time.time() * 1000)
        with self._lock:
            self._conn.execute("DELETE FROM retired_keys WHERE until_ms < ?", (now,))
            rows = self._conn.execute("SELECT source, key, until_ms FROM retired_keys").fetchall()
        return {key: (source, until) for source, key, until in rows}

    def pause(self, destination: str, at_offset: int) -> None:
        with self._lock:
            open_ = self._conn.execute(
                "SELECT 1 FROM pauses WHERE destination=? AND enabled_at IS NULL", (destination,)
            ).fetchone()
            if open_ is None:
                self._conn.execute(
                    "INSERT INTO pauses VALUES (?, ?, NULL)", (destination, at_offset)
                )

    def resume(self, destination: str, at_offset: int) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE pauses SET enabled_at=? WHERE destination=? AND enabled_at IS NULL",
                (at_offset, destination),
            )

    def pauses(self) -> dict[str, list[tuple[int, int]]]:
        """Per destination, the ranges of offsets ``(after, up_to]`` accepted while it was
        disabled (a range still open ends at the largest offset there can be)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT destination, disabled_at, enabled_at FROM pauses ORDER BY disabled_at"
            ).fetchall()
        out: dict[str, list[tuple[int, int]]] = {}
        for name, start, end in rows:
            out.setdefault(name, []).append((int(start), int(end) if end is not None else OPEN_END))
        return out

    def forget(self, destination: str) -> None:
        """A purged destination's pauses go with it."""
        with self._lock:
            self._conn.execute("DELETE FROM pauses WHERE destination=?", (destination,))


def open_config(data_dir: Path) -> ConfigStore:
    return ConfigStore(data_dir / "state")
