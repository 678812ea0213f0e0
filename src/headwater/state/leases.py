"""Leases in the shared PostgreSQL state: which node does a piece of work (delivers to a
destination) now, so that several worker nodes share the work and one's death hands its
part to the others.

A lease is a row ``leases(name, owner, expires_at)``; ``expires_at`` is on PostgreSQL's
clock, so nodes' clocks need not agree. Every ``RENEW_SECS`` a node, in one statement per
lease, renews the ones it holds and takes the ones that are free or expired, and writes its
heartbeat in ``nodes``, and the snapshot of each destination it delivers
(``worker_snapshots``: what a gateway node without delivery of its own shows). It takes no
more than its share — ``ceil(leases / live nodes)`` — and, while it holds more, gives one
back per round (after stopping that work: two nodes never run it at once), so a node that
joins gets work within a few rounds and the work stays spread.

A node holds a lease, as far as it itself is concerned, until ``TTL_SECS - MARGIN_SECS``
after the moment it *sent* its last successful renewal (its own monotonic clock): before
anyone else can take it at ``TTL_SECS`` after PostgreSQL applied it. When it cannot renew
(PostgreSQL unreachable) past that, it stops the work itself. So two nodes deliver to one
destination at once only if a node's event loop stalls for more than ``MARGIN_SECS``
between two checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from headwater.state import postgres
from headwater.state.sql import PostgresConn

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

TTL_SECS = 10.0
RENEW_SECS = 1.0
MARGIN_SECS = 3.0
RECONNECT_SECS = 2.0  # a lease connection retries a statement this long at most
PRUNE_SECS = 60.0  # how often a node deletes the rows of nodes silent for a day
T = TypeVar("T")


def node_id(role: str) -> str:
    """This process as a node: ``host:pid:random`` (unique across restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class Round:
    owners: dict[str, str]  # lease name -> its owner now (absent: nobody holds it)
    live_nodes: int
    valid_until: float  # monotonic: this node's own leases are safe to act on until then
    surplus: list[str]  # held beyond this node's share: stop the work, then release() it


class Leases:
    """The leases of one node, on a connection of their own (not the stores': a store's
    reconnect must not delay a renewal)."""

    def __init__(self, conn: PostgresConn, node: str, role: str) -> None:
        self.conn = conn
        self.node = node
        self.role = role
        self.started_ms = int(time.time() * 1000)
        self._beat_at = -math.inf  # monotonic time of the last heartbeat, and of the last prune
        self._pruned_at = -math.inf

    def heartbeat(self, *, every: float = 0.0) -> None:
        """This node is alive (the status page's Nodes component reads these); nothing when
        the last heartbeat is under ``every`` seconds old. Rows of nodes silent for a day
        are pruned once a minute."""
        now = time.monotonic()
        if now - self._beat_at < every:
            return
        self.conn.execute(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?, now()) ON CONFLICT(node) DO UPDATE SET"
            " heartbeat_at = now()",
            (self.node, self.role, socket.gethostname(), os.getpid(), self.started_ms),
        )
        self._beat_at = now
        if now - self._pruned_at >= PRUNE_SECS:
            self.conn.execute("DELETE FROM nodes WHERE heartbeat_at < now() - interval '1 day'")
            self._pruned_at = now

    def round(self, names: Sequence[str], snapshots: Mapping[str, str] | None = None) -> Round:
        """Heartbeat, renew what this node holds, take its share of what is free, and
        publish ``snapshots`` (destination -> JSON) of the destinations it delivered."""
        sent = time.monotonic()
        conn = self.conn
        self.heartbeat()
        live = conn.execute(
            "SELECT count(*) FROM nodes WHERE role = ? AND heartbeat_at > now() -"
            " make_interval(secs => ?)",
            (self.role, TTL_SECS),
        ).fetchone()[0]
        owners = self._owners(names)
        mine = sorted(n for n in names if owners.get(n) == self.node)
        share = math.ceil(len(names) / max(1, int(live)))
        for name in mine:
            self._claim(name)
        free = [n for n in names if n not in owners]
        for name in free[: max(0, share - len(mine))]:
            if self._claim(name):
                mine.append(name)
        surplus = [mine[-1]] if len(mine) > share else []  # a node joined: one per round
        rows = [(n, self.node, doc) for n, doc in (snapshots or {}).items() if n in mine]
        if rows:
            conn.executemany(
                "INSERT INTO worker_snapshots VALUES (?, ?, ?, now()) ON CONFLICT(name) DO"
                " UPDATE SET node = excluded.node, doc = excluded.doc, updated_at = now()",
                rows,
            )
        # owners read again: a renewal can fail (the lease expired and another node took
        # it), and what this node holds now is what the database says, not what it asked
        return Round(self._owners(names), int(live), sent + TTL_SECS - MARGIN_SECS, surplus)

    def snapshots(self) -> dict[str, str]:
        """The latest snapshot of each destination whose deliverer holds its lease now."""
        rows = self.conn.execute(
            "SELECT s.name, s.doc FROM worker_snapshots s JOIN leases l ON l.name = s.name"
            " AND l.owner = s.node AND l.expires_at > now()"
        ).fetchall()
        return {str(name): str(doc) for name, doc in rows}

    def _owners(self, names: Sequence[str]) -> dict[str, str]:
        if not names:
            return {}
        marks = ",".join("?" * len(names))
        rows = self.conn.execute(
            f"SELECT name, owner FROM leases WHERE name IN ({marks}) AND expires_at > now()",
            tuple(names),
        ).fetchall()
        return dict(rows)

    def _claim(self, name: str) -> bool:
        """Renew ``name`` if this node holds it, take it if it is free or expired."""
        row = self.conn.execute(
            "INSERT INTO leases VALUES (?, ?, now() + make_interval(secs => ?), now())"
            " ON CONFLICT(name) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at, taken_at = CASE WHEN leases.owner ="
            " excluded.owner THEN leases.taken_at ELSE excluded.taken_at END"
            " WHERE leases.owner = excluded.owner OR leases.expires_at <= now() RETURNING name",
            (name, self.node, TTL_SECS),
        ).fetchone()
        return row is not None

    def release(self, names: Sequence[str] | None = None) -> None:
        """Give leases back (all of this node's when ``names`` is None): another node takes
        them at its next round, without waiting for them to expire."""
        if names is None:
            self.conn.execute("DELETE FROM leases WHERE owner = ?", (self.node,))
            self.conn.execute("DELETE FROM nodes WHERE node = ?", (self.node,))
            return
        for name in names:
            self.conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?",
                              (name, self.node))  # fmt: skip

    def close(self) -> None:
        self.conn.close()


