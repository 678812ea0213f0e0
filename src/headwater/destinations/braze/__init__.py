"""braze: Braze's ``/users/track`` (Segment's "Braze Cloud Mode (Actions)")."""

from headwater.destinations.braze.client import Braze

__all__ = ["Braze"]
