"""Webhook: POST events as JSON to any URL, optionally signed and batched."""

from headwater.destinations.webhook.client import Webhook

__all__ = ["Webhook"]
