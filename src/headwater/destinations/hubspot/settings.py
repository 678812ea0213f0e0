"""Settings of the ``hubspot`` destination (Segment's "HubSpot Cloud Mode (Actions)")."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from headwater.config.urls import check_http_url
from headwater.destinations.base import DestinationSettings

EVENT_NAME = re.compile(r"^pe\d+_[a-z0-9_]+$")


class HubspotSettings(DestinationSettings):
    """Contacts and custom behavioral events in HubSpot's CRM."""

    access_token: SecretStr
    """A private app's access token (or an OAuth access token), sent as
    ``Authorization: Bearer``; never stored or shown. Scopes: ``crm.objects.contacts.write``
    and ``analytics.behavioral_events.send``."""

    endpoint: str = "https://api.hubapi.com"
    """The API's base URL."""

    hub_id: int | None = Field(default=None, ge=1)
    """Your HubSpot account's Hub ID: a track event ``Order Completed`` is then sent as the
    custom event ``pe<hub_id>_order_completed`` unless ``event_names`` names it."""

    event_names: dict[str, str] = Field(default_factory=dict)
    """Segment event name -> the custom event's fully qualified name in HubSpot
    (``pe1234567_order_completed``, shown in HubSpot's event settings)."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, url: str) -> str:
        return check_http_url(url, "put the token in access_token").rstrip("/")

    @field_validator("event_names")
    @classmethod
    def _check_names(cls, names: dict[str, str]) -> dict[str, str]:
        for event, name in names.items():
            if not EVENT_NAME.match(name):
                raise ValueError(
                    f"{event!r}: {name!r} is not a HubSpot event's fully qualified name;"
                    " copy it from HubSpot, e.g. pe1234567_order_completed"
                )
        return names
