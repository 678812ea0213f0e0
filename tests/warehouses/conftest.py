"""Warehouse fixtures: each test runs against DuckDB and against a real PostgreSQL
(the session's throwaway cluster, ``tests/postgres.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres import Postgres

_databases = iter(range(1, 1_000_000))


@pytest.fixture(params=["duckdb", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target_factory(kind: str, tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """``make(**options)``: a fresh warehouse of ``kind`` (a new DuckDB file or database)."""
    from tests.warehouses.helpers import Target, warehouse_config

    def make(**options: object) -> Target:
        dsn = None
        if kind == "postgres":
            server: Postgres = request.getfixturevalue("postgres")
            dsn = server.create_database(f"wh{next(_databases)}")
        return Target(warehouse_config(kind, dsn, **options), tmp_path)

    return make


@pytest.fixture
def target(target_factory):  # type: ignore[no-untyped-def]
    return target_factory()
