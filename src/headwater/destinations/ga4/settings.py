"""Settings of the ``ga4`` destination (Google Analytics 4, Measurement Protocol)."""

from __future__ import annotations

import re

from pydantic import SecretStr, field_validator

from headwater.config.urls import check_http_url
from headwater.destinations.base import DestinationSettings

MEASUREMENT_ID = re.compile(r"^G-[A-Z0-9]{4,20}$")


class Ga4Settings(DestinationSettings):
    """Send track and page events to a GA4 web data stream."""

    measurement_id: str
    """The web data stream's measurement ID, ``G-XXXXXXXXXX`` (Admin > Data streams)."""

    api_secret: SecretStr
    """A Measurement Protocol API secret of that stream (Admin > Data streams > Measurement
    Protocol API secrets). Sent in the query string; redacted in the ledger."""

    endpoint: str = "https://www.google-analytics.com"
    """Base URL: ``https://www.google-analytics.com``, or ``https://region1.google-analytics.com``
    to have the data collected in the EU."""

    @field_validator("measurement_id")
    @classmethod
    def _check_measurement_id(cls, value: str) -> str:
        value = value.strip()
        if not MEASUREMENT_ID.match(value):
            raise ValueError(
                "this is not a GA4 measurement ID: it looks like G-XXXXXXXXXX (Admin > Data"
                " streams > your web stream); an API secret goes in api_secret"
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, url: str) -> str:
        url = check_http_url(url, "the api_secret setting carries the credential")
        if "?" in url or "#" in url:
            raise ValueError(
                f"{url!r} has a query or fragment: give the base URL only; measurement_id and"
                " api_secret are settings of their own"
            )
        return url.rstrip("/")
