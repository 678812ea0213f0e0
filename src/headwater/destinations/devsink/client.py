"""The ``devsink`` destination: deliveries kept in memory, readable through the API and CLI."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import Attempt, Delivered, Exchange
from headwater.destinations.base import Context, Destination
from headwater.destinations.devsink import encoder
from headwater.destinations.devsink.settings import DevsinkSettings


class Devsink(Destination[DevsinkSettings]):
    """Built in, always up: ``GET /api/v1/devsink/{name}`` and ``headwater devsink NAME``
    show what it received. For demos, tests and the canary."""

    type = "devsink"
    settings_model = DevsinkSettings
    default_batch_events = 100
    max_batch_events = 10_000

    def __init__(self, name: str, settings: DevsinkSettings, context: Context) -> None:
        super().__init__(name, settings, context)
        self._kept: deque[dict[str, Any]] = deque(maxlen=settings.keep)
        self.delivered_total = 0

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        started = time.perf_counter()
        at_ms = int(time.time() * 1000)
        self._kept.extend(encoder.entry(e, at_ms) for e in events)
        self.delivered_total += len(events)
        took_ms = (time.perf_counter() - started) * 1000
        return Attempt(Delivered(), Exchange(), took_ms)

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The kept events, newest first."""
        items = list(reversed(self._kept))
        return items if limit is None else items[:limit]
