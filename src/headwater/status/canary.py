"""The synthetic canary: a marked event sent through Headwater's own Tracking API, on a
schedule, to a canary destination — and checked for arrival.

Canaries come from a source of their own, ``headwater-canary`` (added by the app with a
write key made at each start), so they never mix with a real source's counts. They are
marked in the event itself — ``event: "Headwater Canary"``, ``properties.headwater_canary:
true`` and ``context.headwater.canary: true`` — so a destination that receives them (when
``status.canary_destination`` names a real one) can filter them out of analytics. By default
they go to a built-in devsink, ``headwater-canary``, that only this source routes to.

A canary counts as seen when its delivery state with the canary destination is
``delivered``; its end-to-end latency is delivered time − receivedAt. One that has not
arrived after ``canary_late_secs`` makes Destinations (routing) degraded, after
``canary_missed_secs`` a partial outage (:mod:`headwater.status.model`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from headwater.delivery.outcomes import EventState
from headwater.delivery.state import DestinationState
from headwater.status.model import CanarySignal

logger = logging.getLogger(__name__)

CANARY_SOURCE = "headwater-canary"
CANARY_DESTINATION = "headwater-canary"
CANARY_EVENT = "Headwater Canary"
CHECK_EVERY_SECS = 0.25  # how often a pending canary is looked for
SEND_TIMEOUT_SECS = 10.0
FIRST_SEND_AFTER_SECS = 1.0

StatesOf = Callable[[str], Awaitable[list[DestinationState] | None]]


def canary_write_key() -> str:
    return "wk_canary_" + secrets.token_urlsafe(18)


@dataclass
class CanaryState:
    """What the canary knows, read by the status monitor and /metrics."""

    enabled: bool
    destination: str
    interval_secs: float
    last_sent_ms: int | None = None
    last_seen_ms: int | None = None
    last_latency_ms: float | None = None
    send_error: str | None = None
    send_failures: int = 0  # in a row
    sent_total: int = 0
    seen_total: int = 0
    pending: dict[str, int] = field(default_factory=dict)  # messageId -> sent at (ms)

    def signal(self) -> CanarySignal:
        return CanarySignal(
            enabled=self.enabled,
            destination=self.destination,
            interval_secs=self.interval_secs,
            last_sent_ms=self.last_sent_ms,
            last_seen_ms=self.last_seen_ms,
            last_latency_ms=self.last_latency_ms,
            send_error=self.send_error,
            send_failures=self.send_failures,
            pending_since_ms=min(self.pending.values(), default=None),
        )


def canary_event(message_id: str) -> dict[str, object]:
    return {
        "type": "track",
        "event": CANARY_EVENT,
        "anonymousId": CANARY_SOURCE,
        "messageId": message_id,
        "properties": {"headwater_canary": True},
        "context": {"headwater": {"canary": True},
                    "library": {"name": "headwater-canary", "version": "1"}},
    }  # fmt: skip


class Canary:
    """Sends a canary every ``interval_secs`` and watches for its arrival."""

    def __init__(
        self,
        state: CanaryState,
        client: httpx.AsyncClient,
        write_key: str,
        states_of: StatesOf,
        max_pending: int = 20,
    ) -> None:
        self.state = state
        self._client = client
        self._write_key = write_key
        self._states_of = states_of
        self._max_pending = max_pending
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._send_loop(), name="canary:send"),
            loop.create_task(self._watch_loop(), name="canary:watch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def send_one(self) -> None:
        message_id = f"canary-{uuid.uuid4()}"
        state = self.state
        sent_ms = int(time.time() * 1000)
        try:
            response = await self._client.post(
                "/v1/track", json=canary_event(message_id), auth=(self._write_key, ""),
                timeout=min(SEND_TIMEOUT_SECS, max(1.0, state.interval_secs)),
            )  # fmt: skip
        except httpx.HTTPError as exc:
            state.send_error = f"{type(exc).__name__}: {exc}"
            state.send_failures += 1
            return
        if response.status_code != 200:
            state.send_error = f"HTTP {response.status_code}: {response.text[:200]}"
            state.send_failures += 1
            return
        state.send_error = None
        state.send_failures = 0
        state.last_sent_ms = sent_ms
        state.sent_total += 1
        state.pending[message_id] = sent_ms
        while len(state.pending) > self._max_pending:  # forget the oldest missed ones
            state.pending.pop(next(iter(state.pending)))

    async def check_pending(self) -> None:
        for message_id, sent_ms in list(self.state.pending.items()):
            states = await self._states_of(message_id)
            mine = [s for s in states or [] if s.destination == self.state.destination]
            if mine and mine[0].state is EventState.DELIVERED and mine[0].at_ms is not None:
                self.state.pending.pop(message_id, None)
                self.state.last_seen_ms = mine[0].at_ms
                self.state.last_latency_ms = float(mine[0].at_ms - sent_ms)
                self.state.seen_total += 1

    async def _send_loop(self) -> None:
        await asyncio.sleep(FIRST_SEND_AFTER_SECS)  # the server starts listening after start-up
        while True:
            try:
                await self.send_one()
            except Exception:
                logger.exception("the canary could not be sent")
            await asyncio.sleep(self.state.interval_secs)

    async def _watch_loop(self) -> None:
        while True:
            try:
                await self.check_pending()
            except Exception:
                logger.exception("the canary could not be checked")
            await asyncio.sleep(CHECK_EVERY_SECS)
