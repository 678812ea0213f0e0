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

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
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
    received_ms: int
    received_iso: str
    ip: str | None
    sent_at_ms: int | None = None  # the batch's sentAt, parsed once per request
    sent_at_iso: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


_SECOND_PREFIXES: dict[int, str] = {}
MIN_MS = -30_610_224_000_000  # 1000-01-01: four-digit years keep ISO-8601 sortable
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def iso_ms(epoch_ms: int) -> str:
    """UTC, millisecond precision, ``Z`` suffix — the form Segment's API emits.

    Formatting dominates normalisation, so the part up to the second is cached: the events
    of a busy minute share a few dozen prefixes.
    """
    seconds, millis = divmod(epoch_ms, 1000)
    prefix = _SECOND_PREFIXES.get(seconds)
    if prefix is None:
        if len(_SECOND_PREFIXES) > 4096:
            _SECOND_PREFIXES.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _SECOND_PREFIXES[seconds] = prefix
    return f"{prefix}.{millis:03d}Z"


_PARSED_SECONDS: dict[str, int] = {}


def new_message_id() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives, at a quarter the cost."""
    h = os.urandom(16).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def parse_ms(value: object, field: str) -> int:
    """An ISO-8601 time (``Z`` or an offset; naive means UTC) as epoch milliseconds.

    SDKs send ``2026-11-26T12:00:00.123Z``; that shape is parsed with a cache of the part up
    to the second (a batch's events share a few), anything else by ``fromisoformat``.
    """
    if isinstance(value, str) and len(value) == 24 and value[19] == "." and value[23] == "Z":
        millis = value[20:23]
        if millis.isdigit():
            prefix = value[:19]
            seconds = _PARSED_SECONDS.get(prefix)
            if seconds is None:
                seconds = _parse_slow(value, field) // 1000
                if len(_PARSED_SECONDS) > 4096:
                    _PARSED_SECONDS.clear()
                _PARSED_SECONDS[prefix] = seconds
            return seconds * 1000 + int(millis)
    return _parse_slow(value, field)


def _parse_slow(value: object, field: str) -> int:
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
    return _in_range(round(moment.timestamp() * 1000), f"{field} {value[:40]!r}")


def _in_range(epoch_ms: int, what: str) -> int:
    if not MIN_MS <= epoch_ms <= MAX_MS:
        raise ItemError(
            "invalid_timestamp", f"{what} is outside the years 1000-9999; send a real time"
        )
    return epoch_ms


def _identity(value: object, field: str) -> str | None:
    """A user or anonymous id: non-empty text (numbers are accepted and turned to text)."""
    if value is None or value == "":
        return None
    if value.__class__ is str:
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ItemError("invalid_field", f"{field} must be a string, got {type(value).__name__}")
    return str(value)


def _require_text(event: dict[str, Any], field: str, typ: str) -> None:
    value = event.get(field)
    if value.__class__ is str and value:
        return
    text = _identity(value, field)
    if text is None:
        raise ItemError("missing_field", f"a {typ} call needs '{field}'; add it and send again")
    event[field] = text


def _object(event: dict[str, Any], field: str) -> dict[str, Any] | None:
    value = event.get(field)
    if value is None or value.__class__ is dict:
        return value
    raise ItemError("invalid_field", f"{field} must be an object, got {type(value).__name__}")


def normalize(item: object, typ: str | None, env: Envelope) -> Record:
    """Validate and normalise one message; ``typ`` is the path's type, None inside a batch."""
    return to_record(normalize_event(item, typ, env), env.source, env.received_ms)


def normalize_event(item: object, typ: str | None, env: Envelope) -> dict[str, Any]:
    """Validate and normalise one message in place, as a dict (the processor's input)."""
    if item.__class__ is not dict:
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

    user_id = event.get("userId")
    if user_id is not None and user_id.__class__ is not str:
        user_id = event["userId"] = _identity(user_id, "userId")
    anonymous_id = event.get("anonymousId")
    if anonymous_id is not None and anonymous_id.__class__ is not str:
        anonymous_id = event["anonymousId"] = _identity(anonymous_id, "anonymousId")
    if typ == "track":
        _require_text(event, "event", typ)
    elif typ == "group":
        _require_text(event, "groupId", typ)
    if typ == "alias":
        if not user_id:
            raise ItemError("missing_field", "an alias call needs 'userId' (the new id)")
        _require_text(event, "previousId", typ)
    elif not user_id and not anonymous_id:
        raise ItemError(
            "missing_identity", "every event needs 'userId' or 'anonymousId'; set at least one"
        )

    message_id = event.get("messageId")
    if message_id.__class__ is not str or not message_id:
        if message_id is None or message_id == "":
            message_id = new_message_id()
        else:
            message_id = _identity(message_id, "messageId") or ""
        event["messageId"] = message_id
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise ItemError(
            "invalid_field", f"messageId is {len(message_id)} characters; the limit is 100"
        )

    context = _object(event, "context")
    if env.context:  # the batch's context; the item's own keys win
        context = {**env.context, **context} if context else dict(env.context)
    if env.ip is not None:
        if context is None:
            context = {"ip": env.ip}
        elif "ip" not in context:
            context["ip"] = env.ip  # a dict of this event's own (parsed or merged above)
    if context is not None:
        event["context"] = context
    integrations = _object(event, "integrations")
    if env.integrations:
        event["integrations"] = (
            {**env.integrations, **integrations} if integrations else dict(env.integrations)
        )
    _object(event, "properties")
    _object(event, "traits")

    _correct_clock(event, env)
    return event


def to_record(event: dict[str, Any], source: str, received_ms: int) -> Record:
    """The normalised event as the log stores it; refuses one over the size limit."""
    payload = orjson.dumps(event)
    if len(payload) > MAX_EVENT_BYTES + EVENT_BYTES_ALLOWANCE:
        raise ItemError(
            "event_too_large",
            f"the event is {len(payload)} bytes; the limit is 32 KB per event — trim its "
            "properties or traits",
        )
    return Record(event["messageId"], source, event["type"], received_ms, payload)


def _correct_clock(event: dict[str, Any], env: Envelope) -> None:
    event["receivedAt"] = env.received_iso
    client_ts = event.get("timestamp")
    own_sent_at = event.get("sentAt")
    if own_sent_at is None:
        sent_ms, sent_iso = env.sent_at_ms, env.sent_at_iso
    else:
        sent_ms = parse_ms(own_sent_at, "sentAt")
        sent_iso = iso_ms(sent_ms)
    if sent_iso is not None:
        event["sentAt"] = sent_iso
    if client_ts is None:
        event["timestamp"] = env.received_iso
        return
    original_ms = parse_ms(client_ts, "timestamp")
    event["originalTimestamp"] = client_ts
    if sent_ms is None:
        event["timestamp"] = iso_ms(original_ms)
    else:
        corrected = env.received_ms - (sent_ms - original_ms)
        what = "timestamp corrected by sentAt (receivedAt - (sentAt - timestamp))"
        event["timestamp"] = iso_ms(_in_range(corrected, what))
