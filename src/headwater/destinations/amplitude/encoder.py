"""Mapped payloads -> Amplitude requests.

- events (``log_event``): ``POST /2/httpapi`` (or ``/batch``), JSON
  ``{"api_key", "events": [...], "options"?}``, at most 2,000 events and 1 MB (20 MB for
  ``/batch``) a request;
- identifies: ``POST /identify``, form ``api_key=…&identification=[…]``;
- groups: the same ``/identify`` call setting ``groups: {type: value}`` on the user, then
  ``POST /groupidentify``, form ``api_key=…&identification=[{group_type, group_value,
  group_properties}]``.

The API key travels in the body (Amplitude takes no auth header): every request names it in
``secret_values`` so the ledger keeps it redacted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

from headwater.delivery.http import HttpRequest
from headwater.destinations.amplitude.settings import AmplitudeSettings
from headwater.destinations.mapped import Mapped, json_body, runs_within
from headwater.destinations.values import epoch_ms

MAX_EVENTS = 2000
MAX_BYTES = 1_000_000  # HTTP V2; answered 413 beyond
MAX_BATCH_BYTES = 20_000_000  # Batch API
PLATFORMS = {"ios": "iOS", "android": "Android"}
USER_FIELDS = ("user_id", "device_id")


def events_url(settings: AmplitudeSettings) -> str:
    return settings.endpoint + ("/batch" if settings.use_batch_endpoint else "/2/httpapi")


def max_bytes(settings: AmplitudeSettings) -> int:
    return MAX_BATCH_BYTES if settings.use_batch_endpoint else MAX_BYTES


def _secret(settings: AmplitudeSettings) -> frozenset[str]:
    return frozenset({settings.api_key.get_secret_value()})


def events_request(settings: AmplitudeSettings, items: Sequence[Mapped]) -> HttpRequest:
    body: dict[str, Any] = {
        "api_key": settings.api_key.get_secret_value(),
        "events": [i.payload for i in items],
    }
    if settings.min_id_length is not None:
        body["options"] = {"min_id_length": settings.min_id_length}
    headers = {"Content-Type": "application/json", "Accept": "*/*"}
    return HttpRequest(
        "POST", events_url(settings), headers, json_body(body), secret_values=_secret(settings)
    )


def _form(settings: AmplitudeSettings, path: str, identification: list[Any]) -> HttpRequest:
    fields = {
        "api_key": settings.api_key.get_secret_value(),
        "identification": json_body(identification).decode(),
    }
    if settings.min_id_length is not None:
        fields["options"] = json_body({"min_id_length": settings.min_id_length}).decode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    body = urlencode(fields).encode()
    return HttpRequest(
        "POST", settings.endpoint + path, headers, body, secret_values=_secret(settings)
    )


def identify_request(settings: AmplitudeSettings, items: Sequence[Mapped]) -> HttpRequest:
    return _form(settings, "/identify", [i.payload for i in items])


def associate_request(settings: AmplitudeSettings, items: Sequence[Mapped]) -> HttpRequest:
    """The identify call that puts each user in its group (``groups: {type: value}``)."""
    users = []
    for item in items:
        p = item.payload
        user = {k: p[k] for k in USER_FIELDS if p.get(k) is not None}
        users.append({**user, "groups": {str(p["group_type"]): p["group_value"]}})
    return _form(settings, "/identify", users)


def group_request(settings: AmplitudeSettings, items: Sequence[Mapped]) -> HttpRequest:
    groups = []
    for item in items:
        p = item.payload
        group = {"group_type": p["group_type"], "group_value": p["group_value"]}
        if isinstance(p.get("group_properties"), dict):
            group["group_properties"] = p["group_properties"]
        groups.append(group)
    return _form(settings, "/groupidentify", groups)


def chunks(items: Sequence[Mapped], limit_bytes: int) -> Iterator[list[Mapped]]:
    """The items in runs of at most MAX_EVENTS whose payloads fit in ``limit_bytes`` (an
    item larger than that alone still goes alone: Amplitude's 413 then refuses it)."""
    return runs_within(items, MAX_EVENTS, limit_bytes, 200)  # 200: api_key, options


def finish_event(payload: dict[str, Any]) -> dict[str, Any] | str:
    """An event payload as Amplitude wants its values (times in integer epoch ms, platform
    names), or why it cannot be sent."""
    out = dict(payload)
    for name in ("time", "session_id"):
        if name in out and out[name] is not None:
            ms = epoch_ms(out[name])
            if ms is None:
                return f"{name} {out[name]!r} is not an ISO-8601 time or epoch milliseconds"
            out[name] = ms
    platform = out.get("platform")
    if isinstance(platform, str):
        out["platform"] = PLATFORMS.get(platform.lower(), platform)
    elif platform is None and out.get("library") == "analytics.js":
        out["platform"] = "Web"
    return out
