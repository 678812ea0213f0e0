"""Warehouse loading: rows/s into DuckDB and into PostgreSQL, as a ratio of a floor.

    .venv/bin/python bench/warehouse.py                    # 1M events, both warehouses
    .venv/bin/python bench/warehouse.py --events 200000 --only duckdb

Events: ``--events`` tracks across 10 event names, each with 20 properties (integers,
doubles, booleans, short and long text, an ISO timestamp, a nested object flattened into
two columns) and the context analytics.js sends. They are appended to a real SQLite event
log on disk first (not timed).

- **headwater**: one :class:`~headwater.warehouses.loader.Loader` sync of the whole log into
  a fresh warehouse — reading the log, shaping into Segment's tables (``tracks`` and one table
  per event name: two rows per event), type inference and conversion, the dedupe by ``id``
  and the committed position, in batches of 20,000 events as in production.
- **floor**: the same rows, already flattened and typed in columns (built before the clock
  starts), appended to the same tables in the same batches: DuckDB ``INSERT … SELECT`` from
  Arrow; PostgreSQL ``COPY`` (binary) into the tables — no dedupe, no position, no parsing.

Prints rows/s of both and the ratio. Targets: ≥ 0.5 of the floor on each; ≥ 50,000 rows/s
into DuckDB. PostgreSQL is a throwaway cluster (``tests/postgres.py``) with fsync on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from headwater.config.workspace import LogConfig, WarehouseConfig
from headwater.gateway.normalize import iso_ms
from headwater.log.base import Record
from headwater.log.sqlite import SqliteLog
from headwater.warehouses.loader import BATCH_EVENTS, Loader
from headwater.warehouses.names import snake_case as snake

NAMES = [
    "Order Completed", "Product Viewed", "Product Added", "Checkout Started", "Signed Up",
    "Cart Viewed", "Coupon Applied", "Search Performed", "Video Played", "Plan Upgraded",
]  # fmt: skip
T0 = 1_796_000_000_000
APPEND_CHUNK = 5000


def event(i: int) -> dict[str, Any]:
    received = iso_ms(T0 + i)
    name = NAMES[i % len(NAMES)]
    return {
        "type": "track", "event": name, "messageId": f"bench-{i}",
        "userId": f"user-{i % 50_000}", "anonymousId": f"anon-{i % 80_000}",
        "receivedAt": received, "sentAt": received, "timestamp": received,
        "originalTimestamp": received,
        "context": {"library": {"name": "analytics.js", "version": "next-1.72.0"},
                    "page": {"url": f"https://shop.example/p/{i % 977}", "path": f"/p/{i % 977}",
                             "referrer": "https://search.example/"},
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0",
                    "locale": "en-GB", "ip": "203.0.113.9"},
        "properties": {
            "order_id": f"o-{i}", "revenue": i / 100, "quantity": i % 7, "price": 9.99,
            "currency": "EUR", "coupon": None if i % 3 else "SPRING", "in_stock": i % 2 == 0,
            "category": f"cat-{i % 12}", "sku": f"sku-{i % 977}", "brand": "Acme",
            "variant": "blue", "position": i % 40, "rating": (i % 5) + 0.5,
            "description": "a longer text value " * 4, "shipping": {"method": "dhl", "days": 2},
            "shipped_at": "2026-11-02T10:00:00.000Z", "gift": False, "score": i % 1000,
            "tags": "a,b,c", "value": i * 3,
        },
    }  # fmt: skip


async def fill_log(log: SqliteLog, n: int) -> None:
    for start in range(0, n, APPEND_CHUNK):
        batch = []
        for i in range(start, min(n, start + APPEND_CHUNK)):
            e = event(i)
            batch.append(Record(e["messageId"], "website", "track", T0 + i, orjson.dumps(e)))
        await log.append(batch)


def warehouse_config(kind: str, dsn: str | None) -> WarehouseConfig:
    options: dict[str, Any] = {"name": kind, "type": kind, "sources": ["website"]}
    if dsn:
        options["dsn"] = dsn
    return WarehouseConfig.model_validate(options)


async def run_headwater(log: SqliteLog, config: WarehouseConfig, data_dir: Path) -> float:
    loader = Loader(config, log, data_dir)
    started = time.perf_counter()
    record = await loader.sync()
    took = time.perf_counter() - started
    if record.status != "success":
        raise SystemExit(f"the sync did not succeed: {record.error}")
    return took


# ---------------------------------------------------------------------------- the floor


def flat_tables(n: int, offset: int, until: int) -> dict[str, dict[str, list[Any]]]:
    """The rows of events [offset, until) as the loader would write them, by table."""
    tracks: dict[str, list[Any]] = {}
    by_event: dict[str, dict[str, list[Any]]] = {}
    now = datetime.now(UTC)
    for i in range(offset, until):
        e = event(i)
        ts = datetime.fromtimestamp((T0 + i) / 1000, UTC)
        ctx, page = e["context"], e["context"]["page"]
        common = {
            "id": e["messageId"], "received_at": ts, "sent_at": ts, "timestamp": ts,
            "original_timestamp": ts, "uuid_ts": now, "user_id": e["userId"],
            "anonymous_id": e["anonymousId"], "event": snake(e["event"]),
            "event_text": e["event"], "context_library_name": ctx["library"]["name"],
            "context_library_version": ctx["library"]["version"], "context_page_url": page["url"],
            "context_page_path": page["path"], "context_page_referrer": page["referrer"],
            "context_user_agent": ctx["userAgent"], "context_locale": ctx["locale"],
            "context_ip": ctx["ip"],
        }  # fmt: skip
        for key, value in common.items():
            tracks.setdefault(key, []).append(value)
        props = dict(e["properties"])
        shipping = props.pop("shipping")
        props["shipping_method"], props["shipping_days"] = shipping["method"], shipping["days"]
        props["shipped_at"] = datetime(2026, 11, 2, 10, tzinfo=UTC)
        table = by_event.setdefault(snake(e["event"]), {})
        for key, value in (common | props).items():
            table.setdefault(key, []).append(value)
    return {"tracks": tracks, **by_event}


def floor_batches(n: int) -> list[dict[str, dict[str, list[Any]]]]:
    return [flat_tables(n, start, min(n, start + BATCH_EVENTS))
            for start in range(0, n, BATCH_EVENTS)]  # fmt: skip


def floor_duckdb(path: Path, batches: list[dict[str, dict[str, list[Any]]]]) -> float:
    conn = duckdb.connect(str(path))
    conn.execute("CREATE SCHEMA website")
    started = time.perf_counter()
    for batch in batches:
        conn.begin()
        for table, columns in batch.items():
            arrow = pa.table(columns)
            conn.register("stage", arrow)
            conn.execute(f"CREATE TABLE IF NOT EXISTS website.{table} AS "
                         "SELECT * FROM stage LIMIT 0")  # fmt: skip
            conn.execute(f"INSERT INTO website.{table} SELECT * FROM stage")
            conn.unregister("stage")
        conn.commit()
    took = time.perf_counter() - started
    conn.close()
    return took


PG_TYPES = {bool: "boolean", int: "bigint", float: "double precision", str: "text",
            datetime: "timestamptz", type(None): "text"}  # fmt: skip


def floor_postgres(dsn: str, batches: list[dict[str, dict[str, list[Any]]]]) -> float:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA website")
        for table, columns in batches[0].items():
            cols = ", ".join(f'"{c}" {_pg_type(v)}' for c, v in columns.items())
            conn.execute(f"CREATE TABLE website.{table} ({cols}, PRIMARY KEY (id))")  # type: ignore[arg-type]
        conn.commit()
        started = time.perf_counter()
        for batch in batches:
            for table, columns in batch.items():
                names = list(columns)
                sql = f"COPY website.{table} ({', '.join(names)}) FROM STDIN"
                with conn.cursor().copy(sql) as copy:  # type: ignore[arg-type]
                    for row in zip(*columns.values(), strict=True):
                        copy.write_row(row)
            conn.commit()
        return time.perf_counter() - started


def _pg_type(values: list[Any]) -> str:
    first = next((v for v in values if v is not None), None)
    return PG_TYPES[type(first)]


# ---------------------------------------------------------------------------- main


def report(kind: str, rows: int, ours: float, floor: float) -> float:
    ratio = floor / ours
    print(f"{kind:<9} headwater {rows / ours:>10,.0f} rows/s ({ours:.1f} s)   "
          f"floor {rows / floor:>10,.0f} rows/s ({floor:.1f} s)   ratio {ratio:.2f}")  # fmt: skip
    return ratio


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["duckdb", "postgres"])
    args = parser.parse_args()
    n = args.events
    rows = 2 * n  # a tracks row and an event-table row per event
    root = Path(tempfile.mkdtemp(prefix="headwater-bench-wh-"))
    print(
        f"{n:,} events ({rows:,} rows), {len(NAMES)} event names, 20 properties; "
        f"{os.cpu_count()} cores"
    )
    log = SqliteLog(root / "log", LogConfig())
    started = time.perf_counter()
    await fill_log(log, n)
    print(f"log filled in {time.perf_counter() - started:.1f} s")
    batches = floor_batches(n)
    results: dict[str, float] = {}
    try:
        if args.only in (None, "duckdb"):
            ours = await run_headwater(log, warehouse_config("duckdb", None), root / "hw")
            floor = floor_duckdb(root / "floor.duckdb", batches)
            results["duckdb"] = report("duckdb", rows, ours, floor)
            results["duckdb rows/s"] = rows / ours
        if args.only in (None, "postgres"):
            from tests.postgres import cluster

            with cluster(fsync=True) as pg:
                dsn = pg.create_database("headwater")
                ours = await run_headwater(log, warehouse_config("postgres", dsn), root / "hw")
                floor = floor_postgres(pg.create_database("floor"), batches)
                results["postgres"] = report("postgres", rows, ours, floor)
    finally:
        await log.close()
    failed = [k for k in ("duckdb", "postgres") if k in results and results[k] < 0.5]
    if "duckdb rows/s" in results and results["duckdb rows/s"] < 50_000:
        failed.append("duckdb rows/s")
    print("targets: ratio ≥ 0.5 each, ≥ 50,000 rows/s into DuckDB —",
          "met" if not failed else f"missed: {', '.join(failed)}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
