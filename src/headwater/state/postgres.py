"""The workspace's PostgreSQL state (``state: {backend: postgres}``): a connection to its
schema, migrated to this Headwater's version (:mod:`headwater.state.migrations`)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import psycopg
from psycopg import sql

from headwater.sqlite_files import open_store
from headwater.state.migrations import migrate
from headwater.state.sql import (
    PostgresConn,
    SqlConn,
    SqliteConn,
    StateUnavailable,
    first_line,
    password_from,
    where_of,
)

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

logger = logging.getLogger(__name__)
ADOPT_LOCK_KEY = 0x4857_4144  # "HWAD": nodes adopting their former files take turns
ADOPTED_SUFFIX = ".adopted"
Adopt = Callable[[SqlConn, sqlite3.Connection], str]
"""Copies a store's rows from its former SQLite file into PostgreSQL (inside a transaction)
and says what it copied and what it could not."""


def connect(
    state: StateConfig,
    *,
    schema: str | None = None,
    on_connect: Callable[[psycopg.Connection[Any]], object] = migrate,
    reconnect_secs: float | None = None,
) -> PostgresConn:
    """A new connection (each store has its own: they run on their own threads) to the
    workspace's schema, migrated — or to a store's own ``schema``, prepared by its
    ``on_connect``; ``reconnect_secs`` when a caller waits less than ``state`` says."""
    if state.backend != "postgres" or state.dsn is None:
        raise ValueError("connect() is for state: {backend: postgres, dsn: ...}")
    return PostgresConn(state.dsn, schema or state.schema_name, password_env=state.password_env,
                        reconnect_secs=state.reconnect_secs if reconnect_secs is None
                        else reconnect_secs, on_connect=on_connect)  # fmt: skip


def uses_postgres(state: StateConfig | None) -> TypeGuard[StateConfig]:
    return state is not None and state.backend == "postgres"


def store_conn(state: StateConfig | None, path: Path, schema: str, *, what: str,
               version: int | None, adopt: Adopt | None = None,
               reconnect_secs: float | None = None) -> SqlConn:  # fmt: skip
    """A small store's connection: PostgreSQL's schema with ``state: {backend: postgres}``
    (its tables come from the migrations), else its SQLite file at ``path``, made with
    ``schema`` (WAL, ``synchronous=FULL``: such stores hold few, precious rows).

    A node moved to shared state keeps what its file held: the first time it opens the
    store on PostgreSQL with the file still there, ``adopt`` copies the rows in and the file
    is renamed ``….adopted`` (kept, never read again)."""
    if uses_postgres(state):
        conn = connect(state, reconnect_secs=reconnect_secs)
        if adopt is not None and path.exists():
            try:
                adopt_file(conn, path, adopt, what=what)
            except BaseException:
                conn.close()
                raise
        return conn
    raw = open_store(path, schema, what=what, version=version, synchronous="FULL")
    return SqliteConn(raw, str(path))


def adopt_file(conn: SqlConn, path: Path, adopt: Adopt, *, what: str) -> None:
    """Copy ``path``'s rows into ``conn`` in one transaction (under a lock, so two nodes
    adopting at once take turns), then rename the file (and any ``-wal``) aside."""
    local = sqlite3.connect(path)
    try:
        local.execute("PRAGMA query_only = 1")

        def work() -> str:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (ADOPT_LOCK_KEY,))
            return adopt(conn, local)

        said = conn.write_once(work)
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{what}: {path} is left from before shared state but cannot be "
                         f"read ({exc}); move it away to start without it") from exc  # fmt: skip
    finally:
        local.close()
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(part.with_name(part.name + ADOPTED_SUFFIX))
    logger.warning("%s: %s from %s (now state: postgres); the file is kept as %s%s", what,
                   said, path, path.name, ADOPTED_SUFFIX)  # fmt: skip


PROBE_TIMEOUT_SECS = 2
NODES_SHOWN_SECS = 900.0
"""A node that stopped heartbeating (crashed: a graceful stop removes it) is shown as down
for this long, then forgotten."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: str
    role: str
    host: str
    pid: int
    started_ms: int
    heartbeat_age_secs: float
    destinations: list[str]  # whose leases it holds now


class Probe:
    """Whether the state database answers, for the status page: a new connection each time
    (libpq's ``connect_timeout`` bounds the whole attempt, so a server that is stopped or
    cut off is reported within seconds, never waited for)."""

    def __init__(self, state: StateConfig) -> None:
        assert state.dsn is not None
        self.dsn = state.dsn
        self.password_env = state.password_env
        self.schema = state.schema_name
        self.where = where_of(state.dsn, state.schema_name)

    def cluster(self) -> list[NodeRow]:
        """Every node seen in the last ``NODES_SHOWN_SECS`` with the destinations it holds
        leases on now (the console's Cluster page); StateUnavailable when PostgreSQL does
        not answer."""
        try:
            with self._connect() as conn:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
                nodes = conn.execute(
                    "SELECT node, role, host, pid, started_ms, extract(epoch FROM now() -"
                    " heartbeat_at)::float8 FROM nodes WHERE heartbeat_at > now() -"
                    " make_interval(secs => %s) ORDER BY role DESC, node",
                    (NODES_SHOWN_SECS,),
                ).fetchall()
                held = conn.execute(
                    "SELECT owner, name FROM leases WHERE expires_at > now() ORDER BY name"
                ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
        except psycopg.Error as exc:
            raise StateUnavailable(f"PostgreSQL at {self.where}: {first_line(exc)}") from exc
        leases: dict[str, list[str]] = {}
        for owner, name in held:
            leases.setdefault(str(owner), []).append(str(name))
        return [
            NodeRow(str(n), str(role), str(host), int(pid), int(started), float(age),
                    leases.get(str(n), []))
            for n, role, host, pid, started, age in nodes
        ]  # fmt: skip

    def check(self) -> tuple[str | None, float | None, list[tuple[str, str, float]]]:
        """(why it does not answer, or None; the round trip in ms when it answers; the
        nodes that wrote a heartbeat in the last ``NODES_SHOWN_SECS``: name, role and the
        age of their last one in seconds)."""
        started = time.perf_counter()
        try:
            with self._connect() as conn:
                conn.execute("SELECT 1")
                latency = (time.perf_counter() - started) * 1000
                nodes = self._nodes(conn)
        except StateUnavailable as exc:
            return str(exc), None, []
        except psycopg.Error as exc:
            return first_line(exc), None, []
        return None, latency, nodes

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection, within ``PROBE_TIMEOUT_SECS``; StateUnavailable when the
        password's environment variable is not set."""
        extra: dict[str, object] = {"connect_timeout": PROBE_TIMEOUT_SECS,
                                    **password_from(self.password_env)}  # fmt: skip
        return psycopg.connect(self.dsn, **extra)  # type: ignore[arg-type]

    def _nodes(self, conn: psycopg.Connection[Any]) -> list[tuple[str, str, float]]:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        try:
            rows = conn.execute(
                "SELECT node, role, extract(epoch FROM now() - heartbeat_at)::float8 FROM nodes"
                " WHERE heartbeat_at > now() - make_interval(secs => %s) ORDER BY node",
                (NODES_SHOWN_SECS,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # no worker has migrated the schema yet
            return []
        return [(str(node), str(role), float(age)) for node, role, age in rows]
