"""Incidents, maintenance windows and uptime, kept in ``<data-dir>/status/status.sqlite``.

Layout:

    components(id PRIMARY KEY, name, status, reason, created_ms, updated_ms)
        the last state written for each component.
    incidents(id PRIMARY KEY, component, name, status, impact, created_ms, updated_ms,
              resolved_ms)
        one per spell of a component outside ``operational``: opened when it leaves,
        resolved when it is back. ``status`` is Statuspage's (investigating | resolved).
    incident_updates(id PRIMARY KEY, incident, status, body, created_ms, old_status,
                     new_status)
        the timeline of each incident.
    maintenances(id PRIMARY KEY, name, components, starts_ms, ends_ms, created_ms, body)
        declared windows (``components`` a JSON list of ids, ``["*"]`` for all): the
        components show ``under_maintenance``, no incident opens, alerts are silent.
    uptime(component, day, status, seconds, PRIMARY KEY (component, day, status))
        seconds spent in each status per UTC day, for the 90-day uptime bars.

One writer: the monitor's thread (``headwater maintenance`` writes from the CLI, which
SQLite's locking keeps apart).

With ``state: {backend: postgres}`` the same tables, prefixed ``status_``, are the cluster's
(migration 0010): every gateway publishes its check as an *observation*, and the one that
holds the writer's lock (a session advisory lock; another takes it when that session ends)
applies the merged states — so every gateway's status page shows one set of incidents, one
uptime history and the maintenance windows declared anywhere.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from headwater.state import postgres
from headwater.state.sql import SqlConn
from headwater.status.model import Component, ComponentState, Status

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

DB_FILE = "status.sqlite"
DAY_MS = 86_400_000
UNOBSERVED = ("no node observes it any more (the node that did stopped, or the component "
              "was removed); the incident is closed")  # fmt: skip
RECONNECT_SECS = 2.0  # a call to the cluster's store retries this long at most
WRITER_LOCK = (0x4857_5350, 0x5354_4154)  # "HWSP", "STAT": the cluster's status writer
IMPACT = {
    Status.DEGRADED: "minor",
    Status.PARTIAL: "major",
    Status.MAJOR: "critical",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS components(id TEXT PRIMARY KEY, name TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS incidents(id INTEGER PRIMARY KEY, component TEXT NOT NULL,
    name TEXT NOT NULL, status TEXT NOT NULL, impact TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, resolved_ms INTEGER);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents(component, resolved_ms);
CREATE TABLE IF NOT EXISTS incident_updates(id INTEGER PRIMARY KEY, incident INTEGER NOT NULL,
    status TEXT NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL,
    old_status TEXT NOT NULL, new_status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incident_updates_incident ON incident_updates(incident);
CREATE TABLE IF NOT EXISTS maintenances(id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    components TEXT NOT NULL, starts_ms INTEGER NOT NULL, ends_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uptime(component TEXT NOT NULL, day INTEGER NOT NULL,
    status TEXT NOT NULL, seconds REAL NOT NULL, PRIMARY KEY (component, day, status));
"""


