"""Settings of the ``segment`` destination."""

from __future__ import annotations

from pydantic import SecretStr, field_validator

from headwater.config.urls import check_http_url
from headwater.destinations.base import DestinationSettings


class SegmentSettings(DestinationSettings):
    """Forward events to any Segment-compatible tracking API."""

    url: str = "https://api.segment.io"
    """The tracking API's base URL (``/v1/batch`` is added): Segment itself, a RudderStack
    data plane, or another Headwater, e.g. ``http://127.0.0.1:8081``."""

    write_key: SecretStr
    """The write key of the receiving source, sent as HTTP Basic user name."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        url = check_http_url(url, "the write_key setting is the credential").rstrip("/")
        return url.removesuffix("/v1/batch").removesuffix("/v1")
