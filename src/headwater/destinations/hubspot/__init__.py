"""hubspot: identify -> contact upsert by email, track -> custom behavioral event."""

from headwater.destinations.hubspot.client import Hubspot

__all__ = ["Hubspot"]
