"""Customer.io v2 entities, all kinds in one ``POST /api/v2/batch`` (``{"batch": [...]}``)."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

from headwater.delivery.http import HttpRequest
from headwater.destinations.customerio.settings import CustomerioSettings
from headwater.destinations.mapped import Mapped, json_body
from headwater.destinations.values import unix_seconds
from headwater.mapping.actions import ActionSpec

PERSON, EVENT, PAGE, SCREEN, OBJECT = (
    "create_update_person",
    "track_event",
    "track_page_view",
    "track_screen_view",
    "create_update_object",
)
BATCH_PATH = "/api/v2/batch"
ENTRY_MAX_BYTES = 32_000
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

PERSON_MAPPING: dict[str, Any] = {
    "id": {"@path": "$.userId"},
    "email": {"@path": "$.traits.email"},
    "created_at": {
        "@if": {
            "exists": {"@path": "$.traits.created_at"},
            "then": {"@path": "$.traits.created_at"},
            "else": {"@path": "$.traits.createdAt"},
        }
    },
    "attributes": {"@path": "$.traits"},
}


def _event_mapping(name: Any) -> dict[str, Any]:
    return {
        "id": {"@path": "$.userId"},
        "anonymous_id": {"@path": "$.anonymousId"},
        "name": name,
        "event_id": {"@path": "$.messageId"},
        "timestamp": {"@path": "$.timestamp"},
        "data": {"@path": "$.properties"},
    }


PAGE_NAME = {
    "@if": {
        "exists": {"@path": "$.context.page.url"},
        "then": {"@path": "$.context.page.url"},
        "else": {"@path": "$.properties.url"},
    }
}
OBJECT_MAPPING: dict[str, Any] = {
    "object_id": {"@path": "$.groupId"},
    "id": {"@path": "$.userId"},
    "anonymous_id": {"@path": "$.anonymousId"},
    "attributes": {"@path": "$.traits"},
}
WHO = "id|anonymous_id"
PRESETS = (
    ActionSpec(PERSON, 'type = "identify"', PERSON_MAPPING, required=("id|email",)),
    ActionSpec(
        EVENT, 'type = "track"', _event_mapping({"@path": "$.event"}), required=("name", WHO)
    ),
    ActionSpec(PAGE, 'type = "page"', _event_mapping(PAGE_NAME), required=("name", WHO)),
    ActionSpec(
        SCREEN, 'type = "screen"', _event_mapping({"@path": "$.name"}), required=("name", WHO)
    ),
    ActionSpec(OBJECT, 'type = "group"', OBJECT_MAPPING, required=("object_id",)),
)


def person(payload: dict[str, Any]) -> dict[str, Any]:
    """Segment's resolution: ``cio_…`` ids, ids that are e-mail addresses, ids, e-mail, and
    last the anonymous id."""
    given = payload.get("id")
    if given is not None:
        text = str(given)
        if text.startswith("cio_"):
            return {"cio_id": text[4:]}
        return {"email": text} if EMAIL.match(text) else {"id": text}
    if payload.get("email") is not None:
        return {"email": payload["email"]}
    return {"anonymous_id": payload.get("anonymous_id")}


def _attributes(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def entity(settings: CustomerioSettings, item: Mapped) -> dict[str, Any]:
    """The v2 entity of one payload."""
    p = item.payload
    if item.kind == PERSON:
        attributes = _attributes(p.get("attributes"))
        if p.get("email") is not None:
            attributes["email"] = p["email"]
        if p.get("created_at") is not None:
            attributes["created_at"] = unix_seconds(p["created_at"])
        return {
            "type": "person",
            "action": "identify",
            "identifiers": person(p),
            "attributes": attributes,
        }
    if item.kind == OBJECT:
        body: dict[str, Any] = {
            "type": "object",
            "action": "identify",
            "identifiers": {
                "object_type_id": settings.object_type_id,
                "object_id": str(p["object_id"]),
            },
            "attributes": _attributes(p.get("attributes")),
        }
        if p.get("id") is not None or p.get("anonymous_id") is not None:
            body["cio_relationships"] = [{"identifiers": person(p)}]
        return body
    action = {EVENT: "event", PAGE: "page", SCREEN: "screen"}[item.kind]
    body = {
        "type": "person",
        "action": action,
        "identifiers": person(p),
        "name": str(p["name"]),
        "attributes": _attributes(p.get("data")),
    }
    if p.get("event_id") is not None:
        body["id"] = str(p["event_id"])  # Customer.io deduplicates events by it
    if p.get("timestamp") is not None:
        body["timestamp"] = unix_seconds(p["timestamp"])
    return body


def checker(settings: CustomerioSettings) -> Any:
    def check(item: Mapped) -> str | None:
        size = len(json_body(entity(settings, item)))
        if size > ENTRY_MAX_BYTES:
            return (
                f"Customer.io takes at most {ENTRY_MAX_BYTES:,} bytes an entry, this one has"
                f" {size:,} (attributes): send fewer traits or properties"
            )
        ts = entity(settings, item).get("timestamp")
        if ts is not None and not isinstance(ts, int | float):
            return f"Customer.io refuses timestamp {ts!r}: not a time (timestamp)"
        return None

    return check


def headers(settings: CustomerioSettings) -> dict[str, str]:
    credentials = f"{settings.site_id}:{settings.api_key.get_secret_value()}".encode()
    return {
        "Authorization": "Basic " + base64.b64encode(credentials).decode(),
        "Content-Type": "application/json",
    }


def encode(settings: CustomerioSettings, items: Sequence[Mapped]) -> HttpRequest:
    body = {"batch": [entity(settings, item) for item in items]}
    return HttpRequest("POST", settings.endpoint + BATCH_PATH, headers(settings), json_body(body))
