"""One connection interface over SQLite and PostgreSQL, for the stores that live on either.

A store writes its SQL once, in the dialect both engines accept (``?`` placeholders,
``ON CONFLICT … DO UPDATE``, ``RETURNING``, ``IS NOT DISTINCT FROM``, quoted ``"offset"``),
and runs it on a :class:`SqlConn`:

- :class:`SqliteConn`, a file in the data directory (the embedded default);
- :class:`PostgresConn`, a schema in a PostgreSQL database shared by every node
  (``state: {backend: postgres}``, docs/scale-out.md). Placeholders are rewritten for
  psycopg; the schema is brought up to date by :mod:`headwater.state.migrations` at open.

PostgreSQL is a server that restarts; the connection heals itself:

- a statement outside a transaction that fails because the connection is gone is retried on
  a new connection until ``reconnect_secs`` have passed (a read asks again; a lone write that
  the server never received is sent again);
- :meth:`SqlConn.write_once` runs a transaction **exactly once**: each transaction also
  writes this connection's next *write mark* (a row of ``write_marks``); when the connection
  breaks during ``COMMIT`` — the one moment the client cannot know whether it happened — the
  new connection waits until the transaction's backend (its pid and start time, from
  ``pg_stat_activity``) is gone — terminating it after a second, which settles a commit it
  was still finishing — then reads the mark back, and the work is done again only if the
  mark is not there. So a delivery worker that retries the outcomes it could not record
  never records them twice, nor loses one. ``txid_status()`` cannot answer this: after a
  crash a transaction whose WAL never reached the disk leaves its id unused, the restarted
  server hands it to the next transaction, and the lost one reads as "committed" (or as "in
  progress", someone else's); and a mark read while the backend may still commit is not
  final.
- keepalives and ``tcp_user_timeout`` make a connection to a cut-off server fail in ~15 s.

While PostgreSQL is unreachable the calls wait (the delivery workers stall and the log keeps
accepting); past ``reconnect_secs`` they raise :class:`StateUnavailable`, which says so.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql

T = TypeVar("T")
logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECS = 5
NETWORK_LIMITS = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                  "keepalives_count": 3, "tcp_user_timeout": 15_000}  # fmt: skip
"""libpq settings so a connection to a server cut off without a reset (network partition)
fails within ~15 s instead of TCP's minutes: a call then reconnects or reports it."""
SCHEMA_LOCK_KEY = 0x4857_5354  # "HWST": the advisory lock schema creation and migrations hold
WRITE_MARKS = ("CREATE TABLE IF NOT EXISTS {} (writer text PRIMARY KEY, mark bigint NOT NULL,"
               " at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
"""One row per connection: the number of its last transaction, written by the transaction
itself, so that a COMMIT whose answer was lost can be looked up
(:meth:`PostgresConn._committed`)."""


class StateUnavailable(RuntimeError):
    """The state database does not answer (PostgreSQL down or unreachable)."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Any: ...


class SqlConn(Protocol):
    """What a store needs of its database."""

    dialect: str
    """``sqlite`` or ``postgres``."""

    where: str
    """The database, for messages (a path, or host:port/database schema)."""

    def execute(self, query: str, args: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None: ...
    def write_once(self, work: Callable[[], T]) -> T: ...
    def interrupt(self) -> None: ...
    def close(self) -> None: ...


class SqliteConn:
    """A SQLite connection in autocommit mode; transactions take the write lock at once."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self.raw = conn
        self.where = where

    def execute(self, query: str, args: Sequence[Any] = ()) -> Cursor:
        return self.raw.execute(query, args)

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(query, rows)

    def write_once(self, work: Callable[[], T]) -> T:
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            self.raw.execute("COMMIT")
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        return result

    def interrupt(self) -> None:
        """Nothing waits on a local file."""

    def close(self) -> None:
        self.raw.close()


@functools.lru_cache(maxsize=512)
def to_psycopg(query: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled). The stores' SQL has
    no ``?`` inside string literals."""
    return query.replace("%", "%%").replace("?", "%s")


class PostgresConn:
    """A psycopg connection to ``dsn`` with ``search_path`` set to ``schema``, reconnecting."""

    dialect = "postgres"

    TERMINATE_AFTER_SECS = 1.0
    """How long a backend whose client lost a COMMIT's answer may go on before it is
    terminated (a commit takes milliseconds; one still running after this is stuck)."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        password_env: str | None = None,
        reconnect_secs: float = 60.0,
        on_connect: Callable[[psycopg.Connection[Any]], object] | None = None,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.password_env = password_env
        self.reconnect_secs = reconnect_secs
        self._on_connect = on_connect
        self._conn: psycopg.Connection[Any] | None = None
        self._in_transaction = False
        self._tx: psycopg.Connection[Any] | None = None  # the connection begin() opened on
        self._writer = uuid.uuid4().hex  # this connection's row of write_marks
        self._mark = 0
        self._closed = False
        self.reconnects = 0
        self.where = where_of(dsn, schema)
        self._connect(first=True)

    # -- connecting

    def _connect(self, *, first: bool = False) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_SECS,
            "autocommit": True,
            **NETWORK_LIMITS,
            **password_from(self.password_env),
        }
        deadline = time.monotonic() + self.reconnect_secs
        wait = 0.1
        while True:
            try:
                conn = psycopg.connect(self.dsn, **extra)
            except psycopg.OperationalError as exc:
                if time.monotonic() + wait > deadline or self._closed:
                    raise StateUnavailable(
                        f"PostgreSQL at {self.where} does not answer ({first_line(exc)}); "
                        "check that it runs and that state.dsn is right"
                    ) from exc
                if first:
                    logger.warning("PostgreSQL at %s: %s; trying again", self.where,
                                   first_line(exc))  # fmt: skip
                time.sleep(wait)
                wait = min(wait * 2, 2.0)
                continue
            try:
                self._prepare(conn)
                break
            except psycopg.OperationalError as exc:
                conn.close()
                if time.monotonic() + wait > deadline or self._closed:
                    raise StateUnavailable(
                        f"PostgreSQL at {self.where}: {first_line(exc)}"
                    ) from exc
                time.sleep(wait)
            except BaseException:
                conn.close()
                raise
        if not first:
            self.reconnects += 1
            logger.warning("reconnected to PostgreSQL at %s", self.where)
        self._conn = conn
        return conn

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """The schema (created under the migrations' lock: two nodes starting at once would
        race on ``CREATE SCHEMA IF NOT EXISTS``), the search path, then ``on_connect``."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                  (self.schema,)).fetchone()  # fmt: skip
            if exists is None:  # a role without CREATE on the database can use a made schema
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            marks = sql.Identifier(self.schema, "write_marks")
            conn.execute(sql.SQL(WRITE_MARKS).format(marks))
            conn.execute(sql.SQL("DELETE FROM {} WHERE at < now() - interval '7 days'")
                         .format(marks))  # fmt: skip  # of connections long closed
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if self._on_connect is not None:
            self._on_connect(conn)

    @property
    def raw(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            if self._closed:
                raise StateUnavailable(f"the connection to PostgreSQL at {self.where} is closed")
            conn = self._connect()
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # -- statements

    def execute(self, query: str, args: Sequence[Any] = ()) -> Cursor:
        if self._in_transaction:  # the transaction's owner decides what a failure means
            return (self._tx or self.raw).execute(to_psycopg(query), args)
        return self._again(lambda conn: conn.execute(to_psycopg(query), args))

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        if self._in_transaction:
            (self._tx or self.raw).cursor().executemany(to_psycopg(query), list(rows))
            return
        listed = list(rows)
        self._again(lambda conn: conn.cursor().executemany(to_psycopg(query), listed))

    def _again(self, statement: Callable[[psycopg.Connection[Any]], T]) -> T:
        deadline = time.monotonic() + self.reconnect_secs
        while True:
            try:
                return statement(self.raw)
            except psycopg.OperationalError as exc:
                if (not _connection_lost(exc, self._conn) or time.monotonic() > deadline
                        or self._closed):  # fmt: skip
                    raise
                logger.warning("PostgreSQL at %s: %s; reconnecting", self.where, first_line(exc))
                self._drop()

    def begin(self) -> None:
        """Open a transaction the caller ends with :meth:`commit` or :meth:`rollback` (for a
        store whose transaction carries its own position, so a lost COMMIT is found out by
        reading it back). Its statements run on the connection it began on: if that breaks,
        they fail — none runs outside the transaction on a new one."""
        conn = self.raw
        try:
            conn.execute("BEGIN")
        except psycopg.OperationalError as exc:  # a connection the server dropped: once more
            if not _connection_lost(exc, conn) or self._closed:
                raise
            self._drop()
            conn = self.raw
            conn.execute("BEGIN")
        self._tx, self._in_transaction = conn, True

    def commit(self) -> None:
        conn, self._tx, self._in_transaction = self._tx, None, False
        if conn is None:
            raise RuntimeError("commit() without begin()")
        try:
            conn.execute("COMMIT")
        except psycopg.OperationalError:
            self._drop()
            raise

    def rollback(self) -> None:
        conn, self._tx, self._in_transaction = self._tx, None, False
        if conn is None:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop()  # a broken connection: the server rolls back on its own

    def write_once(self, work: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.reconnect_secs
        while True:
            conn = self.raw
            txid: int | None = None
            backend: tuple[int, object] = (0, None)
            committing = False
            self._mark += 1
            try:
                self._in_transaction = True
                conn.execute("BEGIN")
                txid, pid, since = conn.execute(  # type: ignore[misc]
                    "WITH mark AS (INSERT INTO write_marks(writer, mark) VALUES (%s, %s)"
                    " ON CONFLICT (writer) DO UPDATE SET mark = excluded.mark, at = now())"
                    " SELECT txid_current(), pid, backend_start FROM pg_stat_activity"
                    " WHERE pid = pg_backend_pid()",
                    (self._writer, self._mark),
                ).fetchone()
                backend = (pid, since)
                result = work()
                committing = True
                conn.execute("COMMIT")
                return result
            except psycopg.OperationalError as exc:
                lost = _connection_lost(exc, conn)
                self._in_transaction = False
                if not lost:
                    _rollback(conn)
                    raise
                self._drop()
                logger.warning("PostgreSQL at %s: %s during a write; reconnecting", self.where,
                               first_line(exc))  # fmt: skip
                if committing and txid is not None:
                    # the one ambiguous moment: find out, however long it takes, before
                    # anything else is written (a redo after a commit would write it twice)
                    if self._committed(txid, backend):
                        return result
                elif time.monotonic() > deadline:
                    raise StateUnavailable(f"PostgreSQL at {self.where} went away during a "
                                           f"write: {first_line(exc)}") from exc  # fmt: skip
            except BaseException:
                self._in_transaction = False
                _rollback(conn)
                raise
            finally:
                self._in_transaction = False

    def _committed(self, txid: int, backend: tuple[int, object]) -> bool:
        """Whether the transaction whose COMMIT got no answer was committed after all: its
        write mark is there once its backend is gone. Asked until PostgreSQL answers (while
        it is unreachable, the store waits: writing anything else first could write this
        twice). While the backend (pid and start time, so a reused pid is not mistaken for
        it) is still in ``pg_stat_activity`` — finishing the COMMIT, or not yet aware the
        client is gone — its transaction may still commit; it is terminated after a second,
        which settles it. A server restarted or reset after a crash has none of its backends
        of before, so the mark it recovered is final at once."""
        pid, since = backend
        alive_sql = "FROM pg_stat_activity WHERE pid = %s AND backend_start = %s"
        started = time.monotonic()
        terminated = False
        while True:
            if self._closed:  # closing: what happened stays unknown to this process
                raise StateUnavailable(f"closed before PostgreSQL at {self.where} said "
                                       f"whether transaction {txid} committed")  # fmt: skip
            try:
                [alive] = self._again(lambda conn: conn.execute(  # type: ignore[misc]
                    f"SELECT count(*) {alive_sql}", (pid, since)).fetchone())  # fmt: skip
                if not alive:
                    row = self._again(lambda conn: conn.execute(
                        "SELECT mark FROM write_marks WHERE writer = %s", (self._writer,)
                    ).fetchone())  # fmt: skip
                    break
            except (StateUnavailable, psycopg.OperationalError) as exc:
                if not self._closed:  # closed: the loop's first line says so
                    logger.warning("PostgreSQL at %s: cannot yet tell whether transaction %s "
                                   "committed (%s); asking again", self.where, txid,
                                   first_line(exc))  # fmt: skip
                    time.sleep(1.0)
                continue
            if not terminated and time.monotonic() - started > self.TERMINATE_AFTER_SECS:
                terminated = True
                with contextlib.suppress(psycopg.Error):
                    self._again(lambda conn: conn.execute(
                        f"SELECT pg_terminate_backend(pid) {alive_sql}", (pid, since)))  # fmt: skip
            time.sleep(0.05)
        committed = row is not None and row[0] == self._mark
        logger.warning("PostgreSQL: the interrupted transaction %s %s", txid,
                       "committed" if committed else "did not commit")  # fmt: skip
        return committed

    def interrupt(self) -> None:
        """Stop waiting for PostgreSQL: a call reconnecting or waiting on another thread
        raises :class:`StateUnavailable` at its next try, and no new connection is made
        (for a store being closed while its server is away)."""
        self._closed = True

    def close(self) -> None:
        self._closed = True
        self._drop()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute("ROLLBACK")


def _connection_lost(exc: psycopg.OperationalError, conn: psycopg.Connection[Any] | None) -> bool:
    """A broken connection (server restarted, network cut), not a query that failed."""
    if conn is None or conn.closed or conn.broken:
        return True
    return server_gone(getattr(exc, "sqlstate", None) or "")


def server_gone(sqlstate: str) -> bool:
    """An SQLSTATE that means the session is over, not that the statement was wrong: 08
    (connection exception) and 57P (the server ended it: admin or crash shutdown, cannot
    connect now, database dropped, idle-session timeout). The session's stores reconnect
    (a dropped database then fails to connect, and says so)."""
    return sqlstate.startswith(("08", "57P"))


def password_from(password_env: str | None) -> dict[str, str]:
    """libpq's ``password`` from the environment variable ``state.password_env`` names (none
    named: libpq's own PGPASSWORD / ~/.pgpass); StateUnavailable when it is not set."""
    if not password_env:
        return {}
    password = os.environ.get(password_env)
    if password is None:
        raise StateUnavailable(f"the environment variable {password_env} (state.password_env) "
                               "is not set")  # fmt: skip
    return {"password": password}


def where_of(dsn: str, schema: str) -> str:
    """``host:port/database schema S``, for messages (never the password)."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return (f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/"
            f"{info.get('dbname', '')} schema {schema}")  # fmt: skip


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
