"""amplitude: events to Amplitude's HTTP V2 (or Batch) API, identifies and groups to its
Identify and Group Identify APIs (docs/destinations/amplitude.md)."""

from headwater.destinations.amplitude.client import Amplitude

__all__ = ["Amplitude"]
