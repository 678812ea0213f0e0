"""Alerts sent once for the whole cluster, with ``state: {backend: postgres}``.

Every gateway runs its own monitor and alert dispatcher (its own incidents: what it sees),
so two gateways that see the same outage would each send the alert. Before a node sends an
alert it claims it in PostgreSQL (``alert_claims``: one row per component and kind, under
a lock). The claim is refused when another node claimed the same component's alert of that
kind within :data:`CLAIM_SECS` (for a renotify, within 90 % of the rule's ``renotify_secs``)
— unless the component changed since: an ``opened`` after a claimed ``resolved`` is a new
spell and goes out, and so does a ``resolved`` after a claimed ``opened``.

While PostgreSQL does not answer, alerts are sent without a claim: two alerts are better
than none, and the state store being down is an alert of its own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable

from headwater.config.workspace import StateConfig
from headwater.state import postgres
from headwater.state.sql import PostgresConn, first_line, where_of
from headwater.status.alerts import Outgoing
from headwater.status.notifiers import AlertKind

logger = logging.getLogger(__name__)

CLAIM_SECS = 300.0
"""How long a node's opened or resolved alert of a component stands for the cluster's."""
CLAIM_LOCK_KEY = 0x4857_414C  # "HWAL": claims are decided one at a time
CLAIM_WAIT_SECS = 3.0  # PostgreSQL silent this long (and one connect attempt, up to 5 s):
# the alert goes out unclaimed
_OPPOSITE = {AlertKind.OPENED: AlertKind.RESOLVED, AlertKind.RESOLVED: AlertKind.OPENED}


class AlertClaims:
    """One node's claims (thread-safe: one lock, since the monitor and each watched
    service claim from threads of their own)."""

    def __init__(self, state: StateConfig, node: str | None = None,
                 now_ms: Callable[[], int] | None = None) -> None:  # fmt: skip
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._conn: PostgresConn | None = None
        self._lock = threading.Lock()
        self._state = state
        self.where = where_of(state.dsn or "", state.schema_name)

    def _db(self) -> PostgresConn:
        if self._conn is None:
            self._conn = postgres.connect(self._state, reconnect_secs=CLAIM_WAIT_SECS)
        return self._conn

    def claim(self, component: str, kind: AlertKind, renotify_secs: float = 0.0) -> bool:
        """Whether this node sends the alert (it claimed it), recording the claim."""
        with self._lock:
            return self._claim(component, kind, renotify_secs)

    def _claim(self, component: str, kind: AlertKind, renotify_secs: float) -> bool:
        now = self._now_ms()
        window_ms = int((renotify_secs * 0.9 if kind is AlertKind.RENOTIFY and renotify_secs
                         else CLAIM_SECS) * 1000)  # fmt: skip
        conn = self._db()
        conn.begin()  # a COMMIT whose answer is lost raises: the alert goes out unclaimed
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (CLAIM_LOCK_KEY,))
            rows = dict(conn.execute("SELECT kind, at_ms FROM alert_claims WHERE component = ?",
                                     (component,)).fetchall())  # fmt: skip
            last = rows.get(str(kind))
            if kind is AlertKind.RENOTIFY:  # counted from the spell's opening too
                last = max(last or -1, rows.get(str(AlertKind.OPENED), -1))
            fresh = last is None or last < 0 or now - last >= window_ms
            if not fresh and kind in _OPPOSITE:
                fresh = rows.get(str(_OPPOSITE[kind]), -1) > last  # a new spell since
            if fresh:
                conn.execute(
                    "INSERT INTO alert_claims VALUES (?, ?, ?, ?) ON CONFLICT (component, kind) "
                    "DO UPDATE SET at_ms = excluded.at_ms, node = excluded.node",
                    (component, str(kind), now, self.node),
                )
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        return fresh

    def sendable(self, outgoing: Iterable[Outgoing],
                 renotify_secs: Callable[[Outgoing], float]) -> list[Outgoing]:  # fmt: skip
        """The alerts this node sends: those it claimed, and all of them while PostgreSQL
        does not answer (logged)."""
        kept = []
        for item in outgoing:
            try:
                mine = self.claim(item.alert.component.id, item.alert.kind, renotify_secs(item))
            except Exception as exc:  # fail open: the alert matters more than a duplicate
                logger.warning("alerts: cannot claim %s %s at %s (%s); sending it anyway",
                               item.alert.kind, item.alert.component.id, self.where,
                               first_line(exc))  # fmt: skip
                mine = True
            if mine:
                kept.append(item)
            else:
                logger.info("alerts: %s of %s was sent by another node", item.alert.kind,
                            item.alert.component.id)  # fmt: skip
        return kept

    def close(self) -> None:
        if self._conn is not None:
            self._conn.interrupt()
            with self._lock:
                self._conn.close()
