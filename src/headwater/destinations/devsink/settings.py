"""Settings of the ``devsink`` destination."""

from __future__ import annotations

from pydantic import Field

from headwater.destinations.base import DestinationSettings


class DevsinkSettings(DestinationSettings):
    """Keep the newest deliveries inside Headwater, to look at them."""

    keep: int = Field(default=1000, ge=1, le=100_000)
    """How many of the newest events are kept (in memory; a restart empties it)."""
