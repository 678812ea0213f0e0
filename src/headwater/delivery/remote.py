"""Delivery as the gateway process sees it when the engine runs in the worker process.

:class:`RemoteEngine` is a :class:`~headwater.delivery.view.DeliveryView`: its workers mirror
the worker process's in-memory state (counters, cursors, breakers), refreshed over the
control channel (:mod:`headwater.delivery.control`) every ``REFRESH_SECS`` and before each
trace. The delivery store is opened here too (SQLite lets several processes share it), and
destinations' filters are rebuilt from the workspace, so previews and traces run locally.
While the worker process is down its workers read as not alive, with their last counters.

A **gateway node** (``serve --role gateway`` with ``state: {backend: postgres}``) has no
worker process of its own: the worker nodes deliver (docs/scale-out.md). It is then built
with ``cluster=True`` and mirrors the snapshots the nodes delivering each destination
publish in the shared state at every lease round (:mod:`headwater.state.leases`); a
destination whose lease nobody holds reads as not alive. It writes its own heartbeat there
too, so the status page lists it among the nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from headwater.config.workspace import Workspace
from headwater.delivery.control import LINE_LIMIT_BYTES
from headwater.delivery.engine import route_of, states_of
from headwater.delivery.http import HttpClient
from headwater.delivery.policy import BreakerState
from headwater.delivery.snapshot import stats_from
from headwater.delivery.state import DestinationState
from headwater.delivery.store import DeliveryStore
from headwater.delivery.worker import WorkerStats
from headwater.log.base import EventLog, StoredRecord
from headwater.processor.fanout import DestinationStage
from headwater.processor.routing import Route
from headwater.state import leases

logger = logging.getLogger(__name__)

REFRESH_SECS = 0.5
ASK_TIMEOUT_SECS = 5.0
CONFIGURE_SECS = 60.0  # a configure stops workers after their in-flight requests: allow for it
CLUSTER_SECS = 2.0  # a gateway node's read of the shared state, at most


@dataclass
class RemoteLive:
    committed: int = 0
    position: int = 0


@dataclass
class RemoteBreaker:
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0


class RemoteStage(DestinationStage):
    """The destination's filters and transformations, built here (for previews and
    traces), with the counters of the worker process."""

    remote_stats: list[dict[str, Any]] | None = None

    def stats(self) -> list[dict[str, Any]]:
        return self.remote_stats if self.remote_stats is not None else super().stats()


@dataclass
class RemoteWorker:
    route: Route
    stage: RemoteStage
    stats: WorkerStats = field(default_factory=WorkerStats)
    live: RemoteLive = field(default_factory=RemoteLive)
    breaker: RemoteBreaker = field(default_factory=RemoteBreaker)
    alive: bool = False

    def queued_behind(self) -> tuple[int, int]:
        return self.live.committed, self.live.position

    def update(self, doc: dict[str, Any]) -> None:
        self.alive = bool(doc["alive"])
        self.live = RemoteLive(int(doc["committed"]), int(doc["position"]))
        self.breaker = RemoteBreaker(BreakerState(doc["breaker"]), int(doc["consecutive_failures"]))
        self.stats = stats_from(doc["stats"])
        self.stage.remote_stats = doc["filter_stats"]
        self.stage.transformed = int(doc["transformed"])


def _mirrors(
    workspace: Workspace, old: dict[str, RemoteWorker] | None = None
) -> dict[str, RemoteWorker]:
    """A mirror per destination (an unchanged one keeps its last counters)."""
    out: dict[str, RemoteWorker] = {}
    for d in workspace.destinations:
        found = (old or {}).get(d.name)
        route = route_of(d)
        if found is None or found.route != route:
            found = RemoteWorker(route, RemoteStage(d.name, d.filters, workspace.transformations))
        else:
            found.stage = RemoteStage(d.name, d.filters, workspace.transformations)
        out[d.name] = found
    return out


class RemoteEngine:
    """The worker process's delivery engine, seen from the gateway."""

    def __init__(
        self,
        workspace: Workspace,
        log: EventLog,
        data_dir: Path,
        socket: Path,
        cluster: bool = False,
    ) -> None:
        self.log = log
        self._socket = socket
        self._state = workspace.state if cluster else None
        self._store = DeliveryStore(data_dir, workspace.state)
        self._http = HttpClient()
        self._workers = _mirrors(workspace)
        self.held: set[str] = set()
        self.revision = 0  # what the gateway last configured
        self._pending: dict[str, Any] | None = None  # a configure the worker has not taken
        self.warehouses_done: dict[str, str] = {}  # what the last configure did to them
        self.spaces_done: dict[str, str] = {}
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.worker_pid: int | None = None
        self._cluster: leases.LeaseThread | None = None

    @property
    def workers(self) -> dict[str, RemoteWorker]:
        return self._workers

    @property
    def store(self) -> DeliveryStore:
        return self._store

    @property
    def http(self) -> HttpClient:
        return self._http

    async def start(self) -> None:
        await self._store.open()
        if self._state is not None:
            self._cluster = await leases.LeaseThread.open(
                self._state, leases.node_id("gateway"), "gateway"
            )
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="delivery:view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._disconnect()
        if self._cluster is not None:  # the node leaves the list at once
            held, self._cluster = self._cluster, None
            await held.close(CLUSTER_SECS)
        await self._http.close()
        await self._store.close()

    async def _refresh_cluster(self) -> bool:
        """Heartbeat, and mirror what the nodes delivering each destination published."""

        def read(held: leases.Leases) -> dict[str, str]:
            held.heartbeat(every=leases.RENEW_SECS)  # the view refreshes twice as often
            return held.snapshots()

        assert self._cluster is not None
        try:
            docs = await asyncio.wait_for(self._cluster.call(read), CLUSTER_SECS)
        except Exception as exc:
            logger.warning("cannot read the cluster's delivery from the state: %s",
                           exc or type(exc).__name__)  # fmt: skip
            docs = None
        for name, worker in self._workers.items():
            doc = None if docs is None else docs.get(name)
            if doc is None:
                worker.alive = False
            else:
                worker.update(orjson.loads(doc))
        return docs is not None

    async def refresh(self) -> bool:
        """Mirror the worker process's state now; False when it does not answer."""
        if self._cluster is not None:
            return await self._refresh_cluster()
        answer = await self.ask({"op": "snapshot"})
        if answer is None or "workers" not in answer:
            for worker in self._workers.values():
                worker.alive = False
            return False
        self.worker_pid = answer.get("pid")
        self.held = set(answer.get("held", ()))
        if self._pending is not None and answer.get("revision") != self.revision:
            try:  # a worker restarted with an older workspace, or one that missed a change
                await self._configure(self._pending)
            except RuntimeError as exc:
                logger.warning("%s", exc)
        for name, doc in answer["workers"].items():
            found = self._workers.get(name)
            if found is not None:
                found.update(doc)
        return True

    async def reconfigure(
        self, workspace: Workspace, running: Workspace, end: int, revision: int
    ) -> dict[str, str]:
        """Send the user's ``workspace`` to the worker process (again after each of its
        restarts, until it runs it; it adds the canary's and the spaces' own as it does at
        its start); mirror the destinations of ``running`` (those included) from now on."""
        self._workers = _mirrors(running, self._workers)
        self.revision = revision
        self._pending = {"op": "configure", "workspace": workspace.model_dump(mode="json",
                         by_alias=True), "end": end, "revision": revision}  # fmt: skip
        return await self._configure(self._pending)

    async def _configure(self, request: dict[str, Any]) -> dict[str, str]:
        """Send a configure and wait for the worker to run it (a configure is idempotent: the
        worker compares it with what it runs). Unconfirmed, it raises — the change is stored,
        the worker gets it again at its next answer, and the caller must not hear "applied"."""
        answer = await self._ask_once(request, CONFIGURE_SECS)
        if answer is None or "destinations" not in answer:
            said = (answer or {}).get("message", "no answer")
            raise RuntimeError(f"the delivery worker did not confirm revision "
                               f"{request['revision']} ({said}); it is sent again when the "
                               "worker answers")  # fmt: skip
        done: dict[str, str] = answer["destinations"]
        self.warehouses_done = answer.get("warehouses", {})
        self.spaces_done = answer.get("spaces", {})
        return done

    async def states(self, message_id: str) -> tuple[StoredRecord, list[DestinationState]] | None:
        await self.refresh()  # the cursors as they are now, not half a second ago
        return await states_of(self.log, self._store, self._workers, message_id)

    async def devsink_page(self, name: str, limit: int) -> dict[str, Any] | None:
        if self._cluster is not None:
            return None  # a devsink keeps its events in the memory of the node delivering it
        answer = await self.ask({"op": "devsink", "name": name, "limit": limit})
        if answer is None or "error" in answer:
            return None
        return answer

    async def ask(
        self, request: dict[str, Any], answer_secs: float = ASK_TIMEOUT_SECS
    ) -> dict[str, Any] | None:
        """One request on the control channel; None when the worker is not there."""
        async with self._lock:
            for _ in range(2):  # a connection to a worker that was restarted fails once
                try:
                    if self._conn is None:
                        self._conn = await asyncio.wait_for(
                            asyncio.open_unix_connection(str(self._socket), limit=LINE_LIMIT_BYTES),
                            ASK_TIMEOUT_SECS,
                        )
                    reader, writer = self._conn
                    writer.write(orjson.dumps(request) + b"\n")
                    line = await asyncio.wait_for(reader.readline(), answer_secs)
                    if not line:
                        raise ConnectionError("the worker closed the control channel")
                    answer: dict[str, Any] = orjson.loads(line)
                    return answer
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                    self._disconnect()
            return None

    async def _ask_once(self, request: dict[str, Any], answer_secs: float) -> dict[str, Any] | None:
        """One request on a connection of its own, sent once (never again after it went
        out: a configure must not run twice at once), holding no lock the mirror's refresh
        needs."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self._socket), limit=LINE_LIMIT_BYTES),
                ASK_TIMEOUT_SECS,
            )
        except (OSError, TimeoutError):
            return None
        try:
            writer.write(orjson.dumps(request) + b"\n")
            line = await asyncio.wait_for(reader.readline(), answer_secs)
            answer: dict[str, Any] = orjson.loads(line) if line else {"message": "no answer"}
            return answer
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            return {"message": str(exc) or type(exc).__name__}
        finally:
            writer.close()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    async def _follow(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                logger.exception("cannot mirror the delivery worker's state")
            await asyncio.sleep(REFRESH_SECS)
