"""Events → a Segment ``/v1/batch`` request.

Each event keeps its ``messageId`` (so the receiver deduplicates retries), its properties,
traits, context and integrations. Its ``timestamp`` is the one Headwater computed; the
per-event ``sentAt`` is left out, so the receiver keeps that timestamp as it is instead of
correcting it again for a clock skew it already had corrected (the receiver sets its own
``receivedAt``, and its ``originalTimestamp`` becomes this ``timestamp``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import orjson

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpRequest
from headwater.destinations.segment.settings import SegmentSettings


def item(event: OutboundEvent) -> bytes:
    if b'"sentAt"' not in event.payload:
        return event.payload
    body = dict(event.event)
    body.pop("sentAt", None)
    return orjson.dumps(body)


def encode(settings: SegmentSettings, events: Sequence[OutboundEvent]) -> HttpRequest:
    payload = b'{"batch":[' + b",".join(item(e) for e in events) + b"]}"
    token = base64.b64encode(settings.write_key.get_secret_value().encode() + b":").decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {token}"}
    return HttpRequest("POST", f"{settings.url}/v1/batch", headers, payload)