class NotTheWriter(Exception):
    """Another gateway holds the writer's lock: this node's check is not recorded."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class IncidentUpdate:
    id: int
    status: str
    body: str
    created_ms: int
    old_status: str
    new_status: str


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    component: str
    name: str
    status: str  # investigating | resolved
    impact: str  # minor | major | critical
    created_ms: int
    updated_ms: int
    resolved_ms: int | None
    updates: list[IncidentUpdate]


@dataclass(frozen=True, slots=True)
class Maintenance:
    id: int
    name: str
    components: list[str]
    starts_ms: int
    ends_ms: int
    created_ms: int
    body: str

    def covers(self, component: str, at_ms: int) -> bool:
        active = self.starts_ms <= at_ms < self.ends_ms
        return active and ("*" in self.components or component in self.components)


@dataclass(frozen=True, slots=True)
class Change:
    """What applying one check changed: incidents opened, updated or resolved."""

    state: ComponentState
    old_status: Status
    incident: Incident | None  # the incident this change opened, updated or resolved
    kind: str  # opened | updated | resolved | none


class StatusStore:
    """The status database on one connection (used from one thread at a time): the data
    directory's SQLite file, or the cluster's ``status_…`` tables in the shared PostgreSQL
    schema (``state: {backend: postgres}``, migration 0010)."""

    def __init__(self, directory: Path, state: StateConfig | None = None,
                 node: str | None = None) -> None:  # fmt: skip
        self.shared = postgres.uses_postgres(state)
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self._p = "status_" if self.shared else ""  # the tables' prefix
        self._least = "least" if self.shared else "min"
        self.conn: SqlConn
        if postgres.uses_postgres(state):  # a check must not wait a minute for it
            quick = min(RECONNECT_SECS, state.reconnect_secs)
            self.conn = postgres.connect(state, reconnect_secs=quick)
        else:
            self.conn = postgres.store_conn(None, directory / DB_FILE, _SCHEMA,
                                            what="status store", version=None)  # fmt: skip

    def close(self) -> None:
        if self.shared:  # a node that stops is not observing any more
            self.conn.interrupt()  # on the connection it has: no waiting for a new one
            with contextlib.suppress(Exception):
                self.conn.execute("DELETE FROM status_observations WHERE node=?", (self.node,))
        self.conn.close()

    def interrupt(self) -> None:
        """A call waiting for PostgreSQL gives up now (at stop)."""
        self.conn.interrupt()

    # -- applying checks

    def check(self, states: list[ComponentState], at_ms: int, elapsed_secs: float,
              fresh_ms: int) -> list[Change] | None:  # fmt: skip
        """One check of this node. Locally it is applied (:meth:`apply`). With shared state
        it is published as this node's observation, and applied only by the one gateway that
        holds the writer's lock — merged with the other nodes' observations made within
        ``fresh_ms``, the worst state of each component winning — so the cluster has one
        set of incidents and one uptime history. None: another node writes."""
        if not self.shared:
            return self.apply(states, at_ms, elapsed_secs)
        self._observe(states, at_ms)
        if not self._writer():
            return None
        merged = merge(states, self.observations(at_ms - fresh_ms))
        seen = {s.component.id for s in merged}
        rows = self.component_rows()
        for incident in self.incidents(unresolved_only=True, limit=1000):
            cid = incident.component  # seen by a node that stopped: nobody reports it now
            if cid not in seen and cid in rows:
                seen.add(cid)
                merged.append(ComponentState(Component(cid, rows[cid]["name"], ""),
                                             Status.OPERATIONAL, UNOBSERVED))  # fmt: skip
        try:  # the lock asked again inside the transaction: a retry may run on a new session
            return self.apply(merged, at_ms, elapsed_secs, guard=self._holds_lock)
        except NotTheWriter:
            return None

    def _observe(self, states: list[ComponentState], at_ms: int) -> None:
        def work() -> None:
            self.conn.execute("DELETE FROM status_observations WHERE node=?", (self.node,))
            self.conn.executemany(
                "INSERT INTO status_observations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(self.node, s.component.id, s.component.name, s.component.description,
                  s.component.group, s.status.value, s.reason, at_ms) for s in states],
            )  # fmt: skip

        self.conn.write_once(work)

    def _writer(self) -> bool:
        """Whether this node writes the cluster's status: it holds the session lock, or
        takes it now (a lost session — a reconnect, a dead node — has let it go)."""
        if self._holds_lock():
            return True
        got = self.conn.execute("SELECT pg_try_advisory_lock(?, ?)", WRITER_LOCK).fetchone()[0]
        return bool(got)

    def _holds_lock(self) -> bool:
        """Whether this connection's session holds the writer's lock (asked of the server:
        the lock is gone with a session that was lost and silently replaced)."""
        held = self.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            " AND classid::bigint = ? AND objid::bigint = ? AND objsubid = 2 AND granted",
            WRITER_LOCK,
        ).fetchone()[0]
        return bool(held)

    def observations(self, since_ms: int) -> list[tuple[str, ComponentState]]:
        """The other nodes' observations made since ``since_ms``: (node, state)."""
        rows = self.conn.execute(
            "SELECT node, component, name, description, grp, status, reason FROM "
            "status_observations WHERE node != ? AND at_ms >= ? ORDER BY node",
            (self.node, since_ms),
        ).fetchall()
        return [(r[0], ComponentState(Component(r[1], r[2], r[3], r[4]), Status(r[5]), r[6]))
                for r in rows]  # fmt: skip

    def apply(self, states: list[ComponentState], at_ms: int, elapsed_secs: float,
              windows: list[Maintenance] | None = None,
              guard: Callable[[], bool] | None = None) -> list[Change]:  # fmt: skip
        """Record one check: component states, uptime, and incidents opened, updated or
        resolved. A component inside a maintenance window — of ``windows`` (the cluster's)
        or else of this store — is recorded as under maintenance."""
        if windows is None:
            windows = self.maintenances(active_at=at_ms)
        p = self._p

        def work() -> list[Change]:
            if guard is not None and not guard():
                raise NotTheWriter
            changes: list[Change] = []
            conn = self.conn
            for state in states:
                cid = state.component.id
                if any(w.covers(cid, at_ms) for w in windows):
                    state = ComponentState(state.component, Status.MAINTENANCE, state.reason)
                row = conn.execute(f"SELECT status FROM {p}components WHERE id=?",
                                   (cid,)).fetchone()  # fmt: skip
                old = Status(row[0]) if row else Status.OPERATIONAL
                conn.execute(
                    f"INSERT INTO {p}components VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE"
                    " SET name=excluded.name, status=excluded.status, reason=excluded.reason,"
                    f" updated_ms=CASE WHEN {p}components.status=excluded.status THEN"
                    f" {p}components.updated_ms ELSE excluded.updated_ms END",
                    (cid, state.component.name, state.status.value, state.reason, at_ms, at_ms),
                )
                conn.execute(
                    f"INSERT INTO {p}uptime VALUES (?,?,?,?) ON CONFLICT(component, day, status)"
                    f" DO UPDATE SET seconds={p}uptime.seconds+excluded.seconds",
                    (cid, at_ms // DAY_MS, state.status.value, elapsed_secs),
                )
                changes.append(self._incident_for(state, old, at_ms))
            if self.shared:  # rows of nodes gone a day ago
                conn.execute("DELETE FROM status_observations WHERE at_ms < ?", (at_ms - DAY_MS,))
            return changes

        return self.conn.write_once(work)

    def _incident_for(self, state: ComponentState, old: Status, at_ms: int) -> Change:
        cid = state.component.id
        status = state.status
        open_id = self._open_incident_id(cid)
        failing = status.severity > 0
        p = self._p
        if failing and open_id is None:
            title = f"{state.component.name}: {status.value.replace('_', ' ')}"
            row = self.conn.execute(
                f"INSERT INTO {p}incidents(component, name, status, impact, created_ms, "
                "updated_ms) VALUES (?,?,?,?,?,?) RETURNING id",
                (cid, title, "investigating", IMPACT[status], at_ms, at_ms),
            ).fetchone()
            incident_id = int(row[0])
            self._update(incident_id, "investigating", state.reason, at_ms, old, status)
            return Change(state, old, self.incident(incident_id), "opened")
        if failing and open_id is not None and status != old:
            self.conn.execute(
                f"UPDATE {p}incidents SET impact=?, updated_ms=? WHERE id=?",
                (IMPACT[status], at_ms, open_id),
            )
            body = f"now {status.value.replace('_', ' ')}: {state.reason}"
            self._update(open_id, "investigating", body, at_ms, old, status)
            return Change(state, old, self.incident(open_id), "updated")
        if not failing and open_id is not None:
            self.conn.execute(
                f"UPDATE {p}incidents SET status='resolved', updated_ms=?, resolved_ms=? WHERE "
                "id=?",
                (at_ms, at_ms, open_id),
            )
            body = (
                "under maintenance; the incident is closed"
                if status is Status.MAINTENANCE
                else state.reason or f"{state.component.name} is operational again"
            )
            self._update(open_id, "resolved", body, at_ms, old, status)
            return Change(state, old, self.incident(open_id), "resolved")
        return Change(state, old, None, "none")

    def _open_incident_id(self, component: str) -> int | None:
        row = self.conn.execute(
            f"SELECT id FROM {self._p}incidents WHERE component=? AND resolved_ms IS NULL"
            " ORDER BY id DESC LIMIT 1",
            (component,),
        ).fetchone()
        return None if row is None else int(row[0])

    def _update(
        self, incident: int, status: str, body: str, at_ms: int, old: Status, new: Status
    ) -> None:
        self.conn.execute(
            f"INSERT INTO {self._p}incident_updates(incident, status, body, created_ms, "
            "old_status, new_status) VALUES (?,?,?,?,?,?)",
            (incident, status, body, at_ms, old.value, new.value),
        )

    # -- reads

    def component_rows(self) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute(
            f"SELECT id, name, status, reason, created_ms, updated_ms FROM {self._p}components"
        )
        return {
            r[0]: {"name": r[1], "status": r[2], "reason": r[3], "created_ms": r[4],
                   "updated_ms": r[5]}
            for r in rows
        }  # fmt: skip

    def incident(self, incident_id: int) -> Incident | None:
        found = self.incidents(ids=[incident_id])
        return found[0] if found else None

    def incidents(
        self, unresolved_only: bool = False, limit: int = 50, ids: list[int] | None = None
    ) -> list[Incident]:
        sql = (
            "SELECT id, component, name, status, impact, created_ms, updated_ms, resolved_ms"
            f" FROM {self._p}incidents"
        )
        args: list[Any] = []
        if ids is not None:
            sql += f" WHERE id IN ({','.join('?' * len(ids))})"
            args += ids
        elif unresolved_only:
            sql += " WHERE resolved_ms IS NULL"
        rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        out = []
        for r in rows:
            updates = [
                IncidentUpdate(*u)
                for u in self.conn.execute(
                    "SELECT id, status, body, created_ms, old_status, new_status"
                    f" FROM {self._p}incident_updates WHERE incident=? ORDER BY id DESC",
                    (r[0],),
                ).fetchall()
            ]
            out.append(Incident(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], updates))
        return out

    def add_maintenance(
        self, name: str, components: list[str], starts_ms: int, ends_ms: int, body: str = ""
    ) -> int:
        row = self.conn.execute(
            f"INSERT INTO {self._p}maintenances(name, components, starts_ms, ends_ms, "
            "created_ms, body) VALUES (?,?,?,?,?,?) RETURNING id",
            (name, orjson.dumps(components).decode(), starts_ms, ends_ms, now_ms(), body),
        ).fetchone()
        return int(row[0])

    def end_maintenance(self, maintenance_id: int, at_ms: int) -> bool:
        cur = self.conn.execute(
            f"UPDATE {self._p}maintenances SET ends_ms={self._least}(ends_ms, ?) WHERE id=?",
            (at_ms, maintenance_id),
        )
        return cur.rowcount > 0

    def maintenances(
        self, active_at: int | None = None, upcoming_after: int | None = None
    ) -> list[Maintenance]:
        sql = ("SELECT id, name, components, starts_ms, ends_ms, created_ms, body FROM "
               f"{self._p}maintenances")  # fmt: skip
        args: tuple[Any, ...] = ()
        if active_at is not None:
            sql += " WHERE starts_ms <= ? AND ends_ms > ?"
            args = (active_at, active_at)
        elif upcoming_after is not None:
            sql += " WHERE ends_ms > ?"
            args = (upcoming_after,)
        rows = self.conn.execute(sql + " ORDER BY starts_ms", args).fetchall()
        return [Maintenance(r[0], r[1], orjson.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def add_windows(self, windows: list[Maintenance]) -> int:
        """Copy maintenance windows into this (the cluster's) store — a node's own, declared
        before it moved to shared state, so that they go on applying; how many. A window
        the cluster has already (same name, components and times) is not copied twice."""
        copied = 0
        for m in windows:
            row = (m.name, orjson.dumps(m.components).decode(), m.starts_ms, m.ends_ms,
                   m.created_ms, m.body)  # fmt: skip
            copied += self.conn.execute(
                f"INSERT INTO {self._p}maintenances(name, components, starts_ms, ends_ms, "
                f"created_ms, body) SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM "
                f"{self._p}maintenances WHERE name = ? AND components = ? AND starts_ms = ? AND "
                "ends_ms = ?)", (*row, *row[:4]),
            ).rowcount  # fmt: skip
        return copied

    def drop_windows(self, ids: list[int]) -> None:
        """Forget these windows (moved to the cluster's store)."""
        self.conn.executemany(f"DELETE FROM {self._p}maintenances WHERE id=?",
                              [(i,) for i in ids])  # fmt: skip

    def uptime(self, component: str, first_day: int) -> dict[int, dict[str, float]]:
        """Seconds per status per day since ``first_day`` (days since the epoch)."""
        out: dict[int, dict[str, float]] = {}
        for day, status, seconds in self.conn.execute(
            f"SELECT day, status, seconds FROM {self._p}uptime WHERE component=? AND day>=?",
            (component, first_day),
        ).fetchall():
            out.setdefault(int(day), {})[status] = float(seconds)
        return out


def merge(own: list[ComponentState],
          others: list[tuple[str, ComponentState]]) -> list[ComponentState]:  # fmt: skip
    """This node's states with the other nodes': per component the worst, and a component
    only others have is added; a state taken from another node says which node saw it."""
    merged = {s.component.id: s for s in own}
    for node, state in others:
        cid = state.component.id
        if cid in merged and state.status.severity <= merged[cid].status.severity:
            continue
        reason = f"{state.reason} (seen by node {node})" if state.reason else ""
        merged[cid] = ComponentState(merged[cid].component if cid in merged else state.component,
                                     state.status, reason)  # fmt: skip
    return list(merged.values())
