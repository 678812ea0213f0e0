"""Events → webhook requests: the event's JSON as it is, or a JSON array for a batch."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpRequest
from headwater.destinations.webhook.settings import WebhookSettings


def body(events: Sequence[OutboundEvent], batched: bool) -> bytes:
    """One event's JSON unchanged (no re-encoding); a batch as ``[event, event, ...]``."""
    if not batched:
        if len(events) != 1:  # sending the first alone would report the others delivered
            raise ValueError(f"an unbatched webhook sends 1 event per request, not {len(events)}")
        return events[0].payload
    return b"[" + b",".join(e.payload for e in events) + b"]"


def signature(secret: str, payload: bytes) -> str:
    """Segment's webhook signature: hex HMAC-SHA1 of the body."""
    return hmac.new(secret.encode(), payload, hashlib.sha1).hexdigest()


def encode(
    settings: WebhookSettings, events: Sequence[OutboundEvent], batched: bool
) -> HttpRequest:
    payload = body(events, batched)
    headers = {**settings.headers, "Content-Type": "application/json"}
    if settings.shared_secret is not None:
        headers["X-Signature"] = signature(settings.shared_secret.get_secret_value(), payload)
    secret = frozenset(k.lower() for k in settings.headers)  # user headers often carry tokens
    return HttpRequest(settings.method, settings.url, headers, payload, secret)
