"""Settings of the ``braze`` destination (Braze REST API, ``/users/track``)."""

from __future__ import annotations

import re

from pydantic import SecretStr, field_validator

from headwater.config.urls import check_http_url
from headwater.destinations.base import DestinationSettings

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


class BrazeSettings(DestinationSettings):
    """Send identify traits as user attributes, tracks as custom events, and Order Completed
    products as purchases to a Braze workspace."""

    api_key: SecretStr
    """A REST API key with the ``users.track`` permission (Settings > APIs and Identifiers).
    Sent as ``Authorization: Bearer``; never stored."""

    app_id: str | None = None
    """The app identifier (Settings > APIs and Identifiers > App Identifiers), sent as each
    object's ``app_id``; optional. It is not a secret: the REST API key goes in api_key."""

    endpoint: str = "https://rest.iad-01.braze.com"
    """Your instance's REST endpoint, e.g. ``https://rest.iad-05.braze.com`` or
    ``https://rest.fra-01.braze.eu`` (Braze's "API endpoints" page; a wrong instance
    answers 401)."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, url: str) -> str:
        url = check_http_url(url, "the REST API key goes in api_key")
        if "?" in url or "#" in url:
            raise ValueError(f"{url!r} has a query or fragment: give the REST endpoint only")
        url = url.rstrip("/")
        return url.removesuffix("/users/track")

    @field_validator("app_id")
    @classmethod
    def _check_app_id(cls, value: str | None) -> str | None:
        if value is not None and not _UUID.match(value.strip()):
            raise ValueError(
                "app_id should be an app identifier like 3f2b6c1e-...-...; if this is the REST"
                " API key, put it in api_key"
            )
        return value.strip() if value is not None else None
