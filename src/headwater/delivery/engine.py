"""The delivery engine: one worker per destination, the store they share, housekeeping.

``app.py`` starts it with the log the gateway appends to; it reads that log and never
touches the gateway (stages meet only through the log).

**Shared delivery** (``state: {backend: postgres}``): several engines — worker processes on
any number of nodes, on the same log and state — share the destinations through leases
(:mod:`headwater.state.leases`). Each destination is delivered by one engine at a time,
from the cursor in the shared store; the others follow its position. An engine that dies
stops renewing its leases and the others take its destinations within
``leases.TTL_SECS``; events it had sent but not yet recorded are sent again (at-least-once).
Per-destination order, concurrency and rate limits hold as on one node, because one
engine at a time delivers each destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from headwater.config.workspace import DestinationConfig, Workspace
from headwater.delivery.http import HttpClient
from headwater.delivery.snapshot import worker_snapshot
from headwater.delivery.state import DestinationState, state_of
from headwater.delivery.store import DeliveryStore, SetCursor, StoreDB, now_ms
from headwater.delivery.worker import Worker
from headwater.destinations import TYPES
from headwater.destinations.base import Context, Destination
from headwater.destinations.devsink import Devsink
from headwater.destinations.function import FunctionDestination
from headwater.functions.host import STATS_DIR, FunctionHost
from headwater.functions.insert import InsertedDestination
from headwater.log.base import EventLog, StoredRecord
from headwater.processor.fanout import DestinationStage
from headwater.processor.routing import NotMine, Route
from headwater.state import leases, postgres
from headwater.state.config import OPEN_END

logger = logging.getLogger(__name__)
T = TypeVar("T")

REPLAY_SCAN_SECS = 1.0
HANDOVER_STOP_SECS = 30.0
ROUND_TIMEOUT_SECS = 2.0
PRUNE_EVERY_SECS = 3600.0


def build_destination(config: DestinationConfig, http: HttpClient) -> Destination[Any]:
    """The destination object for a validated configuration."""
    kind = TYPES[config.type]
    settings = kind.settings_model.model_validate(config.settings)
    wanted = config.delivery.batch_max_events or kind.default_batch_events
    batch = min(wanted, kind.max_batch_events)
    actions = None if config.actions is None else tuple(config.actions)
    context = Context(http, config.delivery.timeout_secs, batch, actions)
    return kind(config.name, settings, context)


def route_of(config: DestinationConfig) -> Route:
    return Route(config.name, config.type, frozenset(config.sources), config.enabled)


class _Routed(Protocol):
    @property
    def route(self) -> Route: ...
    def queued_behind(self) -> tuple[int, int]: ...


async def states_of(
    log: EventLog, store: DeliveryStore, workers: Mapping[str, _Routed], message_id: str
) -> tuple[StoredRecord, list[DestinationState]] | None:
    """The event with this id and its state with each destination it is routed to (or
    filtered from), given each worker's committed cursor; None when the log does not have it."""
    record = await log.get(message_id)
    if record is None:
        return None
    event = orjson.loads(record.payload)
    wanted = [
        (name, worker.queued_behind()[0])
        for name, worker in workers.items()
        if not isinstance(worker.route.decide(record.source, event), NotMine)
    ]

    def collect(db: StoreDB) -> list[DestinationState]:
        return [state_of(db, name, record.offset, message_id, cur) for name, cur in wanted]

    return record, await store.run(collect)


Pauses = Callable[[], Mapping[str, Sequence[tuple[int, int]]]]
"""Per destination, the log offsets ``(after, up_to]`` accepted while it was disabled
(:meth:`headwater.state.config.ConfigStore.pauses`)."""


def _same(a: Workspace, b: Workspace, name: str) -> bool:
    """Whether a destination's worker can stay as it is: its configuration and the
    transformations and functions that apply to it are unchanged."""

    def mine(ws: Workspace) -> tuple[Any, ...]:
        return (ws.destination(name), [t for t in ws.transformations if t.destination == name])

    return mine(a) == mine(b)


