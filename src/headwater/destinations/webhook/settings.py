"""Settings of the ``webhook`` destination."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from headwater.destinations.base import DestinationSettings

RESERVED_HEADERS = frozenset({"content-type", "content-length", "x-signature", "host"})


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
        if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Headwater and cannot be overridden")
        return headers
