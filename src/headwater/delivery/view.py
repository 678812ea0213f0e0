"""What the gateway's readers (API, console, status, metrics, trace) see of delivery.

In one process that is the :class:`~headwater.delivery.engine.DeliveryEngine` itself; when
delivery runs in a worker process it is a :class:`~headwater.delivery.remote.RemoteEngine`
that mirrors the worker's counters over the control channel. Both satisfy
:class:`DeliveryView`; everything beside the delivery path is written against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from headwater.delivery.http import HttpClient
from headwater.delivery.policy import BreakerState
from headwater.delivery.state import DestinationState
from headwater.delivery.store import DeliveryStore
from headwater.delivery.worker import WorkerStats
from headwater.log.base import StoredRecord
from headwater.processor.fanout import DestinationStage
from headwater.processor.routing import Route


class LiveView(Protocol):
    @property
    def committed(self) -> int: ...


class BreakerView(Protocol):
    @property
    def state(self) -> BreakerState: ...
    @property
    def consecutive_failures(self) -> int: ...


class WorkerView(Protocol):
    """One destination's worker, as its readers see it."""

    @property
    def route(self) -> Route: ...
    @property
    def stage(self) -> DestinationStage: ...
    @property
    def stats(self) -> WorkerStats: ...
    @property
    def live(self) -> LiveView: ...
    @property
    def breaker(self) -> BreakerView: ...
    @property
    def alive(self) -> bool: ...
    def queued_behind(self) -> tuple[int, int]: ...


class DeliveryView(Protocol):
    @property
    def workers(self) -> Mapping[str, WorkerView]: ...
    @property
    def store(self) -> DeliveryStore: ...
    @property
    def http(self) -> HttpClient: ...

    async def refresh(self) -> bool:
        """Bring what the workers show up to date (a no-op in one process); False when the
        delivery worker does not answer."""
        ...

    async def states(
        self, message_id: str
    ) -> tuple[StoredRecord, list[DestinationState]] | None: ...

    async def devsink_page(self, name: str, limit: int) -> dict[str, Any] | None:
        """``{"total": n, "events": [...]}`` of a devsink destination, None if there is none."""
        ...
