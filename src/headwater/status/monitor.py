"""The status monitor: checks every component every ``status.check_interval_secs``.

Each check gathers signals from the running process (the log's stats, each delivery
worker, the canary), evaluates them (:mod:`headwater.status.model`), records the result
(:mod:`headwater.status.store`: component states, uptime, incidents) and hands what changed
to the alert dispatcher. Each node records its checks in its own file and alerts from them
(with shared state a claim makes each alert once for the cluster); with shared state it
also publishes them, one gateway records the cluster's status from every gateway's checks
(:meth:`~headwater.status.store.StatusStore.check`), and the status page shows that one
while PostgreSQL answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from headwater.config.workspace import StateConfig, StatusConfig
from headwater.delivery.view import DeliveryView
from headwater.log.base import EventLog
from headwater.state import postgres
from headwater.state.sql import first_line
from headwater.status.canary import CANARY_DESTINATION, CanaryState
from headwater.status.model import (
    DESTINATIONS,
    PROCESSES,
    Component,
    ComponentState,
    DestinationSignal,
    ProcessSignal,
    Signals,
    StateSignal,
    components,
    evaluate,
)
from headwater.status.store import Change, Maintenance, StatusStore

logger = logging.getLogger(__name__)
T = TypeVar("T")
READ_WAIT_SECS = 3.0
"""A status page read from the cluster's store waits this long before it shows this node's."""
FRESH_CHECKS = 3
"""With shared state, another gateway's observation counts for this many check intervals."""
GROUPS = {g.id: g for g in (DESTINATIONS, PROCESSES)}

OnChanges = Callable[[list[Change]], Awaitable[None]]


