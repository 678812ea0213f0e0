"""A fake Slack incoming webhook: ``POST /services/T…/B…/<secret>``, plain-text answers."""

from __future__ import annotations

from typing import Any

from tests.fakes import Received, Reply
from tests.fakes.vendor import VendorFake

HOOK_PATH = "/services/T0001/B0001/"


def text(status: int, body: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, body.encode(), headers or {})


class FakeSlack(VendorFake):
    """Answers ``200 ok``; ``invalid_payload`` / ``no_text`` (400) for a bad body,
    ``no_service`` (404) for an unknown webhook, ``action_prohibited`` (403) with
    ``reject_key``, ``channel_not_found`` (404) for a channel in ``refuse``, 429 with
    ``Retry-After`` when throttling."""

    def __init__(self, secret: str = "slack-hook-s3cret") -> None:
        super().__init__()
        self.secret = secret

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{HOOK_PATH}{self.secret}"

    def authorized(self, request: Received) -> bool:
        return request.path == HOOK_PATH + self.secret

    def unauthorized(self) -> Reply:
        return text(404 if not self.reject_key else 403,
                    "no_service" if not self.reject_key else "action_prohibited")  # fmt: skip

    def throttled(self) -> Reply:
        return text(429, "rate_limited", {"Retry-After": "2"})

    def bad_json(self) -> Reply:
        return text(400, "invalid_payload")

    def answer(self, request: Received, body: Any) -> Reply:
        if not isinstance(body, dict):
            return text(400, "invalid_payload")
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            return text(400, "no_text")
        if body.get("channel") in self.refuse:
            return text(404, "channel_not_found")
        self.accepted.append(body)
        return text(200, "ok")