class LeaseThread:
    """A node's :class:`Leases` on a thread of their own, for an event loop: a PostgreSQL
    that stalls delays these calls, never the loop. Used by the delivery engine (worker
    nodes) and by a gateway node's view of delivery."""

    def __init__(self, pool: ThreadPoolExecutor, held: Leases) -> None:
        self._pool = pool
        self.leases = held

    @classmethod
    async def open(cls, state: StateConfig, node: str, role: str) -> LeaseThread:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hw-leases-{role}")
        quick = state.model_copy(
            update={"reconnect_secs": min(RECONNECT_SECS, state.reconnect_secs)}
        )
        conn = await asyncio.get_running_loop().run_in_executor(pool, postgres.connect, quick)
        return cls(pool, Leases(conn, node, role))

    async def call(self, fn: Callable[[Leases], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self.leases)

    async def close(self, within: float | None = None) -> None:
        """Release this node's leases and heartbeat (unreachable: they expire by
        themselves), then close the connection — here when the thread cannot, never
        leaking the socket. ``within``: seconds each step may take, and the thread is then
        not waited for."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call(lambda held: held.release()), within)
        try:
            await asyncio.wait_for(self.call(lambda held: held.close()), within)
        except Exception:
            with contextlib.suppress(Exception):
                self.leases.close()
        self._pool.shutdown(wait=within is None)
