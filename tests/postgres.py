"""A throwaway PostgreSQL cluster, started once per test session for every suite that asks.

Debian's ``initdb`` and ``postgres`` (``/usr/lib/postgresql/*/bin``) refuse to run as root,
so when the tests run as root the cluster belongs to the ``postgres`` system user (or
``nobody``) and is started with ``runuser``. It listens on 127.0.0.1 on a free port, trusts
local connections, and is stopped (``pg_ctl stop -m immediate``) and deleted at the end.
Under ``CI=true`` a missing PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from headwater.config.workspace import StateConfig
from tests.fakes import free_port

START_SECS = 60.0


@dataclass(frozen=True)
class Postgres:
    port: int
    pg_ctl: tuple[str, ...] = ()
    """``pg_ctl -D DATA`` (as the cluster's user): what stops and starts this server."""
    start_args: tuple[str, ...] = ()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would)."""
        subprocess.run([*self.pg_ctl, "-m", mode, "-w", "stop"], check=True,
                       capture_output=True)  # fmt: skip

    def start(self) -> None:
        subprocess.run([*self.pg_ctl, *self.start_args, "start"], check=True,
                       capture_output=True)  # fmt: skip

    def dsn(self, database: str = "postgres", user: str = "headwater") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


NOT_INSTALLED = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if _bin_dir() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(NOT_INSTALLED)
        pytest.skip(NOT_INSTALLED)
    with cluster() as server:
        yield server


@contextmanager
def cluster(*, fsync: bool = False) -> Iterator[Postgres]:
    """initdb on a temp dir, start on 127.0.0.1 and a free port; stopped and deleted after
    (``bench/warehouse.py`` uses it too, with ``fsync`` on)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError(NOT_INSTALLED)
    prefix = _as_user()
    root = Path(tempfile.mkdtemp(prefix="headwater-pg-"))
    data = root / "data"
    if prefix:
        shutil.chown(root, user=prefix[2])
        os.chmod(root, 0o700)
    port = free_port()
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "headwater",
                    "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync={'on' if fsync else 'off'}"
    pg_ctl = (*prefix, str(bin_dir / "pg_ctl"), "-D", str(data))
    start_args = ("-l", str(root / "log"), "-w", "-t", str(int(START_SECS)), "-o", options)
    server = Postgres(port, pg_ctl, start_args)
    server.start()
    try:
        deadline = time.monotonic() + START_SECS
        while True:
            try:
                psycopg.connect(server.dsn(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def state_config(server: Postgres, schema: str | None = None) -> StateConfig:
    """``state: {backend: postgres}`` on ``server``, in a schema of its own (a fresh one
    unless named), so that tests sharing the session's cluster never see each other's rows."""
    return StateConfig.model_validate({"backend": "postgres", "dsn": server.dsn(),
                                       "schema": schema or f"t{uuid.uuid4().hex[:16]}",
                                       "reconnect_secs": 60})  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def state_backend(request: pytest.FixtureRequest) -> StateConfig | None:
    """Each state store test twice: on SQLite (``None``: the data directory) and PostgreSQL."""
    if request.param == "sqlite":
        return None
    server: Postgres = request.getfixturevalue("postgres")
    return state_config(server)
