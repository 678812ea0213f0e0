"""Warehouses in a real ``headwater serve``: the real analytics-python SDK sends, the worker
process loads DuckDB and a real PostgreSQL in Segment's schema, the CLI syncs and reports, and
``kill -9`` in the middle of a sync loads nothing twice and loses nothing.

The queries are what an analyst would write against a Segment warehouse."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import httpx
import psycopg
import pytest
from segment.analytics import Client

from tests.e2e.conftest import ADMIN, OTHER_KEY, WRITE_KEY, Server
from tests.e2e.test_protocols import cli, wait_until
from tests.postgres import Postgres

WAIT_SECS = 60


def warehouses_yaml(dsn: str, interval: str = "1h") -> str:
    # no canary: its event every 30 s would land after a sync now and then, and lagEvents
    # (log offsets after the sync's position) would not be 0 when the test looks
    return f"""
status: {{canary_enabled: false}}
warehouses:
  - name: analytics
    type: duckdb
    path: warehouse.duckdb
    sources: [website, backend]
    sync_interval: {interval}
  - name: pg
    type: postgres
    dsn: {dsn}
    sources: [website]
    sync_interval: {interval}
"""


def sdk(server: Server, key: str = WRITE_KEY, **options: Any) -> Client:
    options.setdefault("max_retries", 3)
    return Client(key, host=server.url, **options)


def duck_rows(server: Server, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` as an analyst would, on the file Headwater loads (read-only)."""
    with duckdb.connect(str(server.data_dir / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def pg_rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def status(server: Server, name: str) -> dict[str, Any]:
    response = server.api(f"/api/v1/warehouses/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def sync(server: Server, name: str) -> str:
    done = cli(server, "warehouse", "sync", name, "--timeout", str(WAIT_SECS))
    assert done.returncode == 0, f"sync {name}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def dsn(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    return postgres.create_database(f"e2e_{request.node.name[5:30]}".lower())


def test_sdk_events_land_in_duckdb_and_postgres_as_segment_lays_them_out(
    make_server: Any, dsn: str
) -> None:
    server = make_server(warehouses_yaml(dsn))
    website = sdk(server, sync_mode=True)
    website.identify(
        "u-1",
        {"name": "Ada", "plan": "pro", "address": {"city": "Paris"}},
        message_id="m-id-1",
        timestamp=_at(1),
    )
    website.page(
        "u-1",
        name="Pricing",
        properties={"url": "https://shop.example/pricing"},
        message_id="m-page",
    )
    website.track(
        "u-1",
        "Order Completed",
        {"revenue": 20.5, "items": ["a", "b"], "coupon": "SPRING"},
        message_id="m-order-1",
    )
    website.identify("u-1", {"plan": "team"}, message_id="m-id-2", timestamp=_at(2))
    website.track("u-1", "Order Completed", {"revenue": "lots"}, message_id="m-order-2")
    sdk(server, OTHER_KEY, sync_mode=True).track("u-9", "Signed Up", {"via": "api"},
                                                 message_id="m-backend")  # fmt: skip

    out = sync(server, "analytics")
    assert "success" in out, out
    assert "success" in sync(server, "pg")

    for rows in (lambda sql: duck_rows(server, sql), lambda sql: pg_rows(dsn, sql)):
        assert rows("SELECT id, event, event_text, user_id FROM website.tracks ORDER BY id") == [
            ("m-order-1", "order_completed", "Order Completed", "u-1"),
            ("m-order-2", "order_completed", "Order Completed", "u-1"),
        ]
        orders = rows("SELECT id, revenue, items, coupon, context_library_name "
                      "FROM website.order_completed ORDER BY id")  # fmt: skip
        assert orders[0][:2] == ("m-order-1", 20.5)
        assert json.loads(orders[0][2]) == ["a", "b"] and orders[0][3] == "SPRING"
        assert orders[0][4] == "analytics-python"
        assert orders[1][:2] == ("m-order-2", None)  # the row is there; the value is discarded
        assert rows("SELECT name, url FROM website.pages") == [
            ("Pricing", "https://shop.example/pricing")
        ]
        assert rows("SELECT count(*) FROM website.identifies") == [(2,)]
        # upserted: the later identify's plan, the traits it left out kept
        assert rows("SELECT id, name, plan, address_city FROM website.users") == [
            ("u-1", "Ada", "team", "Paris")
        ]
        discards = rows("SELECT table_name, column_name, column_value, row_id, reason "
                        "FROM website._discards")  # fmt: skip
        assert len(discards) == 1 and discards[0][:4] == (
            "order_completed", "revenue", "lots", "m-order-2"), discards  # fmt: skip
        assert discards[0][4], discards  # the reason, in words

    assert duck_rows(server, "SELECT user_id, via FROM backend.signed_up") == [("u-9", "api")]
    assert pg_rows(dsn, "SELECT count(*) FROM information_schema.schemata "
                        "WHERE schema_name = 'backend'") == [(0,)]  # fmt: skip

    # what status, the CLI and the trace say
    analytics = status(server, "analytics")
    assert analytics["lagEvents"] == 0 and analytics["lastSync"]["status"] == "success"
    assert analytics["rowsPerTable"]["website.tracks"] == 2
    assert analytics["rowsPerTable"]["website._discards"] == 1
    listed = cli(server, "warehouse", "status")
    assert listed.returncode == 0, listed.stderr
    assert "analytics" in listed.stdout and "pg" in listed.stdout, listed.stdout
    trace = server.api("/api/v1/events/m-order-2").json()
    stages = [s for s in trace["stages"] if s["stage"] == "warehouse"]
    assert {s["warehouse"] for s in stages} == {"analytics", "pg"}, trace["stages"]
    for stage in stages:
        assert stage["decision"] == "loaded" and stage["discarded"] == ["revenue"], stage
        assert "website.order_completed" in stage["tables"], stage


def test_kill_9_during_syncs_then_restart_loads_every_event_exactly_once(
    make_server: Any, dsn: str
) -> None:
    server = make_server(warehouses_yaml(dsn))
    sent = _send_many(server, "a", 6_000)
    sync(server, "analytics")
    sync(server, "pg")  # creates the tables, so the test can lock one below

    sent += _send_many(server, "b", 45_000)
    # PostgreSQL: hold a lock on a table the loader writes, so the sync is surely mid-way
    # (its transaction open, rows COPYed) when the process dies
    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE website.order_completed IN ACCESS EXCLUSIVE MODE")
    _request_sync(server, "pg")
    _request_sync(server, "analytics")
    wait_until("both syncs running", lambda: all(
        status(server, name)["lastSync"]["status"] == "running" for name in ("analytics", "pg")
    ), timeout_s=WAIT_SECS)  # fmt: skip
    server.kill()
    blocker.rollback()
    blocker.close()

    server.start()
    assert "success" in sync(server, "analytics")
    assert "success" in sync(server, "pg")
    history = [s["status"] for s in status(server, "pg")["syncs"]]
    assert "interrupted" in history, f"the pg sync was not cut off by the kill: {history}"

    expected = len(sent)
    for rows in (lambda sql: duck_rows(server, sql), lambda sql: pg_rows(dsn, sql)):
        assert rows("SELECT count(*), count(DISTINCT id) FROM website.tracks") == [
            (expected, expected)
        ]
        assert rows("SELECT count(*), count(DISTINCT id) FROM website.order_completed") == [
            (expected, expected)
        ]
        missing = set(sent) - {r[0] for r in rows("SELECT id FROM website.tracks")}
        assert not missing, f"{len(missing)} events never loaded: {sorted(missing)[:5]}"
    assert status(server, "analytics")["lagEvents"] == 0


def _at(minute: int) -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 3, 1, 12, minute, tzinfo=UTC)


def _send_many(server: Server, run: str, n: int) -> list[str]:
    errors: list[str] = []
    client = sdk(server, upload_size=100, max_queue_size=n + 1,
                 on_error=lambda exc, batch: errors.append(repr(exc)))  # fmt: skip
    ids = [f"kill-{run}-{i}" for i in range(n)]
    for i, message_id in enumerate(ids):
        client.track(
            f"user-{i % 500}",
            "Order Completed",
            {"revenue": i / 10, "sku": f"sku-{i % 97}", "n": i},
            message_id=message_id,
        )
    client.flush()
    client.join()
    assert not errors, errors[:3]
    return ids


def _request_sync(server: Server, name: str) -> None:
    response = httpx.post(f"{server.url}/api/v1/warehouses/{name}/sync", headers=ADMIN, timeout=10)
    assert response.status_code in (200, 202), response.text