class Monitor:
    def __init__(
        self,
        config: StatusConfig,
        log: EventLog,
        delivery: DeliveryView,
        canary: CanaryState | None,
        directory: Path,
        on_changes: OnChanges | None = None,
        processes: Callable[[], list[ProcessSignal]] | None = None,
        state: StateConfig | None = None,
    ) -> None:
        self.config = config
        self._state_config = state
        self._probe = postgres.Probe(state) if postgres.uses_postgres(state) else None
        self._state_down_since: int | None = None
        self.log = log
        self.delivery = delivery
        self.canary = canary
        self._directory = directory
        self._on_changes = on_changes
        self._processes = processes or list
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headwater-status")
        self._store: StatusStore | None = None  # this node's file: its checks, its alerts
        # with shared state, the cluster's page, on a thread of its own (PostgreSQL may stall)
        self._shared_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hw-status-pg")
        self._shared: StatusStore | None = None
        self.shared_ok = False  # the last call to the cluster's store answered
        self._windows: list[Maintenance] | None = None  # the cluster's, as last read
        self._recording: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_check = time.monotonic()
        self.current: list[ComponentState] = []
        self._others: list[Component] = []  # components only other gateways observe

    @property
    def destinations(self) -> list[str]:
        """The destinations shown as components (the built-in canary sink is not)."""
        return [n for n in self.delivery.workers if n != CANARY_DESTINATION]

    def components(self) -> list[Component]:
        """What the status page shows: this node's components and, with shared state, those
        only other gateways observe (their processes), each group before its members."""
        own = components(self.destinations, [p.name for p in self._processes()],
                         shared_state=self._probe is not None)  # fmt: skip
        ids = {c.id for c in own}
        for c in self._others:
            if c.id not in ids:
                group = GROUPS.get(c.group or "")
                if group is not None and group.id not in ids:
                    own.append(group)
                    ids.add(group.id)
                own.append(c)
                ids.add(c.id)
        return own

    async def start(self) -> None:
        self._store = await self.run_local(lambda _: StatusStore(self._directory))
        await self.check()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="status:monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        if self._shared is not None:
            self._shared.interrupt()  # a recording waiting for PostgreSQL gives up
        if self._recording is not None:
            with contextlib.suppress(Exception):
                await self._recording
        if self._store is not None:
            store, self._store = self._store, None
            await loop.run_in_executor(self._pool, store.close)
        if self._shared is not None:
            shared, self._shared = self._shared, None  # interrupted above, or made since: close
            await loop.run_in_executor(self._shared_pool, shared.close)  # interrupts too
        self._pool.shutdown(wait=True)
        self._shared_pool.shutdown(wait=True)

    async def run_local(self, fn: Callable[[StatusStore], T]) -> T:
        """Run ``fn`` with this node's store on the monitor's thread."""
        store = self._store

        def call() -> T:
            return fn(store)  # type: ignore[arg-type]  # None only for the opening call

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def run_sync(self, fn: Callable[[StatusStore], T]) -> T:
        """Run ``fn`` with the store the status page reads: the cluster's with shared state
        while it answers, else this node's (so "is it down?" is answered while PostgreSQL is
        the thing that is down)."""
        shared = self._shared
        if shared is not None and self.shared_ok:
            call = asyncio.get_running_loop().run_in_executor(self._shared_pool, fn, shared)
            try:  # a half-open connection may hang for seconds: the page does not wait
                return await asyncio.wait_for(call, READ_WAIT_SECS)
            except Exception as exc:
                self._shared_failed(exc)
        return await self.run_local(fn)

    def _shared_failed(self, exc: BaseException) -> None:
        if self.shared_ok:
            logger.warning("the cluster's status store does not answer (%s); status pages show "
                           "this node's own checks until it does", first_line(exc))  # fmt: skip
        self.shared_ok = False

    async def _record_shared(self, states: list[ComponentState], at_ms: int,
                             elapsed: float) -> None:  # fmt: skip
        """This check, for the cluster's page (docs/status.md, "Several gateways"): published,
        and recorded when this node is the writer; the cluster's windows and the components
        other gateways observe read back."""
        state = self._state_config
        if state is None or self._probe is None:
            return
        fresh_ms = int(FRESH_CHECKS * self.config.check_interval_secs * 1000)

        loop = asyncio.get_running_loop()
        if self._shared is None:  # first: the node's own windows from before move over
            now = at_ms
            own = await self.run_local(lambda store: store.maintenances(upcoming_after=now))

            def open_shared() -> StatusStore:
                shared = StatusStore(self._directory, state)
                try:
                    shared.add_windows(own)
                except BaseException:
                    shared.close()
                    raise
                return shared

            try:
                self._shared = await loop.run_in_executor(self._shared_pool, open_shared)
            except Exception as exc:
                self._shared_failed(exc)
                return
            await self.run_local(lambda store: store.drop_windows([m.id for m in own]))

        def record(shared: StatusStore) -> tuple[list[Maintenance], list[Component]]:
            shared.check(states, at_ms, elapsed, fresh_ms)
            seen = shared.observations(at_ms - fresh_ms)
            others = list({s.component.id: s.component for _, s in seen}.values())
            return shared.maintenances(upcoming_after=at_ms), others

        try:
            self._windows, self._others = await loop.run_in_executor(
                self._shared_pool, record, self._shared
            )
        except Exception as exc:
            self._shared_failed(exc)
            return
        if not self.shared_ok:
            logger.info("the cluster's status store answers again")
        self.shared_ok = True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval_secs)
            try:
                await self.check()
            except Exception:
                logger.exception("status check failed")

    async def signals(self) -> Signals:
        stats = self.log.stats()
        last = stats.last_offset or 0
        now_ms = int(time.time() * 1000)
        destinations = []
        for name in self.destinations:
            worker = self.delivery.workers[name]
            committed = worker.live.committed
            lag = None
            if last > committed:
                head = await self.log.read(committed, 1)
                if head:
                    lag = max(0.0, (now_ms - head[0].received_at_ms) / 1000)
            destinations.append(
                DestinationSignal(
                    name=name,
                    worker_alive=worker.alive,
                    breaker=worker.breaker.state.value,
                    consecutive_failures=worker.breaker.consecutive_failures,
                    last_error=worker.stats.last_error,
                    backlog_events=max(0, last - committed),
                    lag_secs=lag,
                )
            )
        canary = self.canary.signal() if self.canary is not None else None
        return Signals(now_ms, stats.refusing, stats.commit_latency_ms, destinations, canary,
                       self._processes(), await self._state(now_ms), stats.replicas)  # fmt: skip

    async def _state(self, now_ms: int) -> StateSignal | None:
        """The shared state store's answer to a probe (on a thread: it may take seconds)."""
        probe = self._probe
        if probe is None:
            return None
        error, latency, nodes = await asyncio.get_running_loop().run_in_executor(None, probe.check)
        if error is None:
            self._state_down_since = None
        elif self._state_down_since is None:
            self._state_down_since = now_ms
        return StateSignal(probe.where, error, latency, self._state_down_since, nodes)

    async def check(self) -> list[ComponentState]:
        signals = await self.signals()
        states = evaluate(signals, self.config)
        now = time.monotonic()
        elapsed, self._last_check = now - self._last_check, now
        windows = self._windows
        changes = await self.run_local(
            lambda store: store.apply(states, signals.now_ms, elapsed, windows)
        )
        self.current = [c.state for c in changes]
        if self._on_changes is not None:
            try:
                await self._on_changes(changes)
            except Exception:
                logger.exception("alerting failed")
        if self._probe is not None and (self._recording is None or self._recording.done()):
            # beside the checks: a PostgreSQL that does not answer must not slow them
            self._recording = asyncio.get_running_loop().create_task(
                self._record_shared(states, signals.now_ms, elapsed), name="status:shared"
            )
        return self.current
