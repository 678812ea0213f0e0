"""Intercom requests: ``POST /contacts`` (and the search and update after a conflict), and
``POST /events``; one payload a request (Intercom has no batch endpoint for either)."""

from __future__ import annotations

from typing import Any

from headwater.delivery.http import HttpRequest
from headwater.destinations.intercom.settings import IntercomSettings
from headwater.destinations.mapped import Mapped, json_body
from headwater.destinations.values import unix_seconds
from headwater.mapping.actions import ActionSpec

CONTACT, EVENT = "identify_contact", "track_event"
METADATA_MAX_KEYS = 10

CONTACT_MAPPING: dict[str, Any] = {
    "role": "user",
    "external_id": {"@path": "$.userId"},
    "email": {"@path": "$.traits.email"},
    "phone": {"@path": "$.traits.phone"},
    "name": {"@path": "$.traits.name"},
    "avatar": {"@path": "$.traits.avatar"},
    "signed_up_at": {"@path": "$.traits.created_at"},
    "last_seen_at": {"@path": "$.timestamp"},
}
EVENT_MAPPING: dict[str, Any] = {
    "event_name": {"@path": "$.event"},
    "created_at": {"@path": "$.timestamp"},
    "user_id": {"@path": "$.userId"},
    "email": {"@path": "$.properties.email"},
    "metadata": {"@path": "$.properties"},
    "revenue": {"@path": "$.properties.revenue"},
    "currency": {"@path": "$.properties.currency"},
    "message_id": {"@path": "$.messageId"},
}
PRESETS = (
    ActionSpec(CONTACT, 'type = "identify"', CONTACT_MAPPING, required=("external_id|email",)),
    ActionSpec(
        EVENT,
        'type = "track"',
        EVENT_MAPPING,
        required=("event_name", "created_at", "user_id|email"),
    ),
)
MOVED = ("email", "revenue", "currency")  # properties that are fields, not metadata


def headers(settings: IntercomSettings) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {settings.access_token.get_secret_value()}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Intercom-Version": settings.intercom_version,
    }


def request(settings: IntercomSettings, method: str, path: str, body: Any) -> HttpRequest:
    return HttpRequest(method, settings.endpoint + path, headers(settings), json_body(body))


def contact_body(payload: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in payload.items() if v is not None}
    for field in ("signed_up_at", "last_seen_at"):
        if field in body:
            body[field] = unix_seconds(body[field])
    return body


def event_body(payload: dict[str, Any]) -> dict[str, Any]:
    """Segment's shape: email and revenue are fields of their own, revenue (in cents) and
    currency become ``metadata.price``, and ``message_id`` is kept in the metadata."""
    body = {k: payload[k] for k in ("event_name", "user_id", "email") if payload.get(k) is not None}
    body["created_at"] = unix_seconds(payload["created_at"])
    given = payload.get("metadata")
    metadata = {
        k: v for k, v in (given if isinstance(given, dict) else {}).items() if k not in MOVED
    }
    revenue = payload.get("revenue")
    if isinstance(revenue, int | float) and not isinstance(revenue, bool):
        metadata["price"] = {
            "amount": round(revenue * 100),
            "currency": payload.get("currency") or "USD",
        }
    if payload.get("message_id") is not None:
        metadata["message_id"] = payload["message_id"]
    if metadata:
        body["metadata"] = metadata
    return body


def check(item: Mapped) -> str | None:
    """Refuse locally what Intercom would drop or refuse: more than 10 metadata keys, nested
    objects in metadata, a time that is not a time."""
    if item.kind == CONTACT:
        return None
    body = event_body(item.payload)
    if not isinstance(body["created_at"], int):
        return f"Intercom refuses created_at {body['created_at']!r}: not a time (created_at)"
    metadata = body.get("metadata", {})
    if len(metadata) > METADATA_MAX_KEYS:
        return (
            f"Intercom takes at most {METADATA_MAX_KEYS} metadata keys, this event has"
            f" {len(metadata)} (metadata): map fewer properties to metadata"
        )
    for key, value in metadata.items():
        if isinstance(value, dict | list) and key != "price":
            return (
                f"Intercom refuses nested metadata (metadata.{key}): flatten it or leave"
                " it out of the mapping"
            )
    return None


def encode(settings: IntercomSettings, item: Mapped) -> HttpRequest:
    if item.kind == CONTACT:
        return request(settings, "POST", "/contacts", contact_body(item.payload))
    return request(settings, "POST", "/events", event_body(item.payload))


def search(settings: IntercomSettings, payload: dict[str, Any]) -> HttpRequest:
    """The search for the contact a ``POST /contacts`` conflicted with."""
    field = "external_id" if payload.get("external_id") is not None else "email"
    query = {"field": field, "operator": "=", "value": payload[field]}
    return request(settings, "POST", "/contacts/search", {"query": query})


def update(settings: IntercomSettings, contact_id: str, payload: dict[str, Any]) -> HttpRequest:
    return request(settings, "PUT", f"/contacts/{contact_id}", contact_body(payload))
