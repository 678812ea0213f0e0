"""The PostgreSQL connection of the state stores, on real servers: reconnecting after a
restart, waiting while the server is down, at-most-once transactions when a COMMIT's answer is
lost, and versioned migrations."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from headwater.state import migrations
from headwater.state.migrations import MigrationError, migrate
from headwater.state.sql import PostgresConn, StateUnavailable, to_psycopg
from tests.fakes import free_port
from tests.postgres import Postgres, cluster


@pytest.fixture(scope="module")
def own() -> Iterator[Postgres]:
    """A cluster these tests may stop and start (the session's is shared by other workers)."""
    with cluster() as server:
        yield server


def later(secs: float, fn: object) -> threading.Thread:
    def run() -> None:
        time.sleep(secs)
        fn()  # type: ignore[operator]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def table(conn: PostgresConn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t(id bigserial PRIMARY KEY, v text)")


def test_placeholders_become_psycopgs_and_a_percent_stays_literal() -> None:
    assert to_psycopg("SELECT ? WHERE k LIKE 'span:%'") == "SELECT %s WHERE k LIKE 'span:%%'"


def test_a_statement_after_a_restart_runs_on_a_new_connection(own: Postgres) -> None:
    conn = PostgresConn(own.dsn(), "restart_read", reconnect_secs=30)
    try:
        table(conn)
        conn.execute("INSERT INTO t(v) VALUES (?)", ("before",))
        own.stop("fast")
        own.start()
        assert conn.execute("SELECT v FROM t").fetchall() == [("before",)]
        assert conn.reconnects == 1
    finally:
        conn.close()


def test_a_write_waits_while_postgres_is_down_and_lands_once(own: Postgres) -> None:
    conn = PostgresConn(own.dsn(), "down_write", reconnect_secs=30)
    try:
        table(conn)
        own.stop("immediate")  # as a crash: no goodbye to the clients
        starter = later(1.5, own.start)
        conn.write_once(lambda: conn.execute("INSERT INTO t(v) VALUES (?)", ("during",)))
        starter.join()
        assert conn.execute("SELECT v FROM t").fetchall() == [("during",)]
    finally:
        conn.close()
        if not _answers(own):
            own.start()


def test_past_reconnect_secs_the_caller_hears_postgres_is_unreachable(own: Postgres) -> None:
    conn = PostgresConn(own.dsn(), "gone", reconnect_secs=1)
    own.stop("fast")
    try:
        with pytest.raises(StateUnavailable, match=rf"127.0.0.1:{own.port}/postgres"):
            conn.execute("SELECT 1")
        with pytest.raises(StateUnavailable, match="does not answer"):
            PostgresConn(own.dsn(), "gone", reconnect_secs=0.5)
    finally:
        own.start()
        conn.close()


def _answers(server: Postgres) -> bool:
    try:
        psycopg.connect(server.dsn(), connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


class CuttingProxy:
    """A TCP proxy to PostgreSQL that, once armed, cuts the connection that sends COMMIT:
    after passing it on (the server commits; the answer never reaches the client) or before
    (the server never sees it)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.cut: str | None = None  # "after", "before" or "crash": the next COMMIT
        self.crash: Callable[[], None] | None = None
        self.cuts = 0
        self._deaf = False  # answers from the server are dropped
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self) -> str:
        return f"postgresql://headwater@127.0.0.1:{self.port}/postgres"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if not upward and self._deaf:
                    continue
                if upward and self.cut and b"COMMIT" in chunk:
                    mode, self.cut = self.cut, None
                    self._deaf = True
                    if mode == "after":
                        dst.sendall(chunk)
                        time.sleep(0.5)  # the server commits; its answer is dropped
                    elif mode == "crash" and self.crash is not None:
                        self.crash()  # the server goes down before it sees the COMMIT
                    self.cuts += 1
                    for s in (src, dst):
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)
                            s.close()
                    self._deaf = False
                    return
                dst.sendall(chunk)

    def close(self) -> None:
        self._listener.close()


@pytest.mark.parametrize("cut", ["after", "before"])
def test_a_commit_whose_answer_is_lost_is_done_exactly_once(postgres: Postgres, cut: str) -> None:
    proxy = CuttingProxy(postgres.port)
    schema = f"cut_{cut}"
    conn = PostgresConn(proxy.dsn(), schema, reconnect_secs=30)
    try:
        conn.execute("DROP TABLE IF EXISTS t")
        table(conn)
        runs = []

        def work() -> None:
            runs.append(1)
            conn.execute("INSERT INTO t(v) VALUES (?)", ("once",))

        proxy.cut = cut
        conn.write_once(work)
        assert proxy.cuts == 1 and conn.reconnects == 1
        # Cut after: PostgreSQL committed; asked, it says so, and the work is not done again.
        # Cut before: it never saw the COMMIT, the transaction aborted, the work is redone.
        assert len(runs) == (1 if cut == "after" else 2)
        assert conn.execute("SELECT v FROM t").fetchall() == [("once",)]
    finally:
        conn.close()
        proxy.close()


@pytest.mark.parametrize("ends", ["commits", "is_terminated"])
def test_a_commit_still_running_when_its_answer_is_lost_is_settled_before_the_mark_is_read(
    postgres: Postgres, ends: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The COMMIT is slow (a deferred trigger sleeps in it, on the first attempt only) and
    the connection is cut while it runs: the mark is not there yet, but the backend is. It
    is waited for — and the commit it finishes counts — or terminated, and the work redone."""
    proxy = CuttingProxy(postgres.port)
    conn = PostgresConn(proxy.dsn(), f"slow_commit_{ends}", reconnect_secs=30)
    secs = 1.5 if ends == "commits" else 60
    if ends == "commits":
        monkeypatch.setattr(PostgresConn, "TERMINATE_AFTER_SECS", 30.0)
    try:
        conn.execute("DROP TABLE IF EXISTS t; DROP SEQUENCE IF EXISTS attempts")
        table(conn)
        conn.execute(
            "CREATE SEQUENCE attempts;"
            " CREATE OR REPLACE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF nextval('attempts') = 1 THEN PERFORM pg_sleep({secs}); END IF;"
            " RETURN NULL; END $$;"
            " CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW EXECUTE FUNCTION slow_once()"
        )
        runs = []

        def work() -> None:
            runs.append(1)
            conn.execute("INSERT INTO t(v) VALUES (?)", ("once",))

        proxy.cut = "after"  # cut 0.5 s after the COMMIT went up: the trigger still sleeps
        conn.write_once(work)
        assert proxy.cuts == 1
        assert len(runs) == (1 if ends == "commits" else 2)
        assert conn.execute("SELECT v FROM t").fetchall() == [("once",)]
    finally:
        conn.close()
        proxy.close()


def test_a_commit_lost_in_a_crash_is_redone_though_its_txid_is_reused(own: Postgres) -> None:
    """The server crashes as the COMMIT is on its way; the transaction's WAL never reached
    the disk, so the restarted server hands its id to the next transactions, and
    ``txid_status()`` of that id says "committed". The write mark says what happened."""
    proxy = CuttingProxy(own.port)
    conn = PostgresConn(proxy.dsn(), "crashed_commit", reconnect_secs=30)

    def crash() -> None:
        own.stop("immediate")
        own.start()
        with psycopg.connect(own.dsn(), autocommit=True) as other:
            for _ in range(5):  # other clients' transactions take the ids again
                other.execute("CREATE TEMP TABLE x(i int); DROP TABLE x")

    try:
        table(conn)
        runs = []

        def work() -> None:
            runs.append(1)
            conn.execute("INSERT INTO t(v) VALUES (?)", ("once",))

        proxy.crash, proxy.cut = crash, "crash"
        conn.write_once(work)
        assert proxy.cuts == 1 and len(runs) == 2
        assert conn.execute("SELECT v FROM t").fetchall() == [("once",)]
    finally:
        conn.close()
        proxy.close()
        if not _answers(own):
            own.start()


def test_migrations_run_once_in_order_and_a_newer_schema_is_refused(postgres: Postgres) -> None:
    known = migrations.migrations()
    assert [m.version for m in known] == sorted({m.version for m in known})
    first = PostgresConn(postgres.dsn(), "migrated", on_connect=migrate)
    try:
        versions = [r[0] for r in first.execute("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in known]
        # Several nodes connecting at once: each file still ran once.
        threads = [threading.Thread(target=lambda: PostgresConn(postgres.dsn(), "migrated",
                                                                on_connect=migrate).close())
                   for _ in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert first.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(known)
        first.execute("INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', 0)")
        with pytest.raises(MigrationError, match=r"\[9999\].*a newer Headwater wrote it"):
            PostgresConn(postgres.dsn(), "migrated", on_connect=migrate)
    finally:
        first.close()


def test_two_nodes_creating_a_fresh_schema_at_once_both_succeed(postgres: Postgres) -> None:
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            PostgresConn(postgres.dsn(), "fresh_race", on_connect=migrate).close()
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
