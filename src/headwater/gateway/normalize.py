"""Turn one incoming Segment message into the normalised event the log stores.

What changes (SEGMENT_FACTS.md, "The Spec"):
- ``type`` comes from the path for single calls; in a batch each item names its own.
- batch-level ``context`` and ``integrations`` are merged into each item (the item wins).
- ``messageId`` is assigned when missing; ``receivedAt`` is the server's clock.
- clock skew: ``timestamp = receivedAt − (sentAt − originalTimestamp)``; the client's
  ``timestamp`` is kept as ``originalTimestamp``; without a client timestamp the server's
  time is used.
- ``context.ip`` is set from the connection unless the sender gave one.
- ``writeKey`` is removed: events never carry credentials downstream.

Refusals raise :class:`ItemError` with a code and a message that says what to fix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from headwater.log.base import Record

MAX_EVENT_BYTES = 32 * 1024
EVENT_BYTES_ALLOWANCE = 1024  # room for the fields Headwater adds (receivedAt, ip, ...)
MAX_MESSAGE_ID_CHARS = 100
TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})


class ItemError(Exception):
    """One event refused; the rest of its batch goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Envelope:
    """What one request contributes to each of its events."""

    source: str
    received_at: datetime
    received_iso: str
    received_ms: int
    ip: str | None
    sent_at: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


def iso(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix — the form Segment's API emits."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise ItemError("invalid_timestamp", f"{field} must be an ISO-8601 string, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ItemError(
            "invalid_timestamp",
            f"{field} {value[:40]!r} is not an ISO-8601 time; send e.g. '2026-11-26T12:00:00.000Z'",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _identity(value: object, field: str) -> str | None:
    """A user or anonymous id: non-empty string (numbers are accepted and turned to text)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ItemError("invalid_field", f"{field} must be a string, got {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def _require_text(event: dict[str, Any], field: str, typ: str) -> None:
    value = event.get(field)
    if value is None or value == "":
        raise ItemError("missing_field", f"a {typ} call needs '{field}'; add it and send again")
    if not isinstance(value, str):
        value = _identity(value, field)
        event[field] = value


def _merged(outer: dict[str, Any] | None, inner: object, field: str) -> dict[str, Any] | None:
    if inner is not None and not isinstance(inner, dict):
        raise ItemError("invalid_field", f"{field} must be an object, got {type(inner).__name__}")
    if not outer:
        return inner
    if not inner:
        return dict(outer)
    return {**outer, **inner}


def normalize(item: object, typ: str | None, env: Envelope) -> Record:
    """Validate and normalise one message; ``typ`` is the path's type, None inside a batch."""
    if not isinstance(item, dict):
        raise ItemError("invalid_event", "each event must be a JSON object")
    event: dict[str, Any] = item
    if typ is None:
        typ = event.get("type")
        if typ not in TYPES:
            raise ItemError(
                "invalid_type",
                f"type {typ!r} is not one of track, identify, page, screen, group, alias",
            )
    else:
        event["type"] = typ
    event.pop("writeKey", None)

    user_id = _identity(event.get("userId"), "userId")
    anonymous_id = _identity(event.get("anonymousId"), "anonymousId")
    if user_id is not None:
        event["userId"] = user_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    if typ == "alias":
        if user_id is None:
            raise ItemError("missing_field", "an alias call needs 'userId' (the new id)")
        _require_text(event, "previousId", typ)
    elif user_id is None and anonymous_id is None:
        raise ItemError(
            "missing_identity", "every event needs 'userId' or 'anonymousId'; set at least one"
        )
    if typ == "track":
        _require_text(event, "event", typ)
    elif typ == "group":
        _require_text(event, "groupId", typ)

    message_id = event.get("messageId")
    if message_id is None or message_id == "":
        message_id = str(uuid.uuid4())
        event["messageId"] = message_id
    elif not isinstance(message_id, str):
        message_id = _identity(message_id, "messageId") or ""
        event["messageId"] = message_id
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise ItemError(
            "invalid_field", f"messageId is {len(message_id)} characters; the limit is 100"
        )

    context = _merged(env.context, event.get("context"), "context")
    integrations = _merged(env.integrations, event.get("integrations"), "integrations")
    if env.ip is not None and (context is None or "ip" not in context):
        context = {**context, "ip": env.ip} if context else {"ip": env.ip}
    if context is not None:
        event["context"] = context
    if integrations is not None:
        event["integrations"] = integrations
    for field in ("properties", "traits"):
        value = event.get(field)
        if value is not None and not isinstance(value, dict):
            raise ItemError("invalid_field", f"{field} must be an object")

    _correct_clock(event, env)
    payload = orjson.dumps(event)
    if len(payload) > MAX_EVENT_BYTES + EVENT_BYTES_ALLOWANCE:
        raise ItemError(
            "event_too_large",
            f"the event is {len(payload)} bytes; the limit is 32 KB per event — trim its "
            "properties or traits",
        )
    return Record(message_id, env.source, typ, env.received_ms, payload)


def _correct_clock(event: dict[str, Any], env: Envelope) -> None:
    event["receivedAt"] = env.received_iso
    client_ts = event.get("timestamp")
    sent_raw = event.get("sentAt", env.sent_at)
    if client_ts is None:
        event["timestamp"] = env.received_iso
        if sent_raw is not None:
            event["sentAt"] = iso(parse_time(sent_raw, "sentAt"))
        return
    original = parse_time(client_ts, "timestamp")
    event["originalTimestamp"] = client_ts
    if sent_raw is None:
        event["timestamp"] = iso(original)
        return
    sent = parse_time(sent_raw, "sentAt")
    event["sentAt"] = iso(sent)
    skew: timedelta = sent - original
    event["timestamp"] = iso(env.received_at - skew)
