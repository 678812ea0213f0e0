"""Scoped API tokens: a name, a role, for ``source_admin`` the one source — stored hashed.

``headwater tokens create`` writes here directly (beside a running server, like
``headwater deadletter``); the server looks each presented token up on every request, so a
token works, and a revoked one stops working, at the next request — no restart, no reload.

A token is ``hwt_`` + 43 random URL-safe characters (256 bits); only its SHA-256 is kept.
A fast hash is right for a random secret of that size: there is no dictionary to try, and
the lookup runs on every API request. The plain token is returned once, by :meth:`create`.

Storage layout (``<data-dir>/state/tokens.db``, WAL, ``synchronous=FULL``; or, with
``state: {backend: postgres}``, the same table in the shared schema, migration 0006):

    meta(key PRIMARY KEY, value)         ``schema_version``
    tokens(name PRIMARY KEY, role, source, digest UNIQUE, created_ms, created_by,
           revoked_ms)
        one row per token ever created; revoking sets ``revoked_ms`` (the name stays taken,
        so the audit trail's "token ci-deploy" always means one token).

On PostgreSQL the server does not ask the database at each request (a stall there would
stall the API, and every node would ask): :meth:`TokenStore.follow` keeps every token in
memory, read again each :data:`REFRESH_SECS`, so a token made or revoked on any node (or by
the CLI) counts on every node within that; while PostgreSQL does not answer, the tokens last
read keep working. The CLI and a store's own writes go to the database directly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from headwater.state import postgres
from headwater.state.sql import SqlConn

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

logger = logging.getLogger(__name__)

STATE_DIR = "state"
DB_FILE = "tokens.db"
SCHEMA_VERSION = 1
TOKEN_PREFIX = "hwt_"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")
REFRESH_SECS = 1.0
_COLUMNS = "name, role, source, created_ms, created_by, revoked_ms"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(name TEXT PRIMARY KEY, role TEXT NOT NULL, source TEXT,
    digest TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL, created_by TEXT NOT NULL,
    revoked_ms INTEGER);
"""


def _adopt(conn: SqlConn, local: sqlite3.Connection) -> str:
    """A node's tokens from before shared state, into the cluster's table. A name the
    cluster already gives another token stays the cluster's (names are never reused); the
    node's token of that name stops working, and the log names it."""
    columns = "name, role, source, digest, created_ms, created_by, revoked_ms"
    copied, clashes = 0, []
    for row in local.execute(f"SELECT {columns} FROM tokens ORDER BY created_ms"):
        if conn.execute(f"INSERT INTO tokens({columns}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING", row).rowcount:  # fmt: skip
            copied += 1
            continue
        theirs = conn.execute("SELECT digest FROM tokens WHERE name = ?", (row[0],)).fetchone()
        if theirs is None or theirs[0] != row[3]:
            clashes.append(row[0])
    said = f"{copied} token(s) copied"
    if clashes:
        said += (f"; not copied, the cluster has other tokens named {', '.join(clashes)}: "
                 "create them again under new names")  # fmt: skip
    return said


class TokenError(ValueError):
    """A token that cannot be created or revoked; the message says why and what to do."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token, without the token."""

    name: str
    role: str
    source: str | None
    created_ms: int
    created_by: str
    revoked_ms: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


