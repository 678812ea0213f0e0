"""Scoped API tokens: a name, a role, for ``source_admin`` the one source — stored hashed.

``headwater tokens create`` writes here directly (beside a running server, like
``headwater deadletter``); the server looks each presented token up on every request, so a
token works, and a revoked one stops working, at the next request — no restart, no reload.

A token is ``hwt_`` + 43 random URL-safe characters (256 bits); only its SHA-256 is kept.
A fast hash is right for a random secret of that size: there is no dictionary to try, and
the lookup runs on every API request. The plain token is returned once, by :meth:`create`.

Storage layout (``<data-dir>/state/tokens.db``, WAL, ``synchronous=FULL``):

    meta(key PRIMARY KEY, value)         ``schema_version``
    tokens(name PRIMARY KEY, role, source, digest UNIQUE, created_ms, created_by,
           revoked_ms)
        one row per token ever created; revoking sets ``revoked_ms`` (the name stays taken,
        so the audit trail's "token ci-deploy" always means one token).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from headwater.sqlite_files import open_store

STATE_DIR = "state"
DB_FILE = "tokens.db"
SCHEMA_VERSION = 1
TOKEN_PREFIX = "hwt_"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(name TEXT PRIMARY KEY, role TEXT NOT NULL, source TEXT,
    digest TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL, created_by TEXT NOT NULL,
    revoked_ms INTEGER);
"""


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
    """The tokens of one data directory (thread-safe: one lock around the connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.conn = open_store(
            path, _SCHEMA, what="token store", version=SCHEMA_VERSION, synchronous="FULL"
        )

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> TokenStore:
        return cls(data_dir / STATE_DIR / DB_FILE)

    def close(self) -> None:
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
        try:
            with self._lock:
                self.conn.execute(
                    "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (name, role, source, digest(token), record.created_ms, created_by),
                )
        except sqlite3.IntegrityError:
            raise TokenError(
                f"a token named {name!r} exists already (names are never reused, even after "
                "revoking, so the audit trail stays unambiguous); choose another name"
            ) from None
        return record, token

    def revoke(self, name: str) -> TokenRecord:
        """Revoke ``name``; it stops working at the next request."""
        with self._lock:
            cur = self.conn.execute(
                "UPDATE tokens SET revoked_ms=? WHERE name=? AND revoked_ms IS NULL",
                (int(time.time() * 1000), name),
            )
        found = self.get(name)
        if found is None:
            raise TokenError(f"no token is named {name!r}; `headwater tokens list` shows them")
        if cur.rowcount == 0:
            raise TokenError(f"token {name!r} was revoked already")
        return found

    def get(self, name: str) -> TokenRecord | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT name, role, source, created_ms, created_by, revoked_ms FROM tokens "
                "WHERE name=?",
                (name,),
            ).fetchone()
        return TokenRecord(*row) if row else None

    def list(self, include_revoked: bool = False) -> list[TokenRecord]:
        sql = "SELECT name, role, source, created_ms, created_by, revoked_ms FROM tokens"
        if not include_revoked:
            sql += " WHERE revoked_ms IS NULL"
        with self._lock:
            rows = self.conn.execute(sql + " ORDER BY created_ms, name").fetchall()
        return [TokenRecord(*row) for row in rows]

    def lookup(self, token: str) -> TokenRecord | None:
        """The active token ``token`` is, or None. The digest is looked up by index; the
        comparison an attacker could time is of digests of their own guesses."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self._lock:
            row = self.conn.execute(
                "SELECT name, role, source, created_ms, created_by, revoked_ms FROM tokens "
                "WHERE digest=? AND revoked_ms IS NULL",
                (digest(token),),
            ).fetchone()
        return TokenRecord(*row) if row else None
