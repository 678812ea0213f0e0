"""Settings of the ``webhook`` destination."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from headwater.config.urls import FRAMING_HEADERS, check_headers, check_http_url
from headwater.destinations.base import DestinationSettings

RESERVED_HEADERS = FRAMING_HEADERS | {"x-signature"}


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
        return check_headers(headers, RESERVED_HEADERS)
