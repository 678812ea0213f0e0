"""Settings of the ``webhook`` destination."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from headwater.config.urls import check_http_url
from headwater.destinations.base import DestinationSettings

# Set by Headwater, or describing the body and its framing, which Headwater decides.
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding", "x-signature"}
    | {"host"}
)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


class WebhookSettings(DestinationSettings):
    """POST each event (or each batch, as a JSON array) to a URL."""

    url: str
    """Where to send, ``http://`` or ``https://``."""

    method: Literal["POST", "PUT", "PATCH"] = "POST"
    """The HTTP method."""

    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. ``{X-Team: growth}`` or an ``Authorization`` value
    (kept out of the ledger)."""

    shared_secret: SecretStr | None = None
    """When set, ``X-Signature`` carries the hex HMAC-SHA1 of the body with this secret, as
    Segment's webhooks do, so the receiver can check the request came from Headwater."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return check_http_url(url, "send them in headers, e.g. {Authorization: Basic ...}")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Headwater and cannot be overridden")
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
                raise ValueError(f"the value of header {name!r} contains control characters")
        return headers
