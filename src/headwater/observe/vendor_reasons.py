"""Reading the reasons vendor destinations give, so diagnose can name the vendor's own error.

Vendor destinations write an outcome's reason in one shape (docs/destinations.md):

- a vendor's answer: the vendor's name, the HTTP status and the vendor's error code, then
  what it said — ``Amplitude 400 invalid_api_key: Invalid API Key``,
  ``Braze 429 rate limited (250,000 requests/hour): ...``; a payload refused because of a
  field names the field first — ``Amplitude 400 events_with_invalid_fields: time (event 3)``;
- a mapping that could not build a field the vendor requires —
  ``missing required field user_id (mapped from $.userId) for action log_event``.

:func:`parse_reason` reads either shape, or gives None for a reason in any other shape (which
then falls under diagnose's generic rules). Parsing is by the destination's own vendor name,
so a reason that merely starts with a capitalised word and a number is not mistaken for one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

Kind = Literal["key", "rate", "payload", "other"]

DEAD_PREFIX = re.compile(r"^still failing after \d+ attempts when the retry window closed: ")
_ANSWER = re.compile(r"^(?P<status>\d{3}) (?P<code>[^:]+?)(?:: (?P<detail>.*))?$", re.DOTALL)
_LIMIT = re.compile(r"\s*\((?P<limit>[^()]*)\)\s*$")
_EVENT_NOTE = re.compile(r"\s*\((?:events?|index|indexes|indices)\b[^)]*\)\s*$", re.IGNORECASE)
_FIELD = re.compile(r"^[A-Za-z_$][\w$.\[\]-]*$")
_MISSING = re.compile(
    r"^missing required field (?P<field>.+?)(?: \(mapped from (?P<source>[^)]*)\))?"
    r" for action (?P<action>\S+)$"
)
KEY_WORDS = ("key", "token", "secret", "credential", "unauthori", "auth", "forbidden")
RATE_WORDS = ("rate", "throttl", "too many", "limit")
PAYLOAD_CODES = ("field", "invalid", "missing", "payload", "schema", "validation", "parameter")


@dataclass(frozen=True, slots=True)
class VendorError:
    """A vendor's answer, read from a reason: ``Amplitude 400 invalid_api_key: ...``."""

    vendor: str
    status: int
    code: str  # the vendor's error code, without a limit in parentheses
    detail: str  # what the vendor said, after the colon
    kind: Kind
    limit: str | None = None  # "250,000 requests/hour", as the reason states it
    fields: tuple[str, ...] = ()  # fields the vendor named as refused

    @property
    def field(self) -> str | None:
        return self.fields[0] if self.fields else None


@dataclass(frozen=True, slots=True)
class MissingField:
    """A required field the mapping could not build: the event was never sent."""

    field: str  # "user_id", or "user_id or device_id"
    action: str
    mapped_from: tuple[str, ...]  # the event's paths it is mapped from ("$.userId", ...)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in self.field.split(" or ") if f.strip())

    @property
    def event_fields(self) -> tuple[str, ...]:
        """What the sender can set instead: ``$.userId`` -> ``userId``."""
        return tuple(p.removeprefix("$.") for p in self.mapped_from if p.startswith("$."))


def parse_reason(reason: str, vendor: str) -> VendorError | MissingField | None:
    """The vendor's answer or the missing field a reason states; None for any other shape."""
    text = DEAD_PREFIX.sub("", reason.strip())
    missing = _MISSING.match(text)
    if missing:
        sources = tuple(s.strip() for s in (missing["source"] or "").split(" / ") if s.strip())
        return MissingField(missing["field"].strip(), missing["action"], sources)
    if not vendor or not text.lower().startswith(vendor.lower() + " "):
        return None
    answer = _ANSWER.match(text[len(vendor) + 1 :])
    if answer is None:
        return None
    status, code, detail = int(answer["status"]), answer["code"].strip(), answer["detail"] or ""
    limit = None
    found = _LIMIT.search(code)
    if found:
        limit, code = found["limit"].strip(), code[: found.start()].strip()
    if not code or (" " in code and not _is_phrase(code)):
        return None
    kind = _kind(status, code)
    fields = _fields(detail) if kind == "payload" else ()
    if kind == "payload" and not fields:
        kind = "other"
    return VendorError(text[: len(vendor)], status, code, detail.strip(), kind, limit, fields)


def _is_phrase(code: str) -> bool:
    """A code of a few words ("rate limited") rather than a sentence."""
    return len(code.split()) <= 4


def _kind(status: int, code: str) -> Kind:
    lowered = code.lower()
    if status == 429 or any(w in lowered for w in ("throttl", "rate limit", "rate_limit")):
        return "rate"
    if status in (401, 403) or any(w in lowered for w in KEY_WORDS):
        return "key"
    if 400 <= status < 500 and any(w in lowered for w in PAYLOAD_CODES):
        return "payload"
    return "other"


def _fields(detail: str) -> tuple[str, ...]:
    """``time (event 3)`` -> ("time",); ``time, user_id (events 3, 7)`` -> both; a detail
    that is a sentence rather than field names gives ()."""
    head = _EVENT_NOTE.sub("", detail.strip())
    names = tuple(n.strip().strip("`'\"") for n in head.split(","))
    if not names or not all(_FIELD.match(n) for n in names):
        return ()
    return names


def clock(at_ms: int, span_ms: int) -> str:
    """``14:02`` (UTC) for a window within a day, else ``2026-01-31 14:02``."""
    fmt = "%H:%M" if span_ms <= 86_400_000 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.gmtime(at_ms / 1000))
