"""Mapped payloads -> requests: one payload as JSON, or a batch as a JSON array."""

from __future__ import annotations

from collections.abc import Sequence

from headwater.delivery.http import HttpRequest
from headwater.destinations.http.settings import HttpSettings
from headwater.destinations.mapped import Mapped, json_body
from headwater.destinations.webhook.encoder import signature


def body(items: Sequence[Mapped], batched: bool) -> bytes:
    if batched:
        return json_body([item.payload for item in items])
    if len(items) != 1:  # sending the first alone would report the others delivered
        raise ValueError(f"an unbatched http destination sends 1 payload, not {len(items)}")
    return json_body(items[0].payload)


def encode(settings: HttpSettings, items: Sequence[Mapped], batched: bool) -> HttpRequest:
    payload = body(items, batched)
    headers = {**settings.headers, "Content-Type": "application/json"}
    if settings.shared_secret is not None:
        headers["X-Signature"] = signature(settings.shared_secret.get_secret_value(), payload)
    secret = frozenset(k.lower() for k in settings.headers)  # user headers often carry tokens
    return HttpRequest(settings.method, settings.url, headers, payload, secret)
