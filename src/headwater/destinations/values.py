"""Values vendor destinations share: times as epoch milliseconds or unix seconds, region
names, vendors' answers read (JSON, headers, a snippet) and reworded.

``snippet`` is :func:`headwater.delivery.http.snippet`, re-exported here with the rest."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from headwater.config.urls import check_http_url
from headwater.delivery.http import HttpResponse, redact, snippet
from headwater.delivery.outcomes import Discard, Outcome, Retry

__all__ = [
    "base_url",
    "epoch_ms",
    "headers_of",
    "json_object",
    "json_of",
    "snippet",
    "unix_seconds",
    "with_reason",
    "without_secrets",
]


def epoch_ms(value: Any) -> int | None:
    """An ISO-8601 time (Segment's ``timestamp``) or a number of milliseconds, as integer
    epoch milliseconds; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return round(value) if math.isfinite(value) else None
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # Segment's times are UTC
    return round(when.timestamp() * 1000)


def base_url(value: str, regions: dict[str, str], vendor: str) -> str:
    """A region's name (``europe``) or a base URL, as a base URL without a trailing slash."""
    if value in regions:
        return regions[value]
    if "://" not in value:
        names = ", ".join(sorted(regions))
        raise ValueError(f"{value!r} is neither a {vendor} region ({names}) nor an http(s) URL")
    return check_http_url(value, "credentials belong in their own settings").rstrip("/")


def json_object(body: bytes) -> dict[str, Any] | None:
    """A vendor's answer as a JSON object, or None when it is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def json_of(body: bytes) -> Any:
    """The parsed body, or None when it is not JSON."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def headers_of(result: HttpResponse) -> dict[str, str]:
    """An answer's headers by lower-case name."""
    return {k.lower(): v for k, v in result.headers.items()}


def unix_seconds(value: Any) -> Any:
    """An ISO-8601 time as unix seconds (an int); numbers and digit-only strings as they are;
    anything else unchanged (the vendor's check names it)."""
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    if value.isdigit():
        return int(value)
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return value


def with_reason(outcome: Outcome, reason: str) -> Outcome:
    """``outcome`` with another reason (a Delivered stays as it is)."""
    if isinstance(outcome, Retry):
        return Retry(reason, outcome.status, outcome.after_secs)
    if isinstance(outcome, Discard):
        return Discard(reason, outcome.status)
    return outcome


def without_secrets(outcome: Outcome, secrets: frozenset[str]) -> Outcome:
    """``outcome`` with any secret a vendor echoed in its answer redacted from the reason."""
    if isinstance(outcome, Retry | Discard):
        return with_reason(outcome, redact(outcome.reason, secrets))
    return outcome
