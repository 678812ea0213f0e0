"""The ``http`` destination: Segment's "Webhooks (Actions)", any JSON API without code."""

from __future__ import annotations

from collections.abc import Sequence

from headwater.delivery.http import HttpRequest
from headwater.destinations.base import Context
from headwater.destinations.http import encoder
from headwater.destinations.http.settings import HttpSettings
from headwater.destinations.mapped import Mapped, MappedDestination, Outgoing, unique_events
from headwater.mapping.actions import ActionSpec


class Http(MappedDestination[HttpSettings]):
    """One action, ``send``, on every event, with ``settings.mapping`` as the payload; the
    workspace may narrow its trigger or add ``send`` actions with mappings of their own."""

    type = "http"
    vendor = "HTTP"
    settings_model = HttpSettings
    default_batch_events = 100
    max_batch_events = 4000

    def __init__(self, name: str, settings: HttpSettings, context: Context) -> None:
        super().__init__(name, settings, context)
        if not settings.batch:
            self.batch_events = 1  # the engine cuts batches of this size

    @classmethod
    def presets_for(cls, settings: HttpSettings) -> tuple[ActionSpec, ...]:
        return (ActionSpec("send", "all", settings.mapping, source="settings.mapping"),)

    def encode_group(self, kind: str, items: Sequence[Mapped]) -> HttpRequest:
        return encoder.encode(self.settings, items, batched=True)

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        if self.settings.batch:  # one array, whatever action built each payload
            # with one action each event is there once: no need to look for repeats
            events = (tuple(m.event for m in mapped) if len(self.actions) == 1
                      else unique_events(m.event for m in mapped))  # fmt: skip
            return [Outgoing(encoder.encode(self.settings, mapped, batched=True), events)]
        return [
            Outgoing(encoder.encode(self.settings, [m], batched=False), (m.event,)) for m in mapped
        ]
