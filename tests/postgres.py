"""A throwaway PostgreSQL cluster, started once per test session for every suite that asks.

The server is :class:`headwater.state.pg_local.LocalPostgres` (Debian's binaries, run as
the ``postgres`` user under root) on a temp dir and a free port of 127.0.0.1, trusting local
connections; stopped (``pg_ctl stop -m immediate``) and deleted at the end. Under
``CI=true`` a missing PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from headwater.config.workspace import StateConfig
from headwater.state.pg_local import NOT_INSTALLED, LocalPostgres, bin_dir
from tests.fakes import free_port

Postgres = LocalPostgres  # what the fixtures yield: port, dsn(), create_database, stop/start


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if bin_dir() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(NOT_INSTALLED)
        pytest.skip(NOT_INSTALLED)
    with cluster() as server:
        yield server


@contextmanager
def cluster(*, fsync: bool = False) -> Iterator[Postgres]:
    """initdb on a temp dir, start on 127.0.0.1 and a free port; stopped and deleted after
    (``bench/warehouse.py`` and ``bench/state.py`` use it too, with ``fsync`` on)."""
    root = Path(tempfile.mkdtemp(prefix="headwater-pg-"))
    server = LocalPostgres(root, free_port(), fsync=fsync)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def state_config(server: Postgres, schema: str | None = None) -> StateConfig:
    """``state: {backend: postgres}`` on ``server``, in a schema of its own (a fresh one
    unless named), so that tests sharing the session's cluster never see each other's rows."""
    return StateConfig.model_validate({"backend": "postgres", "dsn": server.dsn(),
                                       "schema": schema or f"t{uuid.uuid4().hex[:16]}",
                                       "reconnect_secs": 60})  # fmt: skip


def workspace_with_state(path: Path, state: StateConfig, sources: str) -> Path:
    """A workspace file at ``path``: ``sources`` (YAML, e.g. ``[{name: website, write_key:
    wk_website_1}]``) and ``state``, for the commands that read ``--config``."""
    path.write_text(f"sources: {sources}\n"
                    f"state: {{backend: postgres, dsn: '{state.dsn}', "
                    f"schema: {state.schema_name}}}\n")  # fmt: skip
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def state_backend(request: pytest.FixtureRequest) -> StateConfig | None:
    """Each state store test twice: on SQLite (``None``: the data directory) and PostgreSQL."""
    if request.param == "sqlite":
        return None
    server: Postgres = request.getfixturevalue("postgres")
    return state_config(server)


@pytest.fixture(params=["sqlite", "postgres"])
def profile_backend(request: pytest.FixtureRequest) -> Iterator[StateConfig | None]:
    """The profile store tests (tests/unify/helpers.py's Feeder) twice: on the space's
    SQLite file and in PostgreSQL (``state: {backend: postgres}``)."""
    from tests.unify import helpers

    state = None if request.param == "sqlite" else state_config(request.getfixturevalue("postgres"))
    helpers.STATE, before = state, helpers.STATE
    try:
        yield state
    finally:
        helpers.STATE = before
        while helpers.OPENED:
            helpers.OPENED.pop().close()
