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
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from headwater.status.model import ComponentState, Status

DB_FILE = "status.sqlite"
DAY_MS = 86_400_000
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
    """The status database on one connection (used from one thread at a time)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            directory / DB_FILE, isolation_level=None, check_same_thread=False
        )
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # -- applying checks

    def apply(self, states: list[ComponentState], at_ms: int, elapsed_secs: float) -> list[Change]:
        """Record one check: component states, uptime, and incidents opened, updated or
        resolved. A component inside a maintenance window is recorded as under maintenance."""
        windows = self.maintenances(active_at=at_ms)
        changes: list[Change] = []
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for state in states:
                cid = state.component.id
                if any(w.covers(cid, at_ms) for w in windows):
                    state = ComponentState(state.component, Status.MAINTENANCE, state.reason)
                row = conn.execute("SELECT status FROM components WHERE id=?", (cid,)).fetchone()
                old = Status(row[0]) if row else Status.OPERATIONAL
                conn.execute(
                    "INSERT INTO components VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
                    " name=excluded.name, status=excluded.status, reason=excluded.reason,"
                    " updated_ms=CASE WHEN status=excluded.status THEN updated_ms"
                    " ELSE excluded.updated_ms END",
                    (cid, state.component.name, state.status.value, state.reason, at_ms, at_ms),
                )
                conn.execute(
                    "INSERT INTO uptime VALUES (?,?,?,?) ON CONFLICT(component, day, status)"
                    " DO UPDATE SET seconds=seconds+excluded.seconds",
                    (cid, at_ms // DAY_MS, state.status.value, elapsed_secs),
                )
                changes.append(self._incident_for(state, old, at_ms))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return changes

    def _incident_for(self, state: ComponentState, old: Status, at_ms: int) -> Change:
        cid = state.component.id
        status = state.status
        open_id = self._open_incident_id(cid)
        failing = status.severity > 0
        if failing and open_id is None:
            title = f"{state.component.name}: {status.value.replace('_', ' ')}"
            cur = self.conn.execute(
                "INSERT INTO incidents(component, name, status, impact, created_ms, updated_ms)"
                " VALUES (?,?,?,?,?,?)",
                (cid, title, "investigating", IMPACT[status], at_ms, at_ms),
            )
            incident_id = int(cur.lastrowid or 0)
            self._update(incident_id, "investigating", state.reason, at_ms, old, status)
            return Change(state, old, self.incident(incident_id), "opened")
        if failing and open_id is not None and status != old:
            self.conn.execute(
                "UPDATE incidents SET impact=?, updated_ms=? WHERE id=?",
                (IMPACT[status], at_ms, open_id),
            )
            body = f"now {status.value.replace('_', ' ')}: {state.reason}"
            self._update(open_id, "investigating", body, at_ms, old, status)
            return Change(state, old, self.incident(open_id), "updated")
        if not failing and open_id is not None:
            self.conn.execute(
                "UPDATE incidents SET status='resolved', updated_ms=?, resolved_ms=? WHERE id=?",
                (at_ms, at_ms, open_id),
            )
            body = (
                "under maintenance; the incident is closed"
                if status is Status.MAINTENANCE
                else f"{state.component.name} is operational again"
            )
            self._update(open_id, "resolved", body, at_ms, old, status)
            return Change(state, old, self.incident(open_id), "resolved")
        return Change(state, old, None, "none")

    def _open_incident_id(self, component: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM incidents WHERE component=? AND resolved_ms IS NULL"
            " ORDER BY id DESC LIMIT 1",
            (component,),
        ).fetchone()
        return None if row is None else int(row[0])

    def _update(
        self, incident: int, status: str, body: str, at_ms: int, old: Status, new: Status
    ) -> None:
        self.conn.execute(
            "INSERT INTO incident_updates(incident, status, body, created_ms, old_status,"
            " new_status) VALUES (?,?,?,?,?,?)",
            (incident, status, body, at_ms, old.value, new.value),
        )

    # -- reads

    def component_rows(self) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT id, name, status, reason, created_ms, updated_ms FROM components"
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
            " FROM incidents"
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
                    " FROM incident_updates WHERE incident=? ORDER BY id DESC",
                    (r[0],),
                )
            ]
            out.append(Incident(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], updates))
        return out

    def add_maintenance(
        self, name: str, components: list[str], starts_ms: int, ends_ms: int, body: str = ""
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO maintenances(name, components, starts_ms, ends_ms, created_ms, body)"
            " VALUES (?,?,?,?,?,?)",
            (name, orjson.dumps(components).decode(), starts_ms, ends_ms, now_ms(), body),
        )
        return int(cur.lastrowid or 0)

    def end_maintenance(self, maintenance_id: int, at_ms: int) -> bool:
        cur = self.conn.execute(
            "UPDATE maintenances SET ends_ms=min(ends_ms, ?) WHERE id=?", (at_ms, maintenance_id)
        )
        return cur.rowcount > 0

    def maintenances(
        self, active_at: int | None = None, upcoming_after: int | None = None
    ) -> list[Maintenance]:
        sql = "SELECT id, name, components, starts_ms, ends_ms, created_ms, body FROM maintenances"
        args: tuple[Any, ...] = ()
        if active_at is not None:
            sql += " WHERE starts_ms <= ? AND ends_ms > ?"
            args = (active_at, active_at)
        elif upcoming_after is not None:
            sql += " WHERE ends_ms > ?"
            args = (upcoming_after,)
        rows = self.conn.execute(sql + " ORDER BY starts_ms", args).fetchall()
        return [Maintenance(r[0], r[1], orjson.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def uptime(self, component: str, first_day: int) -> dict[int, dict[str, float]]:
        """Seconds per status per day since ``first_day`` (days since the epoch)."""
        out: dict[int, dict[str, float]] = {}
        for day, status, seconds in self.conn.execute(
            "SELECT day, status, seconds FROM uptime WHERE component=? AND day>=?",
            (component, first_day),
        ):
            out.setdefault(day, {})[status] = seconds
        return out
