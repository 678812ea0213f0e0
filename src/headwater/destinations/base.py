"""What a destination is: typed settings, an encoder, a client, a classification of answers.

Every destination lives in a folder of its own (``destinations/<type>/``) with the same file
names: ``settings.py`` (the settings model; field docstrings are the docs), ``encoder.py``
(events → request) and ``client.py`` (the :class:`Destination` class: send one request and
classify the answer). Batching, rate limits, concurrency, retries, the circuit breaker and
the dead letter store are the delivery engine's (:mod:`headwater.delivery`), never a
destination's. ``tests/destinations/test_compliance.py`` runs against every destination.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import (
    HttpClient,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    classify,
    exchange,
)
from headwater.delivery.outcomes import Attempt, Outcome
from headwater.mapping.actions import ActionConfig


class DestinationSettings(BaseModel):
    """Base of every destination's settings model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=DestinationSettings)
SettingsModel = type[DestinationSettings]


@dataclass(frozen=True, slots=True)
class Context:
    """What the engine gives each destination."""

    http: HttpClient
    timeout_secs: float
    batch_events: int = 1  # events per request, decided by the workspace within the limits
    actions: tuple[ActionConfig, ...] | None = None  # the workspace's, for mapped destinations


class Destination(ABC, Generic[S]):
    """One configured destination. Subclasses set ``type`` and ``settings_model``."""

    type: ClassVar[str]
    settings_model: ClassVar[SettingsModel]
    vendor: ClassVar[str] = ""
    """The vendor's display name in reasons and diagnoses ("Amplitude"); empty: ``type``."""
    key_settings: ClassVar[tuple[str, ...]] = ()
    """The settings a rejected credential (401, 403, an invalid key) points at, so diagnose
    can say which one to rotate."""
    default_batch_events: ClassVar[int] = 1
    """Events per request unless the workspace says otherwise (1: no batching)."""
    max_batch_events: ClassVar[int] = 1
    """The most events the destination takes in one request."""
    default_batch_bytes: ClassVar[int] = 500_000

    def __init__(self, name: str, settings: S, context: Context) -> None:
        self.name = name
        self.settings = settings
        self.context = context
        self.batch_events = context.batch_events

    @abstractmethod
    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        """Send ``events`` (one request's worth) and say how it went. Never raises for a
        failure of the destination: that is an outcome."""

    async def close(self) -> None:  # most destinations hold nothing
        """Release what the destination holds."""

    def test_request(self, events: Sequence[OutboundEvent]) -> tuple[HttpRequest, ...] | None:
        """The requests to the vendor's validation endpoint for ``events`` (GA4's
        ``/debug/mp/collect``), which a test sends by default instead of delivering them;
        None (the default): the vendor has none, and a test only shows what it would send
        unless asked to send (:mod:`headwater.delivery.tester`)."""
        return None

    def read_test_answer(self, response: HttpResponse) -> list[str]:
        """The vendor's messages about the events in a validation endpoint's answer (e.g.
        GA4's ``validationMessages``), shown by a test; none by default."""
        return []


class HttpDestination(Destination[S]):
    """A destination reached with one HTTP request per batch."""

    @abstractmethod
    def encode(self, events: Sequence[OutboundEvent]) -> HttpRequest:
        """The request that carries ``events``."""

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        """Override to read a destination's own error format; the default is Segment's."""
        return classify(result)

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        request = self.encode(events)
        started = time.perf_counter()
        result = await self.context.http.send(request, self.context.timeout_secs)
        duration_ms = (time.perf_counter() - started) * 1000
        return Attempt(self.classify(result), lambda: exchange(request, result), duration_ms)