class TokenStore:
    """The tokens of a data directory or of the shared state (thread-safe: one lock around
    the connection)."""

    def __init__(self, conn: SqlConn) -> None:
        self.conn = conn
        self.where = conn.where
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str, TokenRecord]] | None = None  # name → digest, record
        self._by_digest: dict[str, TokenRecord] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> TokenStore:
        return cls.open(data_dir, None)

    @classmethod
    def open(cls, data_dir: Path, state: StateConfig | None) -> TokenStore:
        """Where the workspace keeps tokens: ``data_dir``'s file, or PostgreSQL."""
        return cls(postgres.store_conn(state, data_dir / STATE_DIR / DB_FILE, _SCHEMA,
                                       what="token store", version=SCHEMA_VERSION,
                                       adopt=_adopt))  # fmt: skip

    def follow(self) -> None:
        """On PostgreSQL: answer lookups from memory, read again every
        :data:`REFRESH_SECS` on a thread of its own (the first read is done here). On SQLite,
        nothing: a lookup by index in a local file costs less than keeping a copy."""
        if self.conn.dialect == "sqlite" or self._thread is not None:
            return
        self._reload()
        self._thread = threading.Thread(target=self._refresh, name="headwater-tokens",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _refresh(self) -> None:
        failing = False
        while not self._stop.wait(REFRESH_SECS):
            try:
                self._reload()
            except Exception as exc:  # keep the tokens last read: they were valid then
                if not failing:
                    logger.warning("tokens: cannot read them from %s (%s); the last read "
                                   "stay in use", self.where, exc)  # fmt: skip
                failing = True
                continue
            if failing:
                logger.info("tokens: read from %s again", self.where)
            failing = False

    def _reload(self) -> None:
        with self._lock:
            rows = self.conn.execute(f"SELECT {_COLUMNS}, digest FROM tokens").fetchall()
        known = {r[0]: (r[6], TokenRecord(*r[:6])) for r in rows}
        self._by_digest = {d: rec for d, rec in known.values() if rec.active}
        self._known = known

    def close(self) -> None:
        self._stop.set()
        self.conn.interrupt()  # a refresh waiting for PostgreSQL gives up now
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self.conn.close()

    def create(
        self, name: str, role: str, source: str | None, created_by: str
    ) -> tuple[TokenRecord, str]:
        """A new token: its record and the token itself (to show once). The caller has
        checked ``role`` and ``source`` (:mod:`headwater.api.permissions`)."""
        if not NAME_PATTERN.match(name):
            raise TokenError(
                f"token name {name!r} must be 1-63 characters of a-z, 0-9, '-', '_' or '.', "
                "starting with a letter or digit (e.g. ci-deploy)"
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(name, role, source, int(time.time() * 1000), created_by, None)
        with self._lock:
            made = self.conn.write_once(lambda: self.conn.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (name) DO NOTHING",
                (name, role, source, digest(token), record.created_ms, created_by),
            ).rowcount)  # fmt: skip
        if not made:
            raise TokenError(
                f"a token named {name!r} exists already (names are never reused, even after "
                "revoking, so the audit trail stays unambiguous); choose another name"
            )
        self._wrote()
        return record, token

    def revoke(self, name: str) -> TokenRecord:
        """Revoke ``name``; it stops working at the next request."""
        with self._lock:
            changed = self.conn.write_once(lambda: self.conn.execute(
                "UPDATE tokens SET revoked_ms=? WHERE name=? AND revoked_ms IS NULL",
                (int(time.time() * 1000), name),
            ).rowcount)  # fmt: skip
        self._wrote()
        found = self.get(name)
        if found is None:
            raise TokenError(f"no token is named {name!r}; `headwater tokens list` shows them")
        if changed == 0:
            raise TokenError(f"token {name!r} was revoked already")
        return found

    def _wrote(self) -> None:
        if self._known is not None:  # this node sees its own change at once
            self._reload()

    def get(self, name: str) -> TokenRecord | None:
        if self._known is not None:
            found = self._known.get(name)
            return found[1] if found else None
        with self._lock:
            row = self.conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE name=?",
                                    (name,)).fetchone()  # fmt: skip
        return TokenRecord(*row) if row else None

    def list(self, include_revoked: bool = False) -> list[TokenRecord]:
        sql = f"SELECT {_COLUMNS} FROM tokens"
        if not include_revoked:
            sql += " WHERE revoked_ms IS NULL"
        with self._lock:
            rows = self.conn.execute(sql + " ORDER BY created_ms, name").fetchall()
        return [TokenRecord(*row) for row in rows]

    def lookup(self, token: str) -> TokenRecord | None:
        """The active token ``token`` is, or None. The digest is looked up by index (or in
        memory); the comparison an attacker could time is of digests of their own guesses."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        if self._known is not None:
            return self._by_digest.get(digest(token))
        with self._lock:
            row = self.conn.execute(f"SELECT {_COLUMNS} FROM tokens "
                                    "WHERE digest=? AND revoked_ms IS NULL",
                                    (digest(token),)).fetchone()  # fmt: skip
        return TokenRecord(*row) if row else None
