"""Segment: forward to any Segment-compatible tracking API (``/v1/batch``)."""

from headwater.destinations.segment.client import Segment

__all__ = ["Segment"]
