"""The status monitor: checks every component every ``status.check_interval_secs``.

Each check gathers signals from the running process (the log's stats, each delivery
worker, the canary), evaluates them (:mod:`headwater.status.model`), records the result
(:mod:`headwater.status.store`: component states, uptime, incidents) and hands what changed
to the alert dispatcher.
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
from headwater.status.canary import CANARY_DESTINATION, CanaryState
from headwater.status.model import (
    Component,
    ComponentState,
    DestinationSignal,
    ProcessSignal,
    Signals,
    StateSignal,
    components,
    evaluate,
)
from headwater.status.store import Change, StatusStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

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
        self._probe = postgres.Probe(state) if postgres.uses_postgres(state) else None
        self._state_down_since: int | None = None
        self.log = log
        self.delivery = delivery
        self.canary = canary
        self._directory = directory
        self._on_changes = on_changes
        self._processes = processes or list
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headwater-status")
        self._store: StatusStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_check = time.monotonic()
        self.current: list[ComponentState] = []

    @property
    def destinations(self) -> list[str]:
        """The destinations shown as components (the built-in canary sink is not)."""
        return [n for n in self.delivery.workers if n != CANARY_DESTINATION]

    def components(self) -> list[Component]:
        return components(self.destinations, [p.name for p in self._processes()],
                          shared_state=self._probe is not None)  # fmt: skip

    async def start(self) -> None:
        self._store = await self.run_sync(lambda _: StatusStore(self._directory))
        await self.check()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="status:monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.get_running_loop().run_in_executor(self._pool, store.close)
        self._pool.shutdown(wait=True)

    async def run_sync(self, fn: Callable[[StatusStore], T]) -> T:
        """Run ``fn`` with the store on the monitor's thread."""
        store = self._store

        def call() -> T:
            return fn(store)  # type: ignore[arg-type]  # None only for the opening call

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

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
        changes = await self.run_sync(lambda store: store.apply(states, signals.now_ms, elapsed))
        self.current = [c.state for c in changes]
        if self._on_changes is not None:
            try:
                await self._on_changes(changes)
            except Exception:
                logger.exception("alerting failed")
        return self.current
