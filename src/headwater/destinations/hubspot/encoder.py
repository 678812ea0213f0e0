"""HubSpot requests: contacts upserted by email (``/crm/v3/objects/contacts/batch/upsert``,
100 a request) and custom behavioral events (``/events/v3/send/batch``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from headwater.delivery.http import HttpRequest
from headwater.destinations.hubspot.settings import EVENT_NAME, HubspotSettings
from headwater.destinations.mapped import Mapped, json_body
from headwater.mapping.actions import ActionSpec

CONTACT, EVENT = "upsert_contact", "send_custom_behavioral_event"
CONTACTS_PATH = "/crm/v3/objects/contacts/batch/upsert"
EVENTS_PATH = "/events/v3/send/batch"


def _either(*paths: str) -> Any:
    first, *rest = paths
    if not rest:
        return {"@path": first}
    return {"@if": {"exists": {"@path": first}, "then": {"@path": first}, "else": _either(*rest)}}


CONTACT_MAPPING: dict[str, Any] = {
    "email": {"@path": "$.traits.email"},
    "properties": {
        "company": {"@path": "$.traits.company"},
        "firstname": _either("$.traits.first_name", "$.traits.firstName"),
        "lastname": _either("$.traits.last_name", "$.traits.lastName"),
        "phone": {"@path": "$.traits.phone"},
        "address": {"@path": "$.traits.address.street"},
        "city": {"@path": "$.traits.address.city"},
        "state": {"@path": "$.traits.address.state"},
        "country": {"@path": "$.traits.address.country"},
        "zip": _either("$.traits.address.postal_code", "$.traits.address.postalCode"),
        "website": {"@path": "$.traits.website"},
        "lifecyclestage": {
            "@case": {"operator": "lower", "value": {"@path": "$.traits.lifecycle_stage"}}
        },
    },
}
EVENT_MAPPING: dict[str, Any] = {
    "eventName": {"@path": "$.event"},
    "email": _either("$.properties.email", "$.context.traits.email", "$.traits.email"),
    "objectId": {"@path": "$.properties.hubspot_object_id"},
    "utk": {"@path": "$.context.traits.hubspotutk"},
    "occurredAt": {"@path": "$.timestamp"},
    "properties": {"@flatten": {"value": {"@path": "$.properties"}, "separator": "_"}},
    "uuid": {"@path": "$.messageId"},
}
PRESETS = (
    ActionSpec(CONTACT, 'type = "identify"', CONTACT_MAPPING, required=("email",)),
    ActionSpec(
        EVENT, 'type = "track"', EVENT_MAPPING, required=("eventName", "email|utk|objectId")
    ),
)


def snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def event_name(settings: HubspotSettings, name: Any) -> str | None:
    """The fully qualified name for a Segment event name: ``event_names``, else from
    ``hub_id``, else the name itself if it is one already."""
    text = str(name)
    if text in settings.event_names:
        return settings.event_names[text]
    if EVENT_NAME.match(text):
        return text
    if settings.hub_id is not None and snake(text):
        return f"pe{settings.hub_id}_{snake(text)}"
    return None


def event_input(settings: HubspotSettings, payload: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in payload.items() if v is not None}
    body["eventName"] = event_name(settings, payload["eventName"])
    if "uuid" in body:
        body["uuid"] = dedupe_uuid(body["uuid"])
    if isinstance(body.get("email"), str):
        body["email"] = body["email"].strip()
    return body


MESSAGE_IDS = uuid.UUID("6f1d0e4a-4b8e-5c53-9d0e-6865616477a1")  # Headwater's namespace


def dedupe_uuid(message_id: Any) -> str:
    """HubSpot's ``uuid`` (it deduplicates occurrences by it) for a messageId: the messageId
    itself when it is a UUID (the SDKs make them so), else a UUID derived from it, the same
    every time, so a resent event still deduplicates."""
    text = str(message_id)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return str(uuid.uuid5(MESSAGE_IDS, text))


def contact_input(payload: dict[str, Any]) -> dict[str, Any]:
    email = str(payload["email"]).strip()
    given = payload.get("properties")
    properties = {
        k: v for k, v in (given if isinstance(given, dict) else {}).items() if v is not None
    }
    return {"idProperty": "email", "id": email, "properties": {**properties, "email": email}}


def checker(settings: HubspotSettings) -> Any:
    def check(item: Mapped) -> str | None:
        if item.kind != EVENT:
            return None
        name = item.payload["eventName"]
        if event_name(settings, name) is None:
            return (
                f"HubSpot needs the fully qualified name of event {name!r} (eventName): add it"
                " to settings.event_names (e.g. pe1234567_order_completed) or set hub_id"
            )
        return None

    return check


def headers(settings: HubspotSettings) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {settings.access_token.get_secret_value()}",
        "Content-Type": "application/json",
    }


def contacts(settings: HubspotSettings, items: Sequence[Mapped]) -> tuple[HttpRequest, list[str]]:
    """One upsert of ``items``; the same email twice is one input (the later traits win).
    Also the emails, in the order of the inputs."""
    merged: dict[str, dict[str, Any]] = {}
    for item in items:
        one = contact_input(item.payload)
        key = one["id"].lower()
        if key in merged:
            merged[key]["properties"].update(one["properties"])
        else:
            merged[key] = one
    body = {"inputs": list(merged.values())}
    request = HttpRequest(
        "POST", settings.endpoint + CONTACTS_PATH, headers(settings), json_body(body)
    )
    return request, list(merged)


def events(settings: HubspotSettings, items: Sequence[Mapped]) -> HttpRequest:
    body = {"inputs": [event_input(settings, item.payload) for item in items]}
    return HttpRequest("POST", settings.endpoint + EVENTS_PATH, headers(settings), json_body(body))
