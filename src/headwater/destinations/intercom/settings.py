"""Settings of the ``intercom`` destination (Segment's "Intercom Cloud Mode (Actions)")."""

from __future__ import annotations

from pydantic import SecretStr, field_validator

from headwater.config.urls import check_http_url
from headwater.destinations.base import DestinationSettings


class IntercomSettings(DestinationSettings):
    """Contacts and data events in Intercom's REST API."""

    access_token: SecretStr
    """An access token of an Intercom app (Developer Hub -> Authentication), sent as
    ``Authorization: Bearer``; never stored or shown."""

    endpoint: str = "https://api.intercom.io"
    """The API's base URL: ``https://api.intercom.io`` (US), ``https://api.eu.intercom.io``
    (EU) or ``https://api.au.intercom.io`` (Australia), as your workspace is hosted."""

    intercom_version: str = "2.11"
    """The ``Intercom-Version`` header: the API version the requests are written for."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, url: str) -> str:
        return check_http_url(url, "put the token in access_token").rstrip("/")
