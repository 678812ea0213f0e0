"""Events → what the devsink keeps: the event as delivered, and when."""

from __future__ import annotations

from typing import Any

from headwater.delivery.events import OutboundEvent


def entry(event: OutboundEvent, delivered_at_ms: int) -> dict[str, Any]:
    return {
        "messageId": event.message_id,
        "deliveredAtMs": delivered_at_ms,
        "latencyMs": delivered_at_ms - event.received_at_ms,
        "event": event.event,
    }
