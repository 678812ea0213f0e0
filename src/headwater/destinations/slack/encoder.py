"""Slack messages: one payload (``text``, ``channel``, ``username``, ``icon_url``) a request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from headwater.delivery.http import REDACTED, HttpRequest
from headwater.destinations.mapped import Mapped, json_body
from headwater.destinations.slack.settings import SlackSettings
from headwater.mapping.actions import ActionSpec

KIND = "post_to_channel"


def fql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def message_mapping(settings: SlackSettings, template: str) -> dict[str, Any]:
    mapping: dict[str, Any] = {"text": {"@template": template}, "username": settings.username}
    if settings.channel:
        mapping["channel"] = settings.channel
    if settings.icon_url:
        mapping["icon_url"] = settings.icon_url
    return mapping


def presets(settings: SlackSettings) -> tuple[ActionSpec, ...]:
    """One action per template: ``template_1`` for the first event name, and so on."""
    return tuple(
        ActionSpec(
            f"template_{i}",
            f'type = "track" and event = {fql_string(name)}',
            message_mapping(settings, text),
            required=("text",),
            kind=KIND,
            source=f"settings.templates.{name}",
        )
        for i, (name, text) in enumerate(settings.templates.items(), start=1)
    )


def encode(settings: SlackSettings, items: Sequence[Mapped]) -> HttpRequest:
    if len(items) != 1:  # Slack posts one message a request
        raise ValueError(f"a Slack webhook takes 1 message a request, not {len(items)}")
    headers = {"Content-Type": "application/json"}
    return HttpRequest(
        "POST", settings.webhook_url.get_secret_value(), headers, json_body(items[0].payload)
    )


def shown_url(url: str) -> str:
    """The webhook URL as the ledger may show it: its path is the credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/{REDACTED}"
