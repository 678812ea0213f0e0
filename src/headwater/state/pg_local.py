"""A PostgreSQL server on loopback from Debian's binaries, for trying ``state: {backend:
postgres}`` on one machine (``headwater dev cluster``), the tests and ``bench/``.

``initdb`` (once: a data directory that has a cluster is started as it is) and ``pg_ctl``
from ``/usr/lib/postgresql/*/bin`` (the ``postgresql`` package) or ``PATH``. They refuse to
run as root, so under root the cluster belongs to the ``postgres`` system user (or
``nobody``) and the commands run through ``runuser``. The server listens on 127.0.0.1 only
and trusts local connections for the user ``headwater``: it is for a laptop, never for
production.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

START_SECS = 60.0
NOT_INSTALLED = ("PostgreSQL is not installed: `apt-get install postgresql` (Debian; "
                 ".ci/run installs it)")  # fmt: skip


def bin_dir() -> Path | None:
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


class LocalPostgres:
    """One server with its cluster in ``root`` (``root/data``; socket and log beside it)."""

    def __init__(self, root: Path, port: int, *, fsync: bool = True) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError(NOT_INSTALLED)
        self.root = root
        self.port = port
        self.data = root / "data"
        self._prefix = _as_user()
        self._bin = found
        self._options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync={'on' if fsync else 'off'}"

    def dsn(self, database: str = "postgres", user: str = "headwater") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        done = subprocess.run([*self._prefix, str(self._bin / "pg_ctl"), "-D", str(self.data),
                               *args], capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {(done.stderr or done.stdout).strip()}"
                               f" (log: {self.root / 'log'})")  # fmt: skip

    def start(self) -> None:
        """initdb if ``root`` has no cluster yet, then start and wait until it answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self._prefix:
            shutil.chown(self.root, user=self._prefix[2])
            os.chmod(self.root, 0o700)
        if not (self.data / "PG_VERSION").exists():
            made = subprocess.run([*self._prefix, str(self._bin / "initdb"), "-D", str(self.data),
                                   "-U", "headwater", "--auth=trust", "-E", "UTF8", "--no-sync"],
                                  capture_output=True, text=True)  # fmt: skip
            if made.returncode != 0:
                raise RuntimeError(f"initdb in {self.data} failed: {made.stderr.strip()} "
                                   "(as root, the postgres user must be able to reach that "
                                   "directory; try --dir under /tmp)")  # fmt: skip
        self._pg_ctl("-l", str(self.root / "log"), "-w", "-t", str(int(START_SECS)),
                     "-o", self._options, "start")  # fmt: skip
        deadline = time.monotonic() + START_SECS
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)
