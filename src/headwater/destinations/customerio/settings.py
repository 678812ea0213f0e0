"""Settings of the ``customerio`` destination (Segment's "Customer.io (Actions)")."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from headwater.config.urls import check_http_url
from headwater.destinations.base import DestinationSettings


class CustomerioSettings(DestinationSettings):
    """People, events and objects through Customer.io's Track API (v2 batch)."""

    site_id: str = Field(min_length=1)
    """The workspace's Site ID (Settings -> API Credentials -> Track API keys): the HTTP
    Basic user name."""

    api_key: SecretStr
    """The Track API key of that Site ID: the HTTP Basic password; never stored or shown."""

    endpoint: str = "https://track.customer.io"
    """The Track API's base URL: ``https://track.customer.io`` (US region) or
    ``https://track-eu.customer.io`` (EU region), as your account is hosted."""

    object_type_id: str = Field(default="1", min_length=1)
    """The object type groups become (Customer.io's ``object_type_id``; 1 is the first
    object type you created, often "Companies")."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, url: str) -> str:
        return check_http_url(url, "put the key in api_key").rstrip("/")

    @field_validator("site_id")
    @classmethod
    def _check_site_id(cls, site_id: str) -> str:
        if ":" in site_id or not site_id.isprintable() or site_id.strip() != site_id:
            raise ValueError("a Site ID has no ':' and no spaces: copy it from Customer.io")
        return site_id
