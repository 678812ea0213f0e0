"""slack: a message per event to a Slack incoming webhook, its text from a template."""

from headwater.destinations.slack.client import Slack

__all__ = ["Slack"]
