"""Mapped payloads -> GA4 Measurement Protocol requests.

A payload (one GA4 event, as a preset or the workspace mapped it) is first made a
:class:`Ga4Event`: its name the GA4 name, its time in microseconds, its user properties
wrapped as GA4 wants them. Events of one user (same ``client_id``, ``user_id`` and user
properties) go in one request, at most 25 of them and under 130 kB.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from headwater.delivery.http import HttpRequest
from headwater.destinations.ga4 import rules
from headwater.destinations.ga4.settings import Ga4Settings
from headwater.destinations.mapped import Mapped, json_body

COLLECT = "/mp/collect"
DEBUG_COLLECT = "/debug/mp/collect"
SECRET_QUERY = frozenset({"api_secret"})

# Segment's spec names -> GA4's recommended events, as Segment's GA4 Cloud presets send them
RENAMED = {
    "Order Completed": "purchase", "Order Refunded": "refund", "Checkout Started": "begin_checkout",
    "Cart Viewed": "view_cart", "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Product Viewed": "view_item", "Product Clicked": "select_item",
    "Product List Viewed": "view_item_list", "Product Added to Wishlist": "add_to_wishlist",
    "Products Searched": "search", "Payment Info Entered": "add_payment_info",
    "Promotion Viewed": "view_promotion", "Promotion Clicked": "select_promotion",
    "Signed Up": "sign_up", "Signed In": "login", "Product Shared": "share",
}  # fmt: skip
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^A-Za-z0-9]+")


def event_name(name: Any) -> Any:
    """GA4's name for a Segment event name: ``Order Completed`` -> ``purchase``,
    ``Video Played`` -> ``video_played``, ``videoPlayed`` -> ``video_played``. Not a
    string: unchanged (the rules refuse it)."""
    if not isinstance(name, str):
        return name
    name = name.strip()
    if name in RENAMED:
        return RENAMED[name]
    snake = _NOT_WORD.sub("_", _CAMEL.sub("_", name)).strip("_").lower()
    return snake or name


def micros(value: Any) -> Any:
    """An ISO 8601 time (or epoch seconds, ms or µs) as epoch microseconds; None if absent;
    unchanged if it is not a time (the rules refuse it)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = float(value.strip())
    elif isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.strip()).timestamp() * 1_000_000)
        except ValueError:
            return value
    else:
        return value
    if number < 1e11:  # seconds
        return int(number * 1_000_000)
    if number < 1e14:  # milliseconds
        return int(number * 1000)
    return int(number)


@dataclass(frozen=True, slots=True)
class Ga4Event:
    """One event ready for GA4, and the key of the request it can share."""

    body: dict[str, Any]  # {name, params, timestamp_micros?}
    client_id: Any
    user_id: Any
    user_properties: dict[str, Any]

    @property
    def key(self) -> bytes:
        return orjson.dumps([self.client_id, self.user_id, self.user_properties])

    def checked(self) -> dict[str, Any]:
        """The payload in the shape the rules check."""
        return {"client_id": self.client_id, "user_id": self.user_id,
                "user_properties": self.user_properties, **self.body}  # fmt: skip


def to_event(payload: Any) -> Ga4Event:
    """A mapped payload as a GA4 event (never raises; the rules judge what comes out)."""
    data = payload if isinstance(payload, dict) else {}
    body: dict[str, Any] = {"name": event_name(data.get("name"))}
    params = data.get("params")
    body["params"] = {} if params is None else params
    stamp = micros(data.get("timestamp"))
    if stamp is not None:
        body["timestamp_micros"] = stamp
    props = data.get("user_properties") or {}
    if isinstance(props, dict):
        props = {k: v if _wrapped(v) else {"value": v} for k, v in props.items()}
    return Ga4Event(body, data.get("client_id"), data.get("user_id"), props)


def _wrapped(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"value"}


def request_body(events: Sequence[Ga4Event]) -> dict[str, Any]:
    first = events[0]
    body: dict[str, Any] = {"client_id": first.client_id}
    if first.user_id is not None:
        body["user_id"] = str(first.user_id)
    if first.user_properties:
        body["user_properties"] = first.user_properties
    body["events"] = [e.body for e in events]
    return body


def url(settings: Ga4Settings, debug: bool = False) -> str:
    query = urlencode({"measurement_id": settings.measurement_id,
                       "api_secret": settings.api_secret.get_secret_value()})  # fmt: skip
    return f"{settings.endpoint}{DEBUG_COLLECT if debug else COLLECT}?{query}"


def encode(settings: Ga4Settings, events: Sequence[Ga4Event], debug: bool = False) -> HttpRequest:
    headers = {"Content-Type": "application/json"}
    body = json_body(request_body(events))
    return HttpRequest("POST", url(settings, debug), headers, body, secret_query=SECRET_QUERY)


def groups(items: Sequence[tuple[Mapped, Ga4Event]]) -> list[list[tuple[Mapped, Ga4Event]]]:
    """The events in requests: one user's events together, in order of first appearance,
    at most 25 a request and under GA4's 130 kB."""
    by_user: dict[bytes, list[tuple[Mapped, Ga4Event]]] = {}
    for item in items:
        by_user.setdefault(item[1].key, []).append(item)
    out: list[list[tuple[Mapped, Ga4Event]]] = []
    for user_items in by_user.values():
        current: list[tuple[Mapped, Ga4Event]] = []
        size = 0
        for item in user_items:
            item_size = len(json_body(item[1].body)) + 1
            full = len(current) >= rules.MAX_EVENTS_PER_REQUEST
            if current and (full or size + item_size > rules.MAX_BODY_BYTES - 2_000):
                out.append(current)
                current, size = [], 0
            current.append(item)
            size += item_size
        out.append(current)
    return out
