"""The audit trail: who changed what, when, and from where — kept durably.

Every change to the running configuration or to delivery state (a tracking plan saved, dead
letters retried or purged, a replay, a maintenance window, a token created or revoked, the
workspace file reloaded at start-up, and whatever the management API's write side does) is
one call to :meth:`AuditLog.record`. Trace and diagnose read it back with
:meth:`AuditLog.last_change` to say *who* turned a destination off, not only *that* it is off.

Secrets never enter the file: :meth:`AuditLog.record` passes every diff through
:func:`mask_secrets` (callers may mask earlier; masking twice changes nothing), and the actor
is a token's *name*, never the token.

Storage layout (``<data-dir>/state/audit.db``, WAL, ``synchronous=FULL`` — a recorded change
survives a power cut; changes are rare, so the fsync costs nothing that matters):

    meta(key PRIMARY KEY, value)       ``schema_version``
    entries(id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms, actor, action, resource, origin,
            diff)
        one row per change, never updated or deleted; ``resource`` is a path such as
        ``destinations/amplitude`` or ``tokens/ci-deploy``; ``diff`` is JSON (masked).
        ``id`` only grows, so it orders entries and is what the opaque cursor encodes.

The server and the CLI (``headwater tokens create`` beside a running server) both append;
SQLite's lock serialises them.

With ``state: {backend: postgres}`` the trail is the cluster's: the same rows in the shared
schema (``audit_entries``, migration 0007), written by every node and the CLI, read by the
console and API of any node. Writes there are transactions that run exactly once
(:meth:`~headwater.state.sql.SqlConn.write_once`); the API's handlers call the log on a
thread, so a PostgreSQL stall delays the change's answer, not the event loop.
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from headwater.state import postgres
from headwater.state.sql import SqlConn

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

STATE_DIR = "state"
DB_FILE = "audit.db"
SCHEMA_VERSION = 1
ORIGINS = ("api", "cli", "console", "workspace")
MASK = "********"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
SNAPSHOT_LOCK_KEY = 0x4857_5753  # "HWWS": nodes recording a workspace load take turns

# Keys whose values are secrets wherever they appear in a diff (matched on the key's
# lower-cased name, as a whole word part: ``api_key``, ``apiKey``, ``client_secret``).
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(secret|password|passwd|token|api_?key|apikey|write_?key|private_?key|"
    r"credentials?|authorization|auth|signing_?key|access_?key)($|[_\-.])|^key$"
)
# Values that are secrets whatever their key: Headwater's own tokens, bearer headers.
_SECRET_VALUE = re.compile(r"^(hwa_|hwt_)\S{8,}$|^bearer\s+\S+$", re.IGNORECASE)
# An environment reference is not a secret: showing ``${AMPLITUDE_KEY}`` is the point.
_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    resource TEXT NOT NULL, origin TEXT NOT NULL, diff BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS entries_resource ON entries(resource, id);
CREATE INDEX IF NOT EXISTS entries_time ON entries(at_ms);
"""


def _snake(key: str) -> str:
    """``apiKey`` → ``api_key`` so camelCase keys match the secret pattern too."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(_snake(key)))


def _mask_value(value: Any) -> Any:
    if isinstance(value, str) and _ENV_REF.match(value):
        return value
    if value is None or value == "":
        return value
    return MASK


def mask_secrets(diff: Any) -> Any:
    """A copy of ``diff`` with secrets replaced by ``********``.

    A value is a secret when its key names one (``api_key``, ``password``, ``token``, …;
    nested dicts and lists under such a key are masked whole) or when it looks like a
    Headwater token or a bearer header wherever it is. Environment references
    (``${NAME}``) are kept: they say which variable holds the secret, not the secret."""
    if isinstance(diff, Mapping):
        return {
            str(k): (_mask_value(v) if _is_scalar(v) else _mask_all(v))
            if is_secret_key(str(k))
            else mask_secrets(v)
            for k, v in diff.items()
        }
    if isinstance(diff, list | tuple):
        return [mask_secrets(v) for v in diff]
    if isinstance(diff, str) and _SECRET_VALUE.match(diff.strip()):
        return MASK
    return diff


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)


def _mask_all(value: Any) -> Any:
    """Everything under a secret key is secret (``credentials: {user, key}``)."""
    if isinstance(value, Mapping):
        return {str(k): _mask_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_all(v) for v in value]
    return _mask_value(value)


def diff_of(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """The usual diff shape: ``{"field": {"from": old, "to": new}}`` for each top-level field
    that differs (a missing side is ``None``); unchanged fields are left out. Not masked —
    :meth:`AuditLog.record` masks."""
    old = dict(before or {})
    new = dict(after or {})
    out: dict[str, Any] = {}
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            out[key] = {"from": old.get(key), "to": new.get(key)}
    return out


def change_action(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    """The verb of a change to one resource: ``create``, ``delete``, ``enable``,
    ``disable`` (its ``enabled`` flipped) or ``update``."""
    if before is None:
        return "create"
    if after is None:
        return "delete"
    if before.get("enabled", True) and not after.get("enabled", True):
        return "disable"
    if not before.get("enabled", True) and after.get("enabled", True):
        return "enable"
    return "update"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded change. ``at_ms`` is epoch milliseconds; ``diff`` is already masked."""

    id: int
    at_ms: int
    actor: str
    action: str
    resource: str
    origin: str
    diff: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "at_ms": self.at_ms,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at_ms / 1000)),
            "actor": self.actor,
            "action": self.action,
            "resource": self.resource,
            "origin": self.origin,
            "diff": self.diff,
        }

    def sentence(self) -> str:
        """``destination amplitude was disabled at 14:02 UTC by token ci-deploy (api)`` —
        what trace and diagnose print."""
        kind, _, name = self.resource.partition("/")
        what = f"{kind.rstrip('s')} {name}" if name else kind
        verb = _PAST.get(self.action, self.action)
        clock = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.at_ms / 1000))
        if self.origin == "workspace":
            who = "the workspace file"
        elif self.actor.startswith("local:"):
            who = f"local user {self.actor.removeprefix('local:')}"
        else:
            who = f"token {self.actor}"
        return f"{what} was {verb} at {clock} by {who} ({self.origin})"


