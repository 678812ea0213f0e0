"""Destinations: one folder per type, the same files in each (see :mod:`.base`).

``TYPES`` is the registry the workspace validates ``destinations[].type`` against.
"""

from __future__ import annotations

from typing import Any

from headwater.destinations.amplitude import Amplitude
from headwater.destinations.base import Destination
from headwater.destinations.braze import Braze
from headwater.destinations.customerio import Customerio
from headwater.destinations.devsink import Devsink
from headwater.destinations.function import FunctionDestination
from headwater.destinations.ga4 import Ga4
from headwater.destinations.http import Http
from headwater.destinations.hubspot import Hubspot
from headwater.destinations.intercom import Intercom
from headwater.destinations.mixpanel import Mixpanel
from headwater.destinations.segment import Segment
from headwater.destinations.slack import Slack
from headwater.destinations.webhook import Webhook

TYPES: dict[str, type[Destination[Any]]] = {
    d.type: d
    for d in (
        Webhook,
        Segment,
        Devsink,
        Http,
        Amplitude,
        Mixpanel,
        Ga4,
        Braze,
        Customerio,
        Hubspot,
        Intercom,
        Slack,
        FunctionDestination,
    )
}

__all__ = ["TYPES", "Destination"]
