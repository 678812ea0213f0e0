"""Mapped payloads -> Mixpanel requests.

- events (``import``): ``POST /import?strict=1`` (``&project_id=`` with a service account),
  a JSON array of ``{"event", "properties"}``, HTTP Basic auth; at most 2,000 events and
  10 MB (uncompressed) a request;
- profiles (``engage``): ``POST /engage?verbose=1``, form ``data=[{$token, $distinct_id,
  $ip, $set}]``;
- groups (``groups``): ``POST /groups?verbose=1``, form ``data=[{$token, $group_key,
  $group_id, $set}]``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

from headwater.delivery.http import HttpRequest
from headwater.destinations.mapped import Mapped, json_body, runs_within
from headwater.destinations.mixpanel.settings import MixpanelSettings
from headwater.destinations.values import epoch_ms

MAX_RECORDS = 2000
MAX_BYTES = 10_000_000
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
RESERVED = frozenset({"time", "id", "$anon_id", "distinct_id", "$group_id", "$insert_id",
                      "$user_id", "token"})  # fmt: skip
TRAITS = {"email": "$email", "firstName": "$first_name", "first_name": "$first_name",
          "lastName": "$last_name", "last_name": "$last_name", "name": "$name",
          "phone": "$phone", "username": "$username", "avatar": "$avatar",
          "created": "$created", "createdAt": "$created", "created_at": "$created"}  # fmt: skip


def insert_id(message_id: str) -> str:
    """``message_id`` if Mixpanel takes it as ``$insert_id`` (≤ 36 of ``[A-Za-z0-9-]``),
    else a stable stand-in: the first 32 hex digits of its SHA-256."""
    if INSERT_ID.fullmatch(message_id):
        return message_id
    return hashlib.sha256(message_id.encode()).hexdigest()[:32]


def finish_event(payload: dict[str, Any]) -> dict[str, Any] | str:
    """The ``{"event", "properties"}`` record for a payload, or why it cannot be sent."""
    ms = epoch_ms(payload.get("time"))
    if ms is None:
        return f"time {payload.get('time')!r} is not an ISO-8601 time or epoch milliseconds"
    own = payload.get("properties")
    properties = (
        {k: v for k, v in own.items() if k not in RESERVED} if isinstance(own, dict) else {}
    )
    properties.update((k, v) for k, v in payload.items() if k not in ("event", "properties"))
    properties["time"] = ms
    given = str(payload["$insert_id"])
    properties["$insert_id"] = insert_id(given)
    if properties["$insert_id"] != given:
        properties["message_id"] = given  # still traceable by messageId in Mixpanel
    return {"event": payload["event"], "properties": properties}


def import_request(settings: MixpanelSettings, items: Sequence[Mapped]) -> HttpRequest:
    query: dict[str, str] = {"strict": "1"}
    if settings.service_account_username is not None and settings.project_id:
        query["project_id"] = settings.project_id
    user, password = settings.import_credential()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "Authorization": f"Basic {token}"}  # fmt: skip
    url = f"{settings.endpoint}/import?{urlencode(query)}"
    body = json_body([i.payload for i in items])
    return HttpRequest("POST", url, headers, body, secret_values=settings.secrets())


def _profile(settings: MixpanelSettings, payload: dict[str, Any]) -> dict[str, Any]:
    update = {"$token": settings.project_token.get_secret_value(), **payload}
    traits = payload.get("$set")
    if isinstance(traits, dict):
        update["$set"] = {TRAITS.get(k, k): v for k, v in traits.items()}
    return update


def _form(settings: MixpanelSettings, path: str, updates: list[dict[str, Any]]) -> HttpRequest:
    body = urlencode({"data": json_body(updates).decode()}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    url = f"{settings.endpoint}{path}?verbose=1"
    return HttpRequest("POST", url, headers, body, secret_values=settings.secrets())


def engage_request(settings: MixpanelSettings, items: Sequence[Mapped]) -> HttpRequest:
    updates = []
    for item in items:
        update = _profile(settings, item.payload)
        update.setdefault("$ip", "0")  # else Mixpanel locates the user at Headwater's address
        updates.append(update)
    return _form(settings, "/engage", updates)


def groups_request(settings: MixpanelSettings, items: Sequence[Mapped]) -> HttpRequest:
    return _form(settings, "/groups", [_profile(settings, i.payload) for i in items])


def chunks(items: Sequence[Mapped]) -> Iterator[list[Mapped]]:
    """Runs of at most MAX_RECORDS whose JSON fits in MAX_BYTES."""
    return runs_within(items, MAX_RECORDS, MAX_BYTES, 2)  # 2: the array's brackets
