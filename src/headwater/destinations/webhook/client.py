"""The ``webhook`` destination."""

from __future__ import annotations

from collections.abc import Sequence

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpRequest
from headwater.destinations.base import HttpDestination
from headwater.destinations.webhook import encoder
from headwater.destinations.webhook.settings import WebhookSettings


class Webhook(HttpDestination[WebhookSettings]):
    """Any HTTP endpoint. One event per request by default; with ``batch_max_events`` above
    1, batches as a JSON array (Segment's Webhooks (Actions) allow up to 4,000)."""

    type = "webhook"
    vendor = "Webhook"
    settings_model = WebhookSettings
    default_batch_events = 1
    max_batch_events = 4000

    def encode(self, events: Sequence[OutboundEvent]) -> HttpRequest:
        return encoder.encode(self.settings, events, batched=self.batched)

    @property
    def batched(self) -> bool:
        return self.batch_events > 1
