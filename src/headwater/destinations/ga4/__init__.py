"""ga4: Google Analytics 4's Measurement Protocol (Segment's "Google Analytics 4 Cloud")."""

from headwater.destinations.ga4.client import Ga4

__all__ = ["Ga4"]