_PAST = {
    "create": "created",
    "update": "changed",
    "delete": "deleted",
    "enable": "enabled",
    "disable": "disabled",
    "rotate": "rotated",
    "revoke": "revoked",
    "retry": "retried",
    "purge": "purged",
    "replay": "replayed",
    "reload": "reloaded",
    "end": "ended",
}


@dataclass(frozen=True, slots=True)
class AuditPage:
    """A page of entries, newest first; ``next_cursor`` is None on the last page."""

    entries: list[AuditEntry]
    next_cursor: str | None


def encode_cursor(entry_id: int) -> str:
    return base64.b64encode(str(entry_id).encode()).decode()


def decode_cursor(cursor: str) -> int:
    """The entry id a cursor points below; ``ValueError`` naming the cursor when it is not
    one this log handed out."""
    try:
        value = int(base64.b64decode(cursor.encode(), validate=True).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError(
            f"pagination.cursor {cursor!r} is not a cursor from this audit log; pass the "
            "`next` cursor of the previous page, or none for the first page"
        ) from None
    if value < 1:
        raise ValueError(f"pagination.cursor {cursor!r} is out of range")
    return value


def _adopt(conn: SqlConn, local: sqlite3.Connection) -> str:
    """A node's trail from before shared state, into the cluster's, oldest first. An entry
    the cluster holds already (same time, who, what, where from and diff: nodes started with
    one file each recorded its load) is not copied twice. Copied entries get new ids, so
    they list as newer than the cluster's; their times are their own."""
    columns = "at_ms, actor, action, resource, origin, diff"
    copied = same = 0
    for *row, diff in local.execute(f"SELECT {columns} FROM entries ORDER BY id"):
        values = (*row, bytes(diff).decode() if isinstance(diff, bytes | memoryview) else diff)
        if conn.execute(
            f"INSERT INTO audit_entries({columns}) SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM audit_entries WHERE at_ms = ? AND actor = ? AND action = ? AND "
            "resource = ? AND origin = ? AND diff = ?)", (*values, *values),
        ).rowcount:  # fmt: skip
            copied += 1
        else:
            same += 1
    return f"{copied} audit entr{'y' if copied == 1 else 'ies'} copied" + (
        f" ({same} the cluster had already)" if same else ""
    )


class AuditLog:
    """Append and read the audit trail in one SQLite file or the shared PostgreSQL schema
    (thread-safe: one lock)."""

    def __init__(self, conn: SqlConn) -> None:
        self.conn = conn
        self.where = conn.where
        self.shared = conn.dialect == "postgres"
        self._table = "audit_entries" if self.shared else "entries"
        self._lock = threading.Lock()

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> AuditLog:
        return cls.open(data_dir, None)

    @classmethod
    def open(cls, data_dir: Path, state: StateConfig | None) -> AuditLog:
        """Where the workspace keeps the trail: ``data_dir``'s file, or PostgreSQL."""
        return cls(postgres.store_conn(state, data_dir / STATE_DIR / DB_FILE, _SCHEMA,
                                       what="audit log", version=SCHEMA_VERSION,
                                       adopt=_adopt))  # fmt: skip

    def close(self) -> None:
        self.conn.interrupt()  # a record waiting for PostgreSQL gives up now
        with self._lock:
            self.conn.close()

    def record(
        self,
        actor: str,
        action: str,
        resource: str,
        diff: Mapping[str, Any] | None,
        origin: str,
        *,
        at_ms: int | None = None,
    ) -> AuditEntry:
        """Append one change and return it. ``actor`` is a token's name (``admin`` for the
        admin token, ``workspace`` for the file); ``diff`` is masked here whatever the
        caller did."""
        if origin not in ORIGINS:
            raise ValueError(f"audit origin {origin!r} is not one of {', '.join(ORIGINS)}")
        for name, value in (("actor", actor), ("action", action), ("resource", resource)):
            if not value or not isinstance(value, str):
                raise ValueError(f"audit {name} must be a non-empty string, got {value!r}")
        masked = mask_secrets(dict(diff or {}))
        when = int(time.time() * 1000) if at_ms is None else at_ms
        with self._lock:
            return self.conn.write_once(
                lambda: self._insert(when, actor, action, resource, origin, masked)
            )

    def _insert(self, when: int, actor: str, action: str, resource: str, origin: str,
                masked: dict[str, Any]) -> AuditEntry:  # fmt: skip
        blob = orjson.dumps(masked, default=str)
        [(entry_id,)] = self.conn.execute(
            f"INSERT INTO {self._table}(at_ms, actor, action, resource, origin, diff) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (when, actor, action, resource, origin, blob.decode() if self.shared else blob),
        ).fetchall()
        return AuditEntry(int(entry_id), when, actor, action, resource, origin, masked)

    def swap_snapshot(
        self,
        current: dict[str, Any],
        changes: Callable[[dict[str, Any]], list[tuple[str, str, dict[str, Any]]]],
        actor: str,
        origin: str,
        *,
        first: dict[str, Any] | None = None,
    ) -> list[AuditEntry]:
        """On PostgreSQL: in one transaction, under a lock every node takes, read the
        snapshot of the workspace the cluster last loaded, record ``changes(previous)``
        (action, resource, diff) and keep ``current`` as the snapshot. So when several nodes
        start with the same new file, the first records what changed and the others
        nothing. ``first`` stands for the snapshot while the cluster has none (a node's
        own, from before shared state)."""
        if not self.shared:
            raise RuntimeError("swap_snapshot is for the shared (PostgreSQL) audit trail")
        when = int(time.time() * 1000)

        def work() -> list[AuditEntry]:
            self.conn.execute("SELECT pg_advisory_xact_lock(?)", (SNAPSHOT_LOCK_KEY,))
            row = self.conn.execute("SELECT doc FROM workspace_snapshot WHERE id = 1").fetchone()
            previous = orjson.loads(row[0]) if row else dict(first or {})
            made = [self._insert(when, actor, action, resource, origin, mask_secrets(diff))
                    for action, resource, diff in changes(previous)]  # fmt: skip
            doc = orjson.dumps(current, option=orjson.OPT_SORT_KEYS).decode()
            self.conn.execute("INSERT INTO workspace_snapshot VALUES (1, ?) ON CONFLICT (id) "
                              "DO UPDATE SET doc = excluded.doc", (doc,))  # fmt: skip
            return made

        with self._lock:
            return self.conn.write_once(work)

    def entries(
        self,
        resource: str | None = None,
        since_ms: int | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> AuditPage:
        """Entries newest first. ``resource`` matches itself and what lies under it
        (``destinations`` matches ``destinations/amplitude``); ``since_ms`` keeps entries at
        or after that time; ``cursor`` continues a previous page."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"pagination.count must be 1..{MAX_LIMIT}, got {limit}")
        where, args = self._filters(resource, since_ms)
        if cursor:
            where.append("id < ?")
            args.append(decode_cursor(cursor))
        sql = f"SELECT id, at_ms, actor, action, resource, origin, diff FROM {self._table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            rows = self.conn.execute(sql, args).fetchall()
        page = [_entry(row) for row in rows[:limit]]
        more = len(rows) > limit
        return AuditPage(page, encode_cursor(page[-1].id) if more and page else None)

    def iter_entries(
        self, resource: str | None = None, since_ms: int | None = None
    ) -> Iterator[AuditEntry]:
        """Every matching entry, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page = self.entries(resource, since_ms, MAX_LIMIT, cursor)
            yield from page.entries
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def last_change(self, resource: str, action: str | None = None) -> AuditEntry | None:
        """The newest entry for exactly ``resource`` (and ``action``, or one of several
        given as ``"disable|delete"``), or None."""
        sql = (f"SELECT id, at_ms, actor, action, resource, origin, diff FROM {self._table}"
               " WHERE resource=?")  # fmt: skip
        args: list[Any] = [resource]
        if action:
            actions = action.split("|")
            sql += f" AND action IN ({','.join('?' * len(actions))})"
            args.extend(actions)
        sql += " ORDER BY id DESC LIMIT 1"
        with self._lock:
            row = self.conn.execute(sql, args).fetchone()
        return _entry(row) if row else None

    @staticmethod
    def _filters(resource: str | None, since_ms: int | None) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if resource:
            prefix = resource.rstrip("/")
            where.append("(resource = ? OR substr(resource, 1, ?) = ?)")
            args.extend([prefix, len(prefix) + 1, prefix + "/"])
        if since_ms is not None:
            where.append("at_ms >= ?")
            args.append(since_ms)
        return where, args


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(
        id=int(row[0]),
        at_ms=int(row[1]),
        actor=row[2],
        action=row[3],
        resource=row[4],
        origin=row[5],
        diff=orjson.loads(row[6]),
    )
