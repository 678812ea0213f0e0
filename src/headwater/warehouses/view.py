"""What the gateway's readers (API, console, CLI, trace, diagnose, metrics) see of the
warehouses: the state file (:mod:`headwater.warehouses.state`) and the log, never the
warehouses themselves (one may be down; a DuckDB file may be an analyst's right now).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from headwater.config.workspace import WarehouseConfig, Workspace
from headwater.log.base import EventLog, StoredRecord
from headwater.observe.findings import Finding, Severity
from headwater.warehouses.loader import duckdb_path
from headwater.warehouses.names import schema_name
from headwater.warehouses.schema import DISCARDS, Shaper
from headwater.warehouses.state import WarehouseState

READ_WAIT_SECS = 3.0
RETENTION_WARN = 0.5  # the oldest unsynced event is this far into retention: a warning
RETENTION_CRITICAL = 0.8  # ... and this far: critical

FIXES = {
    "connection_refused": "the warehouse does not answer: start it, or correct the host and "
    "port in its dsn (PostgreSQL must listen there: listen_addresses, pg_hba.conf). Nothing is "
    "lost: the backlog waits in the log and loads at the next sync",
    "authentication": "the warehouse refused the login: check the user in dsn and the password "
    "in the environment variable named by password_env (or PGPASSWORD / ~/.pgpass)",
    "permission_denied": "the warehouse's user may not create or write: GRANT CREATE ON "
    "DATABASE <db> TO <user> (the loader creates a schema per source and _headwater), or make "
    "the DuckDB file and its directory writable by Headwater's user",
    "disk_full": "the warehouse's disk is full: free space there (df -h); the next sync resumes "
    "where the last committed one stopped",
    "locked": "another process holds the DuckDB file for writing: close it, or open it "
    "read-only (duckdb -readonly FILE); Headwater retries at the next interval",
    "no_database": "the database in dsn does not exist: create it (createdb <db>)",
    "error": "read the error above; `headwater warehouse sync NAME` retries at once",
}


def target_of(config: WarehouseConfig, data_dir: Path) -> str:
    """Where the warehouse is, with no secret in it."""
    if config.type == "duckdb":
        return str(duckdb_path(config, data_dir))
    dsn = config.dsn or ""
    if "://" not in dsn:
        return dsn
    parts = urlsplit(dsn)
    return (
        f"{parts.scheme}://{parts.username or ''}@{parts.hostname}:{parts.port or 5432}{parts.path}"
    )


class WarehouseView:
    """Status documents, trace stages, diagnose findings and metrics of the warehouses."""

    def __init__(
        self, workspace: Workspace, data_dir: Path, log: Callable[[], EventLog | None]
    ) -> None:
        self.workspace = workspace
        self.data_dir = data_dir
        self._log = log
        # a page or a metrics scrape waits a few seconds for PostgreSQL, not a minute
        self.state = WarehouseState(data_dir, workspace.state, reconnect_secs=READ_WAIT_SECS)
        self.snapshot: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    def require(self, name: str) -> WarehouseConfig:
        found = self.workspace.warehouse(name)
        if found is None:
            names = ", ".join(w.name for w in self.workspace.warehouses) or "none"
            raise KeyError(f"no warehouse is named {name!r}; the warehouses are: {names}")
        return found

    async def _run(self, call: Callable[[WarehouseState], Any]) -> Any:
        async with self._lock:  # one thread at a time on the state connection
            return await asyncio.to_thread(call, self.state)

    async def status(self, name: str, history: int = 10) -> dict[str, Any]:
        config = self.require(name)
        syncs, totals, position = await self._run(
            lambda s: (s.syncs(name, history), s.totals(name), s.position(name))
        )
        log = self._log()
        last_offset = (log.stats().last_offset if log is not None else None) or 0
        lag_secs = await self._lag_secs(position or 0)
        last = syncs[0].as_dict() if syncs else None
        success = next((s for s in syncs if s.status == "success"), None)
        return {
            "name": name,
            "type": config.type,
            "target": target_of(config, self.data_dir),
            "sources": list(config.sources),
            "schemas": [schema_name(s) for s in config.sources],
            "enabled": config.enabled,
            "syncIntervalSecs": config.sync_interval,
            "position": position,
            "logLastOffset": last_offset,
            "lagEvents": max(0, last_offset - (position or 0)),
            "lagSecs": lag_secs,
            "lastSync": last,
            "lastSuccessMs": success.finished_ms if success else None,
            "rowsPerTable": totals,
            "discards": sum(n for t, n in totals.items() if t.endswith("." + DISCARDS)),
            "syncs": [s.as_dict() for s in syncs],
        }

    async def statuses(self) -> list[dict[str, Any]]:
        return [await self.status(w.name, history=1) for w in self.workspace.warehouses]

    async def _lag_secs(self, position: int) -> float | None:
        """How long the oldest event not yet synced has waited (None: nothing waits)."""
        log = self._log()
        if log is None:
            return None
        after = await log.read(position, 1)
        if not after:
            return 0.0
        return max(0.0, time.time() - after[0].received_at_ms / 1000)

    async def request(self, name: str, kind: str, since_ms: int | None = None) -> int:
        self.require(name)
        return int(await self._run(lambda s: s.request(name, kind, since_ms)))

    async def request_done(self, request_id: int) -> bool:
        return bool(await self._run(lambda s: s.request_done(request_id)))

    # ------------------------------------------------------------------ trace

    async def trace_stages(self, record: StoredRecord) -> list[dict[str, Any]]:
        """Where the event landed in each warehouse of its source: which sync, which tables."""
        stages: list[dict[str, Any]] = []
        for config in self.workspace.warehouses:
            if record.source not in config.sources:
                continue
            stages.append(await self._trace_one(config, record))
        return stages

    async def _trace_one(self, config: WarehouseConfig, record: StoredRecord) -> dict[str, Any]:
        schema = schema_name(record.source)
        shaper = Shaper(config.sources, config.tables, config.exclude_events)
        shaped = shaper.shape(schema, orjson.loads(record.payload))
        tables = sorted({f"{r.schema}.{r.table}" for r in shaped.rows})
        base = {"stage": "warehouse", "warehouse": config.name, "tables": tables}
        if not tables:
            return base | {
                "decision": "not loaded",
                "detail": f"warehouse {config.name} loads "
                "no table for this event (selective sync: tables / exclude_events)",
            }
        sync = await self._run(lambda s: s.sync_of(config.name, record.offset))
        if sync is None:
            position = await self._run(lambda s: s.position(config.name))
            return base | {"decision": "waiting", "detail": f"not synced yet: warehouse "
                           f"{config.name} has loaded up to offset {position or 0}; the next "
                           f"sync loads it (every {config.sync_interval} s)"}  # fmt: skip
        detail = (f"loaded into {', '.join(tables)} by sync #{sync.id} of warehouse "
                  f"{config.name} ({sync.status})")  # fmt: skip
        found = await self._run(lambda s: s.discarded(config.name, record.message_id))
        discarded = sorted({d["column"] for d in found})
        if discarded:
            reasons = "; ".join(sorted({f"{d['table']}.{d['column']}: {d['reason']}"
                                        for d in found}))  # fmt: skip
            detail += f"; {', '.join(discarded)} went to {schema}.{DISCARDS} ({reasons})"
        return base | {"decision": "loaded", "sync": sync.id, "atMs": sync.finished_ms,
                       "detail": detail, "discarded": discarded,
                       "discards": found}  # fmt: skip

    # ------------------------------------------------------------------ diagnose

    async def findings(self, since_ms: int = 0) -> list[Finding]:
        """A sync's state now (its failures, discards, retention risk): not windowed."""
        found: list[Finding] = []
        for config in self.workspace.warehouses:
            if config.enabled:
                found.extend(await self._findings_of(config))
        return found

    async def _findings_of(self, config: WarehouseConfig) -> list[Finding]:
        status = await self.status(config.name, history=20)
        found: list[Finding] = []
        last = status["lastSync"]
        name = config.name
        if last is not None and last["status"] in ("failed", "partial", "interrupted"):
            kind = last.get("errorKind") or "error"
            found.append(Finding(
                "critical", f"warehouse {name}: its last sync {last['status']} "
                f"({kind.replace('_', ' ')})",
                f"sync #{last['id']} of {status['target']}: {last['error']}; "
                f"{status['lagEvents']} log offsets wait to be loaded",
                FIXES.get(kind, FIXES["error"]), events=status["lagEvents"],
                evidence={"warehouse": name, "sync": last},
            ))  # fmt: skip
        discards = sum(s["discards"] for s in status["syncs"])
        if discards:
            found.append(Finding(
                "warning", f"warehouse {name}: {discards} values went to _discards",
                "values whose type conflicts with their column, reserved or unusable names, or "
                "past the column limit were kept in each schema's _discards table instead",
                f"query them: SELECT table_name, column_name, reason, count(*) FROM "
                f"{status['schemas'][0]}._discards GROUP BY 1, 2, 3; then fix the sender "
                "(or send the property under a new name)", events=discards,
                evidence={"warehouse": name},
            ))  # fmt: skip
        found.extend(self._retention(config, status))
        return found

    def _retention(self, config: WarehouseConfig, status: dict[str, Any]) -> Iterator[Finding]:
        log = self._log()
        if log is None or status["lagEvents"] == 0:
            return
        stats = log.stats()
        position = status["position"] or 0
        if stats.first_offset is not None and position < stats.first_offset - 1:
            lost = stats.first_offset - 1 - position
            yield Finding("critical", f"warehouse {config.name}: retention dropped {lost} events "
                          "before they were synced",
                          f"the log now starts at offset {stats.first_offset}; the warehouse "
                          f"had loaded up to {position}",
                          "sync more often or keep the log longer (log.retention_max_age_secs,"
                          " log.retention_max_bytes); the dropped events cannot be reloaded",
                          events=lost)  # fmt: skip
            return
        age_limit = self.workspace.log.retention_max_age_secs
        lag = status["lagSecs"] or 0.0
        by_age = lag / age_limit
        by_size = 0.0
        if stats.records and stats.first_offset is not None:
            unsynced_share = (stats.last_offset or 0) - position
            full = stats.payload_bytes / self.workspace.log.retention_max_bytes
            by_size = full if unsynced_share >= stats.records * (1 - RETENTION_WARN) else 0.0
        share = max(by_age, by_size)
        if share < RETENTION_WARN:
            return
        severity: Severity = "critical" if share >= RETENTION_CRITICAL else "warning"
        hours = max(0.0, (age_limit - lag) / 3600)
        yield Finding(severity, f"warehouse {config.name}: retention will drop events it has not "
                      "synced", f"the oldest unsynced event has waited {lag / 3600:.1f} h of the "
                      f"log's {age_limit / 3600:.0f} h (about {hours:.1f} h left); the log is "
                      f"{by_size:.0%} of its size limit",
                      "fix the failing sync (see the finding above) or raise "
                      "log.retention_max_age_secs / log.retention_max_bytes now",
                      events=status["lagEvents"])  # fmt: skip

    # ------------------------------------------------------------------ metrics

    async def refresh(self) -> None:
        """The snapshot /metrics renders (read before a scrape, never during it)."""
        self.snapshot = await self.statuses()

    def collect(self) -> Iterator[Metric]:
        rows = CounterMetricFamily("headwater_warehouse_rows_loaded",
                                   "Rows loaded per warehouse and schema.table.",
                                   labels=["warehouse", "table"])  # fmt: skip
        lag = GaugeMetricFamily("headwater_warehouse_lag_events",
                                "Log offsets the warehouse has not loaded yet.",
                                labels=["warehouse"])  # fmt: skip
        lag_secs = GaugeMetricFamily("headwater_warehouse_lag_seconds",
                                     "Age of the oldest event the warehouse has not loaded.",
                                     labels=["warehouse"])  # fmt: skip
        last = GaugeMetricFamily("headwater_warehouse_last_success_timestamp_seconds",
                                 "When the last successful sync finished.",
                                 labels=["warehouse"])  # fmt: skip
        duration = GaugeMetricFamily(
            "headwater_warehouse_last_sync_duration_seconds",
            "How long the last sync took.",
            labels=["warehouse"],
        )
        failing = GaugeMetricFamily("headwater_warehouse_sync_failing",
                                    "1 when the last sync failed or was partial.",
                                    labels=["warehouse", "kind"])  # fmt: skip
        for doc in self.snapshot:
            name = doc["name"]
            for table, n in doc["rowsPerTable"].items():
                rows.add_metric([name, table], n)
            lag.add_metric([name], doc["lagEvents"])
            lag_secs.add_metric([name], doc["lagSecs"] or 0.0)
            if doc["lastSuccessMs"] is not None:
                last.add_metric([name], doc["lastSuccessMs"] / 1000)
            sync = doc["lastSync"]
            if sync is not None and sync["durationMs"] is not None:
                duration.add_metric([name], sync["durationMs"] / 1000)
            bad = sync is not None and sync["status"] in ("failed", "partial")
            failing.add_metric([name, (sync or {}).get("errorKind") or "none"], 1 if bad else 0)
        yield from (rows, lag, lag_secs, last, duration, failing)

    def close(self) -> None:
        self.state.close()
