"""Console sessions: a token, presented once at the login page, becomes a cookie.

The session remembers who signed in (the token's :class:`~headwater.api.permissions.Principal`,
never the token); pages check its role on every request, and a session whose token has been
revoked ends at its next request (:meth:`headwater.api.auth.Authenticator.active`).

A session is a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` when the
console is served over HTTPS), known to this process only: restarting the server signs
everyone out, and signing out forgets the id at once. Each session has its own CSRF token;
every form carries it and every request that changes something (any method but GET/HEAD)
must present it — as the ``csrf_token`` form field or the ``X-CSRF-Token`` header — so
another site cannot act with the user's cookie. Sessions expire after ``ttl_secs`` (12 h)
and after ``idle_secs`` (2 h) without use. Failed logins are slowed per client address.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from headwater.api.permissions import ADMIN, Principal

COOKIE = "hw_session"
TTL_SECS = 12 * 3600
IDLE_SECS = 2 * 3600
MAX_SESSIONS = 1000
LOGIN_FAILURES_PER_MINUTE = 10


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

    def create(self, principal: Principal = ADMIN) -> Session:
        now = time.monotonic()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(24), now, now, principal)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
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

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

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
