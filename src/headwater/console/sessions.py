"""Console sessions: a token, presented once at the login page, becomes a cookie.

The session remembers who signed in (the token's :class:`~headwater.api.permissions.Principal`,
never the token); pages check its role on every request, and a session whose token has been
revoked ends at its next request (:meth:`headwater.api.auth.Authenticator.active`).

A session is a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` when the
console is served over HTTPS), known to this process only: restarting the server signs
everyone out, and signing out forgets the id at once. With shared state
(:class:`SharedSessions`) sessions are the cluster's, in PostgreSQL: one made on a gateway
works on every gateway behind the balancer, and signing out ends it everywhere.

Each session has its own CSRF token; every form carries it and every request that changes
something (any method but GET/HEAD) must present it — as the ``csrf_token`` form field or
the ``X-CSRF-Token`` header — so another site cannot act with the user's cookie. Sessions
expire after ``ttl_secs`` (12 h) and after ``idle_secs`` (2 h) without use. Failed logins
are slowed per client address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headwater.api.permissions import ADMIN, Principal
from headwater.state import postgres

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

COOKIE = "hw_session"
TTL_SECS = 12 * 3600
IDLE_SECS = 2 * 3600
MAX_SESSIONS = 1000
LOGIN_FAILURES_PER_MINUTE = 10
RECONNECT_SECS = 2.0  # a shared session's lookup waits this long for PostgreSQL at most


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    created: float
    last_seen: float
    principal: Principal = ADMIN


class Sessions:
    def __init__(self, ttl_secs: float = TTL_SECS, idle_secs: float = IDLE_SECS) -> None:
        self.ttl_secs = ttl_secs
        self.idle_secs = idle_secs
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, list[float]] = {}

    async def create(self, principal: Principal = ADMIN) -> Session:
        now = time.monotonic()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(24), now, now, principal)
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.created > self.ttl_secs or now - session.last_seen > self.idle_secs:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    async def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def close(self) -> None:
        """Nothing to close: the sessions are this process's memory."""

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        # bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500)
        return bool(presented) and hmac.compare_digest(
            session.csrf.encode(), (presented or "").encode("utf-8", "surrogatepass")
        )

    def login_allowed(self, client: str) -> bool:
        """False while ``client`` has failed too often in the last minute."""
        now = time.monotonic()
        recent = [t for t in self._failures.get(client, []) if now - t < 60]
        self._failures[client] = recent
        return len(recent) < LOGIN_FAILURES_PER_MINUTE

    def login_failed(self, client: str) -> None:
        self._failures.setdefault(client, []).append(time.monotonic())
        if len(self._failures) > 10_000:  # random addresses must not grow memory
            self._failures.clear()

    def _expire(self, now: float) -> None:
        stale = [
            s.id
            for s in self._sessions.values()
            if now - s.created > self.ttl_secs or now - s.last_seen > self.idle_secs
        ]
        for session_id in stale:
            del self._sessions[session_id]


class SharedSessions(Sessions):
    """The cluster's sessions, in the shared PostgreSQL schema (``console_sessions``,
    migration 0011), on one connection used by one thread; times are wall-clock, so that
    every node judges expiry alike. Failed logins are still slowed per node, and
    ``MAX_SESSIONS`` bounds the cluster's sessions, not one node's. While
    PostgreSQL does not answer, :meth:`get` and the others raise
    :class:`~headwater.state.sql.StateUnavailable` (the console says so)."""

    def __init__(self, state: StateConfig, admin_digest: str, ttl_secs: float = TTL_SECS,
                 idle_secs: float = IDLE_SECS) -> None:  # fmt: skip
        """``admin_digest``: this node's admin token (its stored digest). A session signed
        in with the admin token keeps a mark of it and is honoured only where that token
        is the admin token: rotating it (a restart with a new one) ends those sessions, as
        a restart did when sessions lived in memory."""
        super().__init__(ttl_secs, idle_secs)
        self._admin_mark = _digest(admin_digest)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hw-sessions")
        self._conn = postgres.connect(state, reconnect_secs=min(RECONNECT_SECS,
                                                                state.reconnect_secs))  # fmt: skip

    async def _run(self, query: str, args: tuple[Any, ...], *, row: bool = False) -> Any:
        """One statement on the sessions' thread; with ``row``, its first row (or None)."""

        def call() -> Any:
            cursor = self._conn.execute(query, args)
            return cursor.fetchone() if row else None

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def create(self, principal: Principal = ADMIN) -> Session:
        now = time.time()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(24), now, now, principal)
        ms = int(now * 1000)
        expired = (ms - int(self.ttl_secs * 1000), ms - int(self.idle_secs * 1000))
        await self._run("DELETE FROM console_sessions WHERE created_ms <= ? OR last_seen_ms <= ?",
                        expired)  # fmt: skip
        mark = self._admin_mark if principal == ADMIN else None
        await self._run(
            "INSERT INTO console_sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_digest(session.id), session.csrf, principal.name, principal.role,
             principal.source, ms, ms, mark),
        )  # fmt: skip
        await self._run(  # the least recently used beyond MAX_SESSIONS go
            "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions"
            " ORDER BY last_seen_ms DESC OFFSET ?)", (MAX_SESSIONS,),
        )  # fmt: skip
        return session

    async def get(self, session_id: str | None) -> Session | None:
        """The session, if it is live — and its use recorded, in the same statement."""
        if not session_id:
            return None
        ms = int(time.time() * 1000)
        found = await self._run(
            "UPDATE console_sessions SET last_seen_ms = ? WHERE id_hash = ? AND created_ms > ?"
            " AND last_seen_ms > ? AND (admin_mark IS NULL OR admin_mark = ?)"
            " RETURNING csrf, token_name, role, source, created_ms",
            (ms, _digest(session_id), ms - int(self.ttl_secs * 1000),
             ms - int(self.idle_secs * 1000), self._admin_mark), row=True,
        )  # fmt: skip
        if found is None:
            return None
        csrf, name, role, source, created_ms = found
        return Session(session_id, csrf, created_ms / 1000, ms / 1000,
                       Principal(name, role, source))  # fmt: skip

    async def end(self, session_id: str | None) -> None:
        if session_id:
            await self._run("DELETE FROM console_sessions WHERE id_hash = ?",
                            (_digest(session_id),))  # fmt: skip

    def close(self) -> None:
        self._conn.interrupt()
        self._pool.shutdown(wait=True)
        self._conn.close()


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()
