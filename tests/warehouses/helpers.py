"""Events in the log, a warehouse of each type, and the analyst's queries against it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg

from headwater.config.workspace import LogConfig, WarehouseConfig
from headwater.gateway.normalize import iso_ms, parse_ms
from headwater.log.base import Record
from headwater.log.memory import MemoryLog
from headwater.warehouses.loader import Loader, duckdb_path

_ids = itertools.count(1)
T0 = "2026-03-01T10:00:00.000Z"
_RECEIVED_MS = parse_ms(T0, "T0")


def event(kind: str, **fields: Any) -> dict[str, Any]:
    n = next(_ids)
    base: dict[str, Any] = {
        "type": kind,
        "messageId": f"msg-{n}",
        "receivedAt": fields.pop("receivedAt", iso_ms(_RECEIVED_MS + n * 1000)),  # later each
        "sentAt": T0,
        "timestamp": T0,
        "originalTimestamp": T0,
        "anonymousId": "anon-1",
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"},
                    "page": {"url": "https://shop.example.com/cart"}},
    }  # fmt: skip
    base.update(fields)
    return base


async def append(log: MemoryLog, events: list[dict[str, Any]], source: str = "website") -> None:
    await log.append([Record(e["messageId"], source, e["type"], parse_ms(e["receivedAt"], "x"),
                             orjson.dumps(e)) for e in events])  # fmt: skip


@dataclass
class Target:
    """A warehouse under test and SQL against it, as an analyst would write it."""

    config: WarehouseConfig
    data_dir: Path

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.config.type == "duckdb":
            with duckdb.connect(str(duckdb_path(self.config, self.data_dir)),
                                read_only=True) as conn:  # fmt: skip
                return conn.execute(sql).fetchall()
        with psycopg.connect(self.config.dsn or "") as conn:
            return conn.execute(sql).fetchall()  # type: ignore[arg-type]

    def columns(self, schema: str, table: str) -> dict[str, str]:
        rows = self.query("SELECT column_name, data_type FROM information_schema.columns "
                          f"WHERE table_schema = '{schema}' AND table_name = '{table}'")  # fmt: skip
        return {r[0]: r[1].lower() for r in rows}

    def loader(self, log: MemoryLog, **kwargs: Any) -> Loader:
        return Loader(self.config, log, self.data_dir, **kwargs)


def memory_log() -> MemoryLog:
    return MemoryLog(LogConfig())


def warehouse_config(kind: str, dsn: str | None, **options: Any) -> WarehouseConfig:
    base: dict[str, Any] = {"name": "analytics", "type": kind, "sources": ["website"]}
    if kind == "postgres":
        base["dsn"] = dsn
    return WarehouseConfig(**(base | options))


def flat(rows: list[tuple[Any, ...]]) -> Iterator[Any]:
    for row in rows:
        yield from row
