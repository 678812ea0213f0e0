"""The ``segment`` destination."""

from __future__ import annotations

from collections.abc import Sequence

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpRequest
from headwater.destinations.base import HttpDestination
from headwater.destinations.segment import encoder
from headwater.destinations.segment.settings import SegmentSettings


class Segment(HttpDestination[SegmentSettings]):
    """Tee into Segment, RudderStack or another Headwater through ``/v1/batch``."""

    type = "segment"
    vendor = "Segment"
    key_settings = ("write_key",)
    settings_model = SegmentSettings
    default_batch_events = 100
    max_batch_events = 2500  # Segment's limit per batch request
    default_batch_bytes = 450_000  # under Segment's 500 KB per batch request

    def encode(self, events: Sequence[OutboundEvent]) -> HttpRequest:
        return encoder.encode(self.settings, events)
