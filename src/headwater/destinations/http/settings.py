"""Settings of the ``http`` destination (Segment's "Webhooks (Actions)")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from headwater.config.urls import FRAMING_HEADERS, check_headers, check_http_url
from headwater.destinations.base import DestinationSettings

RESERVED_HEADERS = FRAMING_HEADERS | {"x-signature"}
WHOLE_EVENT: dict[str, Any] = {"@path": "$."}


class HttpSettings(DestinationSettings):
    """Send each event's mapped payload (or a batch of them, as a JSON array) to a URL."""

    url: str
    """Where to send, ``http://`` or ``https://``."""

    method: Literal["POST", "PUT", "PATCH"] = "POST"
    """The HTTP method."""

    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. ``{Authorization: Bearer ...}`` (kept out of the ledger)."""

    batch: bool = False
    """Send batches as one JSON array of payloads (``delivery.batch_max_events`` per
    request, 100 by default); otherwise one request per event."""

    mapping: Any = Field(default_factory=lambda: dict(WHOLE_EVENT))
    """The payload, in the mapping kit (docs/mapping.md); default ``{"@path": "$."}``, the
    whole event, as Segment's Webhooks (Actions) send."""

    shared_secret: SecretStr | None = None
    """When set, ``X-Signature`` carries the hex HMAC-SHA1 of the request body with this
    secret, so the receiver can check the request came from Headwater."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return check_http_url(url, "send them in headers, e.g. {Authorization: Basic ...}")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return check_headers(headers, RESERVED_HEADERS)