def _held(config: DestinationConfig, pauses: Mapping[str, Sequence[tuple[int, int]]]) -> bool:
    """Disabled by a change that is still in force (its pause has no end)."""
    ranges = pauses.get(config.name, ())
    return not config.enabled and bool(ranges) and ranges[-1][1] >= OPEN_END


class DeliveryEngine:
    """Runs the delivery of every destination of a workspace.

    A destination disabled through a change (the write API, or the file at a start: it has
    an open pause) runs no worker: nothing is sent, its backlog waits after its cursor and
    its dead letters stay, until it is enabled again (then the events accepted meanwhile are
    recorded as filtered, "accepted while the destination was disabled") or deleted."""

    def __init__(
        self, workspace: Workspace, log: EventLog, data_dir: Path, role: str = "worker",
        pauses: Pauses = dict,
    ) -> None:  # fmt: skip
        self.workspace = workspace
        self.log = log
        self.store = DeliveryStore(data_dir, workspace.state)
        self.shared = postgres.uses_postgres(workspace.state)
        self.node = leases.node_id(role)
        self._leases: leases.LeaseThread | None = None
        self._valid_until = 0.0
        self._handing: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self.http = HttpClient()
        self.workers: dict[str, Worker] = {}
        self.held: set[str] = set()  # disabled by a change: no worker
        self.revision = 0  # of the configuration store, as told by the gateway
        self._pauses = pauses
        self._changing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.functions = FunctionHost(workspace.functions, ("destination", "insert"),
                                      data_dir.parent / STATS_DIR, "delivery")  # fmt: skip

    async def start(self) -> None:
        await self.functions.start()  # a function that cannot load stops start-up
        await self.store.open()
        started = await self._add(self.workspace.destinations, self.log.stats().last_offset or 0)
        loop = asyncio.get_running_loop()
        if self.shared:
            state = self.workspace.state
            assert postgres.uses_postgres(state)
            self._leases = await leases.LeaseThread.open(state, self.node, "worker")
            await self._share_once()  # this node's share runs before start() returns
            self._tasks = [loop.create_task(self._share(), name="delivery:leases")]
        else:
            for worker in started:
                worker.start()
            self._tasks = []
        self._tasks += [
            loop.create_task(self._watch_replays(), name="delivery:replays"),
            loop.create_task(self._prune(), name="delivery:prune"),
        ]

    async def _add(
        self, configs: Sequence[DestinationConfig], end: int, fresh: frozenset[str] = frozenset(),
        workspace: Workspace | None = None,
    ) -> list[Worker]:  # fmt: skip
        """A worker for each destination not held, after its cursor (a new destination, or
        one in ``fresh`` — made again under the name of a deleted one — after ``end``: the
        events accepted from now on); not started yet."""
        transformations = (workspace or self.workspace).transformations
        cursors = await self.store.run(lambda db: db.cursors())
        pauses = self._pauses()
        new, made = [], []
        for config in configs:
            if _held(config, pauses):
                self.held.add(config.name)
                continue
            self.held.discard(config.name)
            start = None if config.name in fresh else cursors.get(config.name)
            if start is None:  # a new destination starts with the events arriving from now on
                start = end
                new.append(SetCursor(config.name, end))
            destination = self._with_functions(build_destination(config, self.http))
            stage = DestinationStage(config.name, config.filters, transformations)
            worker = Worker(route_of(config), destination, config.delivery, self.log, self.store,
                            start, stage, pauses.get(config.name, ()))  # fmt: skip
            self.workers[config.name] = worker
            made.append(worker)
        if new:
            await self.store.write(new)
        return made

    async def _remove(self, name: str) -> None:
        """Stop a destination's worker after its in-flight requests; what it has not sent
        stays after its cursor."""
        worker = self.workers.pop(name, None)
        if worker is not None:
            await worker.stop()
            await worker.destination.close()

    async def reconfigure(self, workspace: Workspace, end: int, revision: int) -> dict[str, str]:
        """Run ``workspace`` from now on: workers of removed, disabled or changed
        destinations stop after their in-flight requests (their cursor is committed), changed
        and new ones start after their cursor (a new one after ``end``, the log's last
        offset when the change was accepted), so no event is lost or sent out of order.
        Before anything waits, every running worker takes the pauses as they are now: one
        disabled or deleted by this change reads nothing more past ``end`` while it stops.
        Returns what happened to each destination touched; a failure part way is made good
        by the next call (the engine's workspace changes only once all of it ran)."""
        if self.shared:
            raise RuntimeError("a shared delivery engine takes configuration from its start")
        async with self._changing:
            old, done = self.workspace, {}
            pauses = self._pauses()
            for name, worker in self.workers.items():
                worker.pauses = tuple(pauses.get(name, ()))
            wanted = {d.name for d in workspace.destinations}
            gone = [n for n in [*self.workers, *self.held] if n not in wanted]
            touched = [
                d for d in workspace.destinations
                if not _same(old, workspace, d.name) or (d.name in self.held) != _held(d, pauses)
                or (d.name not in self.workers and d.name not in self.held)
            ]  # fmt: skip
            await asyncio.gather(*(self._remove(n) for n in [*gone, *(d.name for d in touched)]))
            for name in gone:
                self.held.discard(name)
                done[name] = "removed"
            fresh = frozenset(d.name for d in touched if old.destination(d.name) is None)
            for worker in await self._add(touched, end, fresh, workspace):
                worker.start()
            for config in touched:
                existed = old.destination(config.name) is not None
                state = "held" if config.name in self.held else "running"
                done[config.name] = f"{'updated' if existed else 'created'}, {state}"
            self.workspace = workspace
            self.revision = revision
            return done

    def _with_functions(self, destination: Destination[Any]) -> Destination[Any]:
        """Give a function destination its pool; put a destination's insert functions
        before it."""
        if isinstance(destination, FunctionDestination):
            destination.pool = self.functions.pool(destination.settings.function)
        inserts = self.functions.inserts_for(destination.name)
        if inserts:
            return InsertedDestination(destination, inserts)  # type: ignore[return-value]
        return destination

    async def stop(self) -> None:
        self._closing = True
        if self.shared:  # stop delivering while the leases are still renewed, then release
            await asyncio.gather(*self._handing.values(), return_exceptions=True)
            await asyncio.gather(*(w.stop() for w in self.workers.values() if w.running),
                                 return_exceptions=True)  # fmt: skip
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in self.workers.values()), return_exceptions=True)
        if self._leases is not None:  # after the workers recorded their positions
            await self._leases.close()
        for worker in self.workers.values():
            await worker.destination.close()
        await self.http.close()
        await self.store.close()
        await self.functions.close()

    async def states(self, message_id: str) -> tuple[StoredRecord, list[DestinationState]] | None:
        """The event with this id and its state with each destination it is routed to (or
        filtered from); None when the log does not have it."""
        return await states_of(self.log, self.store, self.workers, message_id)

    async def refresh(self) -> bool:
        return True  # the workers are here: always up to date

    def devsink(self, name: str) -> Devsink | None:
        worker = self.workers.get(name)
        if worker is None:
            return None
        found = getattr(worker.destination, "inner", worker.destination)
        return found if isinstance(found, Devsink) else None

    async def devsink_page(self, name: str, limit: int) -> dict[str, Any] | None:
        sink = self.devsink(name)
        if sink is None:
            return None
        return {"total": sink.delivered_total, "events": sink.recent(limit)}

    # ------------------------------------------------------------------ shared delivery

    async def _lease_call(self, fn: Callable[[leases.Leases], T]) -> T:
        assert self._leases is not None
        return await self._leases.call(fn)

    async def _share(self) -> None:
        while True:
            await asyncio.sleep(leases.RENEW_SECS)
            try:
                await self._share_once()
            except Exception:
                logger.exception("shared delivery: the lease round failed")

    async def _share_once(self) -> None:
        """Renew and take leases, then start what this node now holds and stop what it
        lost or can no longer be sure it holds. Nothing here waits on a worker: a graceful
        hand-over runs on a task of its own, so renewals never pause."""
        names = sorted(self.workers)
        shown = {name: orjson.dumps(worker_snapshot(w)).decode()
                 for name, w in self.workers.items() if w.running}  # fmt: skip
        result: leases.Round | None = None
        try:
            result = await asyncio.wait_for(
                self._lease_call(lambda held: held.round(names, shown)), ROUND_TIMEOUT_SECS
            )
        except Exception as exc:
            logger.warning("shared delivery: cannot renew leases: %s", exc or type(exc).__name__)
        if result is None:
            if time.monotonic() >= self._valid_until:  # others may take them now: stop first
                for name, worker in self.workers.items():
                    if worker.running:
                        logger.warning("shared delivery: %s cannot renew its lease of %s; it "
                                       "stops delivering it", self.node, name)  # fmt: skip
                        await worker.halt()
                        worker.follow(None, worker.live.committed)
            return
        self._valid_until = result.valid_until
        if self._closing:
            return  # stop() is stopping the workers; the leases stay renewed meanwhile
        try:
            cursors: dict[str, int] | None = await asyncio.wait_for(
                self.store.run(lambda db: db.cursors()), ROUND_TIMEOUT_SECS
            )
        except Exception:
            cursors = None  # no take-over without the shared cursor; positions shown stale
        for name, worker in self.workers.items():
            if name in self._handing:
                continue
            owner = result.owners.get(name)
            known = worker.live.committed if cursors is None else cursors.get(name, 0)
            if owner == self.node and name not in result.surplus:
                if not worker.running and cursors is not None:
                    logger.info("shared delivery: %s delivers %s from offset %d", self.node,
                                name, known)  # fmt: skip
                    worker.take_over(known)
                continue
            if owner == self.node:  # beyond this node's share: stop, then give it back
                self._handing[name] = asyncio.get_running_loop().create_task(
                    self._give_back(name, worker), name=f"delivery:give-back:{name}"
                )
                continue
            if worker.running:  # the lease is another node's: this one must not send
                logger.warning("shared delivery: %s lost %s to %s; it stops at once",
                               self.node, name, owner or "nobody")  # fmt: skip
                await worker.halt()
                known = max(known, worker.live.committed)
            worker.follow(owner, known)

    async def _give_back(self, name: str, worker: Worker) -> None:
        """Stop delivering ``name`` (gracefully: outcomes recorded, cursor moved) while the
        rounds keep renewing its lease, then release it for another node to take."""
        try:
            if worker.running:
                logger.info("shared delivery: %s hands %s over", self.node, name)
                try:
                    await asyncio.wait_for(worker.stop(), HANDOVER_STOP_SECS)
                except TimeoutError:
                    await worker.halt()
            worker.follow(None, worker.live.committed)
            await self._lease_call(lambda held: held.release([name]))
        except Exception:
            logger.exception("shared delivery: handing %s over failed", name)
        finally:
            self._handing.pop(name, None)

    async def _watch_replays(self) -> None:
        """Replay jobs are created by ``headwater replay`` in the store; hand them out."""
        while True:
            try:
                active = await self.store.run(lambda db: db.replays(active_only=True))
                for replay in active:
                    worker = self.workers.get(replay.destination)
                    if worker is not None and worker.running:
                        worker.add_replay(replay)
            except Exception:
                logger.exception("cannot read replay jobs")
            await asyncio.sleep(REPLAY_SCAN_SECS)

    async def _prune(self) -> None:
        """The ledger keeps as long as the log does."""
        keep_ms = int(self.workspace.log.retention_max_age_secs * 1000)
        while True:
            with contextlib.suppress(Exception):
                dropped = await self.store.run(lambda db: db.prune(now_ms() - keep_ms))
                if dropped:
                    logger.info("delivery ledger: pruned %d rows past retention", dropped)
            await asyncio.sleep(PRUNE_EVERY_SECS)
