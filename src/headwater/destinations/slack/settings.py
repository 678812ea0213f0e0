"""Settings of the ``slack`` destination (Segment's "Slack (Actions)", incoming webhooks)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from headwater.destinations.base import DestinationSettings


class SlackSettings(DestinationSettings):
    """Post one message per event to a Slack incoming webhook."""

    webhook_url: SecretStr
    """The incoming webhook's URL, ``https://hooks.slack.com/services/T…/B…/…``. Its path is
    the credential: it is never stored or shown (the ledger keeps only its host)."""

    channel: str | None = None
    """The channel to post to, e.g. ``#alerts``; none: the webhook's own channel (webhooks
    made by Slack apps always post to their own channel and ignore this)."""

    username: str = "Headwater"
    """The name the messages are posted under."""

    icon_url: str | None = None
    """The URL of the messages' icon; none: the webhook's icon."""

    templates: dict[str, str] = Field(min_length=1)
    """Event name -> the message's text as a ``@template`` (docs/mapping.md), e.g.
    ``{"Order Completed": "*{{traits.email}}* paid {{properties.revenue}}"}``. Only track
    events with a template are posted; any other event is discarded, unsent, with the reason
    ``no template for event ...``."""

    @field_validator("webhook_url")
    @classmethod
    def _check_url(cls, url: SecretStr) -> SecretStr:
        parts = urlsplit(url.get_secret_value())  # errors never repeat the URL: it is a secret
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("is not an http:// or https:// URL: copy the webhook URL from Slack")
        if parts.username is not None or any(c.isspace() for c in url.get_secret_value()):
            raise ValueError("has white space or user:password@ in it: copy it again from Slack")
        return url

    @field_validator("templates")
    @classmethod
    def _check_templates(cls, templates: dict[str, str]) -> dict[str, str]:
        for name, text in templates.items():
            if not name or not text.strip():
                raise ValueError(f"template {name!r}: an event name and a non-empty text needed")
        return templates
