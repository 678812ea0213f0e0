"""Helpers for the destination suites: events, a fake server, destinations wired to it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpClient
from headwater.destinations import TYPES
from headwater.destinations.base import Context, Destination


def outbound(offset: int = 1, **fields: Any) -> OutboundEvent:
    """A normalised event as the log holds it, on its way to a destination."""
    message_id = fields.pop("messageId", None) or f"msg-{uuid.uuid4()}"
    received_ms = int(time.time() * 1000) - 5
    body = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": message_id,
            "timestamp": "2024-05-01T10:00:00.000Z", "sentAt": "2024-05-01T10:00:00.050Z",
            "receivedAt": "2024-05-01T10:00:00.100Z",
            "properties": {"revenue": 9.99, "offset": offset}, "context": {"library": {"name": "t"}},
            "integrations": {}, **fields}  # fmt: skip
    return OutboundEvent(offset, message_id, received_ms, orjson.dumps(body))


def outbounds(count: int, **fields: Any) -> list[OutboundEvent]:
    return [outbound(i + 1, **fields) for i in range(count)]


def build(
    type_: str,
    settings: dict[str, Any],
    http: HttpClient,
    *,
    batch_events: int = 1,
    timeout_secs: float = 5.0,
    name: str = "dest",
) -> Destination[Any]:
    """A destination the way the engine builds one, from settings as the workspace has them."""
    kind = TYPES[type_]
    return kind(name, kind.settings_model.model_validate(settings), Context(http, timeout_secs, batch_events))  # fmt: skip
