"""The sync loop: one per warehouse, in the delivery worker process, reading the log.

Every ``sync_interval`` (or within a second of ``headwater warehouse sync``), a sync:

1. takes the warehouse's lock file (``<data-dir>/warehouses/<name>.lock``), so two
   Headwater processes never sync one warehouse at once — and with shared state the
   warehouse's turn first (:class:`~headwater.warehouses.state.WarehouseState`), so one
   worker node of the cluster syncs it at a time, once per interval for the cluster;
2. opens the warehouse and reads its committed position (``_headwater.sync_state``);
3. reads the log after it in batches of ``batch_events``, shapes the events of the
   warehouse's sources into Segment's tables (:mod:`headwater.warehouses.schema`) and
   loads each batch — every table it touches and the new position — in one transaction;
4. stops at the log's end as it was when the sync began, and closes the warehouse (a DuckDB
   file is free for readers until the next sync).

A kill at any point loses nothing and loads nothing twice: the position moves only with the
rows, and the rows are deduplicated by ``id`` anyway (so a backfill may move the position
back and reload). Shaping and loading run on a thread: the event loop keeps serving.
A failing warehouse only fails its own syncs; its backlog waits in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from headwater.config.workspace import StateConfig, WarehouseConfig, Workspace
from headwater.log.base import EventLog, StoredRecord
from headwater.warehouses.base import StalePosition, Warehouse, WarehouseError, classify
from headwater.warehouses.names import schema_name
from headwater.warehouses.schema import (
    DISCARDS,
    DISCARDS_COLUMNS,
    ColumnType,
    Discard,
    Row,
    Shaper,
    iter_discard_rows,
)
from headwater.warehouses.state import Request, SyncRecord, WarehouseState, now_ms

if TYPE_CHECKING:  # pyarrow (~40 MB) is imported by the first load, not at start
    from headwater.warehouses.batch import TablePlan

logger = logging.getLogger(__name__)

BATCH_EVENTS = 20_000
REQUEST_POLL_SECS = 1.0
READ_LIMIT = 5000


def open_warehouse(config: WarehouseConfig, data_dir: Path) -> Warehouse:
    """The backend of ``config`` (imported here so a workspace without one needs neither)."""
    if config.type == "postgres":
        from headwater.warehouses.postgres import PostgresWarehouse

        return PostgresWarehouse(config.dsn or "", config.password_env)
    from headwater.warehouses.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(duckdb_path(config, data_dir))


def duckdb_path(config: WarehouseConfig, data_dir: Path) -> Path:
    path = Path(config.path) if config.path else Path("warehouses") / f"{config.name}.duckdb"
    return path if path.is_absolute() else data_dir / path


class Loader:
    """One warehouse's syncs; see the module docstring."""

    def __init__(
        self,
        config: WarehouseConfig,
        log: EventLog,
        data_dir: Path,
        batch_events: int = BATCH_EVENTS,
        opener: Callable[[WarehouseConfig, Path], Warehouse] = open_warehouse,
        state: StateConfig | None = None,
        node: str | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.log = log
        self.data_dir = data_dir
        self.batch_events = batch_events
        self.state = WarehouseState(data_dir, state, node)
        self.shaper = Shaper(config.sources, config.tables, config.exclude_events)
        self._schemas = {s: schema_name(s) for s in config.sources}
        self._opener = opener
        self._columns: dict[str, dict[str, dict[str, ColumnType]]] = {}
        self._stopping = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Sync every ``sync_interval`` and on request, until ``stop`` is set."""
        self._stopping = stop
        next_sync = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            turn = None
            try:
                turn = await asyncio.to_thread(self._turn, loop.time() >= next_sync)
            except Exception:  # the state file busy or broken, PostgreSQL away: say so, poll again
                logger.exception("warehouse %s: cannot read the sync requests", self.name)
            if turn is not None:
                try:
                    await self._take_turn(turn)
                finally:
                    with contextlib.suppress(Exception):  # a lost session holds no lock
                        await asyncio.to_thread(self.state.end_turn, self.name)
                next_sync = loop.time() + self.config.sync_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REQUEST_POLL_SECS)
        await asyncio.to_thread(self.state.close)

    def _turn(self, due: bool) -> list[Request] | None:
        """On a thread: the requests to carry out and a sync to run now, or None when there
        is nothing to do here. With shared state that also needs this node's turn (another
        node may be syncing), and a sync any node started within the interval makes the
        warehouse not due."""
        state = self.state
        if not state.shared:
            requests = state.take_requests(self.name)
            return requests if requests or due else None
        waiting = state.waiting(self.name)
        if not (waiting or due) or not state.try_turn(self.name):
            return None
        try:  # the turn is this node's now: given back unless a turn is returned
            recent = state.recent_start_ms(self.name)
            interval_ms = self.config.sync_interval * 1000
            if not waiting and recent is not None and now_ms() - recent < interval_ms:
                state.end_turn(self.name)
                return None
            return state.take_requests(self.name)
        except BaseException:
            with contextlib.suppress(Exception):
                state.end_turn(self.name)
            raise

    async def _take_turn(self, requests: list[Request]) -> None:
        try:  # a request taken is carried out below even if a rewind fails
            for request in requests:
                if request.kind == "backfill" and request.since_ms is not None:
                    await self.rewind(request.since_ms)
        except Exception:
            logger.exception("warehouse %s: cannot carry out the sync requests", self.name)
        try:
            await self.sync()
        except Exception:  # a bug must not end the loop; the next sync retries
            logger.exception("warehouse %s: sync failed", self.name)

    async def sync(self) -> SyncRecord:
        """One sync (see the module docstring); its record, also when it failed."""
        lock = await asyncio.to_thread(self._lock)
        try:
            return await self._sync()
        finally:
            lock.close()

    def _lock(self) -> IO[str]:
        path = self.data_dir / "warehouses" / f"{self.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    async def _sync(self) -> SyncRecord:
        end = self.log.stats().last_offset or 0
        warehouse = self._opener(self.config, self.data_dir)
        known = await asyncio.to_thread(self.state.position, self.name)
        sync_id = await asyncio.to_thread(self.state.begin_sync, self.name, known or 0)
        loaded = 0
        ahead: asyncio.Future[list[StoredRecord]] | None = None
        try:
            after = await asyncio.to_thread(self._open, warehouse)
            await asyncio.to_thread(self.state.restart_at, sync_id, self.name, after)
            rows: dict[str, int] = defaultdict(int)
            events = discards = 0
            position = after
            # the next batch is read from the log while this one is shaped and loaded
            ahead = asyncio.ensure_future(self._read_batch(position, end))
            while position < end and not self._stopping.is_set():
                records = await ahead
                if not records:
                    break
                ahead = asyncio.ensure_future(self._read_batch(records[-1].offset, end))
                counts, n_events, found = await asyncio.to_thread(
                    self._load_batch, warehouse, records, position
                )
                position = records[-1].offset
                loaded += 1
                events += n_events
                discards += len(found)
                for table, n in counts.items():
                    rows[table] += n
                await asyncio.to_thread(self.state.progress, sync_id, self.name, position,
                                        events, dict(rows), discards, counts, found)  # fmt: skip
            await asyncio.to_thread(self.state.finish_sync, sync_id, "success")
        except WarehouseError as exc:
            status = "partial" if loaded else "failed"
            logger.warning("warehouse %s: sync %s: %s", self.name, status, exc)
            await asyncio.to_thread(self.state.finish_sync, sync_id, status, str(exc), exc.kind)
        except Exception as exc:
            await asyncio.to_thread(
                self.state.finish_sync,
                sync_id,
                "partial" if loaded else "failed",
                str(exc),
                classify(str(exc)),
            )
            raise
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
            await asyncio.to_thread(warehouse.close)
        return (await asyncio.to_thread(self.state.syncs, self.name, 1))[0]

    async def _read_batch(self, position: int, end: int) -> list[StoredRecord]:
        """Up to ``batch_events`` records after ``position``, none after ``end``."""
        if position >= end:
            return []
        records = await self.log.read(position, min(READ_LIMIT, self.batch_events))
        while records and len(records) < self.batch_events and records[-1].offset < end:
            more = await self.log.read(records[-1].offset, READ_LIMIT)
            if not more:
                break
            records.extend(more)
        return records

    def _open(self, warehouse: Warehouse) -> int:
        warehouse.open()
        self._columns = {}
        position = warehouse.position(self.name)
        return position or 0

    def _load_batch(
        self, warehouse: Warehouse, records: list[StoredRecord], after: int
    ) -> tuple[dict[str, int], int, list[Discard]]:
        """Shape, plan and load one batch (on a thread); rows per table, events, discards."""
        from headwater.warehouses.batch import plan_table  # pyarrow: only where loads run

        by_table: dict[tuple[str, str], list[Row]] = defaultdict(list)
        discards: dict[str, list[Discard]] = defaultdict(list)
        events = 0
        for record in records:
            schema = self._schemas.get(record.source)
            if schema is None:
                continue
            events += 1
            shaped = self.shaper.shape(schema, orjson.loads(record.payload))
            for row in shaped.rows:
                by_table[(row.schema, row.table)].append(row)
            for where, discard in shaped.discards:
                discards[where].append(discard)
        uuid_ts = datetime.now(UTC)
        plans: list[TablePlan] = []
        for (schema, table), rows in by_table.items():
            plan, lost = plan_table(schema, table, rows, self._known(warehouse, schema, table),
                                    uuid_ts)  # fmt: skip
            plans.append(plan)
            if lost:
                discards[schema].extend(lost)
        every: list[Discard] = []
        for schema, found in discards.items():
            plans.append(self._discards_plan(warehouse, schema, found, uuid_ts))
            every.extend(found)
        try:
            warehouse.load(self.name, plans, after, records[-1].offset)
        except StalePosition:
            self._columns = {}
            raise
        except WarehouseError:
            self._columns = {}  # what the failed transaction created is gone
            raise
        for plan in plans:
            self._columns.setdefault(plan.schema, {}).setdefault(plan.table, {}).update(
                plan.columns
            )
        counts = {f"{p.schema}.{p.table}": p.rows for p in plans}
        return counts, events, every

    def _known(self, warehouse: Warehouse, schema: str, table: str) -> dict[str, ColumnType] | None:
        if schema not in self._columns:
            self._columns[schema] = warehouse.columns(schema)
        return self._columns[schema].get(table)

    def _discards_plan(self, warehouse: Warehouse, schema: str, found: list[Discard],
                       uuid_ts: datetime) -> TablePlan:  # fmt: skip
        from headwater.warehouses.batch import plan_table

        rows = [Row(schema, DISCARDS, r["id"], r, dict(DISCARDS_COLUMNS))
                for r in iter_discard_rows(found, uuid_ts)]  # fmt: skip
        plan, _ = plan_table(schema, DISCARDS, rows, self._known(warehouse, schema, DISCARDS),
                             uuid_ts)  # fmt: skip
        return plan

    async def rewind(self, since_ms: int) -> int | None:
        """Backfill: move the committed position back to just before the first event received
        at or after ``since_ms``; the next sync reloads from there (rows already loaded are
        skipped by ``id``). The new position, None when nothing retained is that recent."""
        target = await self._offset_before(since_ms)
        if target is None:
            return None
        lock = await asyncio.to_thread(self._lock)
        try:
            warehouse = self._opener(self.config, self.data_dir)
            try:
                current = await asyncio.to_thread(self._open, warehouse)
                if target < current:
                    await asyncio.to_thread(warehouse.set_position, self.name, target)
                    await asyncio.to_thread(self.state.set_position, self.name, target)
            finally:
                await asyncio.to_thread(warehouse.close)
        finally:
            lock.close()
        logger.info("warehouse %s: backfill from offset %d", self.name, target + 1)
        return target

    async def _offset_before(self, since_ms: int) -> int | None:
        position = 0
        while True:
            records = await self.log.read(position, READ_LIMIT)
            if not records:
                return None
            for record in records:
                if record.received_at_ms >= since_ms:
                    return record.offset - 1
            position = records[-1].offset


class Warehouses:
    """Every enabled warehouse's loop, as tasks of the process that runs delivery (``node``:
    that process, named in the syncs it runs when state is shared). Each loop has its own
    stop, so a changed configuration stops and starts only the warehouses it changed."""

    def __init__(self, workspace: Workspace, log: EventLog, data_dir: Path,
                 node: str | None = None) -> None:  # fmt: skip
        self._log, self._data_dir, self._node = log, data_dir, node
        self._state = workspace.state
        self.loaders = [self._loader(w) for w in workspace.warehouses if w.enabled]
        self._running: dict[str, tuple[Loader, asyncio.Event, asyncio.Task[None]]] = {}
        self._changing = asyncio.Lock()  # one reconfigure at a time

    def _loader(self, config: WarehouseConfig) -> Loader:
        return Loader(config, self._log, self._data_dir, state=self._state, node=self._node)

    def start(self) -> None:
        for loader in self.loaders:
            self._start(loader)

    def _start(self, loader: Loader) -> None:
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(loader.run(stop),
                                                      name=f"warehouse:{loader.name}")  # fmt: skip
        self._running[loader.name] = (loader, stop, task)

    async def _stop(self, name: str, interrupt: bool = False) -> None:
        """Stop one loop after the sync it is in (its batch commits or rolls back whole);
        ``interrupt`` (shutting down): a call waiting for PostgreSQL gives up now."""
        loader, stop, task = self._running.pop(name)
        stop.set()
        if interrupt:
            loader.state.interrupt()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.loaders.remove(loader)

    async def reconfigure(self, workspace: Workspace) -> dict[str, str]:
        """Run ``workspace``'s warehouses from now on: a removed, disabled or changed one
        stops after its current sync, a new or changed one starts (from its committed
        position: nothing is loaded twice or skipped)."""
        async with self._changing:
            return await self._reconfigure(workspace)

    async def _reconfigure(self, workspace: Workspace) -> dict[str, str]:
        wanted = {w.name: w for w in workspace.warehouses if w.enabled}
        done: dict[str, str] = {}
        for name, (loader, _, _) in list(self._running.items()):
            if wanted.get(name) != loader.config:
                await self._stop(name)
                done[name] = "stopped"
        for name, config in wanted.items():
            if name not in self._running:
                loader = self._loader(config)
                self.loaders.append(loader)
                self._start(loader)
                done[name] = "restarted" if name in done else "started"
        return done

    async def stop(self) -> None:
        for name in list(self._running):
            _, stop, _ = self._running[name]
            stop.set()
        await asyncio.gather(*(self._stop(name, interrupt=True) for name in list(self._running)))
