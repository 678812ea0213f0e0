"""Devsink: keeps the newest deliveries inside Headwater, for demos, tests and canaries."""

from headwater.destinations.devsink.client import Devsink

__all__ = ["Devsink"]
