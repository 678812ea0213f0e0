"""customerio: people, events, page and screen views and objects in Customer.io's Track API."""

from headwater.destinations.customerio.client import Customerio

__all__ = ["Customerio"]
