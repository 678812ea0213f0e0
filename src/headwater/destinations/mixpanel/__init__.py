"""mixpanel: events to Mixpanel's ``/import`` (strict), identifies to ``/engage``, groups to
``/groups`` (docs/destinations/mixpanel.md)."""

from headwater.destinations.mixpanel.client import Mixpanel

__all__ = ["Mixpanel"]
