"""The slack destination against the fake Slack webhook."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from headwater.delivery.http import HttpClient
from headwater.delivery.outcomes import Delivered, Discard, Retry
from tests.destinations.conftest import outbound
from tests.destinations.vendor_helpers import vendor
from tests.fakes.slack import FakeSlack


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def dest(fake: FakeSlack, http: HttpClient, **settings: Any) -> Any:
    base = {"webhook_url": fake.webhook_url, "channel": "#sales",
            "templates": {"Order Completed": "*{{userId}}* paid {{properties.revenue}}"}}  # fmt: skip
    return vendor("slack", {**base, **settings}, http)


async def test_a_templated_event_is_posted(slack: FakeSlack, http: HttpClient) -> None:
    attempt = await dest(slack, http).deliver([outbound(1)])
    assert attempt.outcome == Delivered(200)
    assert slack.accepted == [
        {"text": "*u1* paid 9.99", "username": "Headwater", "channel": "#sales"}
    ]
    shown = str(attempt.exchange.request["url"])
    assert slack.secret not in shown and shown.endswith("/[redacted]")


async def test_events_without_a_template_are_discarded_unsent(
    slack: FakeSlack, http: HttpClient
) -> None:
    d = dest(slack, http)
    other = await d.deliver([outbound(1, event="Signed Up")])
    page = await d.deliver([outbound(2, type="page")])
    assert slack.requests == []
    assert isinstance(other.outcome, Discard)
    assert "no template for event 'Signed Up'" in other.outcome.reason
    assert isinstance(page.outcome, Discard) and "track events only" in page.outcome.reason


@pytest.mark.parametrize(("mode", "status", "reason"), [
    ("reject_key", 403, "Slack 403 action_prohibited"),
    ("channel", 404, "Slack 404 channel_not_found"),
    ("wrong_hook", 404, "Slack 404 no_service"),
])  # fmt: skip
async def test_slack_errors_are_discarded_with_its_code(
    slack: FakeSlack, http: HttpClient, mode: str, status: int, reason: str
) -> None:
    settings: dict[str, Any] = {}
    if mode == "reject_key":
        slack.reject_key = True
    elif mode == "channel":
        slack.refuse = {"#sales"}
    else:
        settings["webhook_url"] = slack.webhook_url + "x"
    attempt = await dest(slack, http, **settings).deliver([outbound(1)])
    assert attempt.outcome == Discard(reason, status)
    assert slack.secret not in str(attempt.exchange.request)


async def test_429_retries_after_slacks_retry_after(slack: FakeSlack, http: HttpClient) -> None:
    slack.throttle = 1
    attempt = await dest(slack, http).deliver([outbound(1)])
    assert attempt.outcome == Retry("Slack 429 rate_limited", 429, 2.0)


def test_settings_errors_never_repeat_the_webhook_url() -> None:
    from pydantic import ValidationError

    from headwater.destinations.slack.settings import SlackSettings

    with pytest.raises(ValidationError) as caught:
        SlackSettings(webhook_url="ftp://hooks/T/B/s3cret-path", templates={"a": "b"})  # type: ignore[arg-type]
    [error] = caught.value.errors()
    assert "s3cret-path" not in error["msg"]  # the workspace shows msg, never the input
