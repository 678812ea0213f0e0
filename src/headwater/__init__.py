"""Headwater: a self-hosted customer data platform that speaks Segment's wire protocol."""

__version__ = "0.1.0"
