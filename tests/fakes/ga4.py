"""A fake GA4 Measurement Protocol, answering as Google documents it.

``POST /mp/collect`` answers **204 No Content** to everything, as GA4 does, and sorts what
it got: events GA4 would keep go to :attr:`FakeGa4.accepted` (one readable dict per event,
with the request's client_id / user_id / user_properties), the rest to
:attr:`FakeGa4.dropped` with why (GA4 itself says nothing). An unknown measurement ID or API
secret drops the whole request, silently, as GA4 does.

``POST /debug/mp/collect`` answers 200 ``{"validationMessages": [{fieldPath, description,
validationCode}]}`` for the documented rules, and records nothing (it does not check the
API secret, as GA4's does not).

The checks are written here on their own, from GA4's documentation, not shared with the
destination: the fake is the second opinion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from tests.fakes import FakeDestination, Received, Reply

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
RESERVED_PREFIXES = ("google_", "ga_", "firebase_")
RESERVED_EVENTS = {
    "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward", "adunit_exposure",
    "app_background", "app_clear_data", "app_exception", "app_remove", "app_store_refund",
    "app_update", "app_upgrade", "error", "first_open", "first_visit", "in_app_purchase",
    "notification_dismiss", "notification_foreground", "notification_open",
    "notification_receive", "os_update", "session_start", "session_start_with_rollout",
    "user_engagement",
}  # fmt: skip
LONG_PARAMS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}


@dataclass(frozen=True)
class Message:
    field_path: str
    description: str
    code: str

    def json(self) -> dict[str, str]:
        return {"fieldPath": self.field_path, "description": self.description,
                "validationCode": self.code}  # fmt: skip


def _name_messages(name: Any, where: str, what: str) -> list[Message]:
    if not isinstance(name, str) or not name:
        return [Message(where, f"{what} name is required.", "VALUE_REQUIRED")]
    if not NAME.match(name):
        return [Message(where, f"{what} has invalid name [{name}]. Names must start with an "
                        "alphabetic character and contain only alphanumerics and underscores, "
                        "at most 40 characters.", "NAME_INVALID")]  # fmt: skip
    if name.startswith(RESERVED_PREFIXES):
        return [Message(where, f"{what} has reserved name [{name}].", "NAME_RESERVED")]
    return []


def _value_messages(value: Any, where: str, limit: int) -> list[Message]:
    if value is None or isinstance(value, dict | list):
        return [Message(where, f"Value at [{where}] has an invalid type.", "VALUE_INVALID")]
    if isinstance(value, str) and len(value) > limit:
        return [Message(where, f"Value at [{where}] is longer than {limit}.",
                        "VALUE_OUT_OF_BOUNDS")]  # fmt: skip
    return []


def event_messages(event: Any, i: int) -> list[Message]:
    at = f"events[{i}]"
    if not isinstance(event, dict):
        return [Message(at, f"Event at index: [{i}] is not an object.", "VALUE_INVALID")]
    name = event.get("name")
    out = _name_messages(name, f"{at}.name", f"Event at index: [{i}]")
    if isinstance(name, str) and name in RESERVED_EVENTS:
        out.append(Message(f"{at}.name", f"Event at index: [{i}] has reserved name [{name}].",
                           "NAME_RESERVED"))  # fmt: skip
    params = event.get("params") or {}
    if len(params) > 25:
        out.append(Message(f"{at}.params", "Too many params (max 25).", "EXCEEDED_MAX_ENTITIES"))
    for key, value in params.items():
        where = f"{at}.params.{key}"
        out += _name_messages(key, where, f"Param [{key}]")
        if key == "items":
            if not isinstance(value, list):
                out.append(Message(where, "items must be a list.", "VALUE_INVALID"))
            continue
        out += _value_messages(value, where, LONG_PARAMS.get(key, 100))
    return out


def request_messages(body: Any) -> list[Message]:
    if not isinstance(body, dict):
        return [Message("", "Unable to parse the request body.", "VALUE_INVALID")]
    out = []
    if not isinstance(body.get("client_id"), str) or not body["client_id"]:
        out.append(Message("client_id", "Measurement requires a client_id.", "VALUE_REQUIRED"))
    events = body.get("events")
    if not isinstance(events, list) or not events:
        return [*out, Message("events", "Measurement requires events.", "VALUE_REQUIRED")]
    if len(events) > 25:
        out.append(Message("events", "Too many events (max 25).", "EXCEEDED_MAX_ENTITIES"))
    for key, value in (body.get("user_properties") or {}).items():
        where = f"user_properties.{key}"
        if len(key) > 24:
            out.append(Message(where, "User property name too long (max 24).", "NAME_INVALID"))
        inner = value.get("value") if isinstance(value, dict) else None
        out += _value_messages(inner, where, 36)
    for i, event in enumerate(events):
        out += event_messages(event, i)
    return out


class FakeGa4(FakeDestination):
    """GA4's /mp/collect and /debug/mp/collect on 127.0.0.1."""

    def __init__(self, measurement_id: str = "G-TEST1234", api_secret: str = "ga4-secret") -> None:
        super().__init__(self._answer)
        self.measurement_id = measurement_id
        self.api_secret = api_secret
        self.accepted: list[dict[str, Any]] = []
        self.dropped: list[tuple[Any, str]] = []
        self.debug_requests = 0

    def _answer(self, request: Received, _index: int) -> Reply:
        if request.method != "POST" or request.path not in ("/mp/collect", "/debug/mp/collect"):
            return Reply(404, b"")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        if request.path == "/debug/mp/collect":
            self.debug_requests += 1
            messages = [m.json() for m in request_messages(body)]
            return Reply(200, orjson.dumps({"validationMessages": messages}))
        self._collect(request, body)
        return Reply(204, b"")

    def _collect(self, request: Received, body: Any) -> None:
        query = request.query
        if query.get("measurement_id") != self.measurement_id:
            self.dropped.append((body, "unknown measurement_id"))
            return
        if query.get("api_secret") != self.api_secret:
            self.dropped.append((body, "unknown api_secret"))
            return
        problems = request_messages(body)
        whole = [p for p in problems if not p.field_path.startswith("events[")]
        if whole or not isinstance(body, dict):
            self.dropped.append((body, "; ".join(p.description for p in whole)))
            return
        for i, event in enumerate(body["events"]):
            mine = [p for p in problems if p.field_path.startswith(f"events[{i}]")]
            if mine:
                self.dropped.append((event, mine[0].description))
                continue
            self.accepted.append({
                "client_id": body["client_id"], "user_id": body.get("user_id"),
                "user_properties": body.get("user_properties", {}), **event,
            })  # fmt: skip
