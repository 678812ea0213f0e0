"""intercom: identify -> contact (create, or update on a duplicate), track -> data event."""

from headwater.destinations.intercom.client import Intercom

__all__ = ["Intercom"]
