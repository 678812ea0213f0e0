"""Notifiers against real receivers: Slack and webhooks against the fake HTTP server, e-mail
against a local SMTP server (aiosmtpd) in plain text, STARTTLS and SMTPS."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import re
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from headwater.delivery.http import HttpClient
from headwater.status.alerts import AlertSender, Dispatcher, Outgoing
from headwater.status.config import AlertsConfig, EmailSettings, SlackSettings, WebhookSettings
from headwater.status.model import Status, destination_component
from headwater.status.notifiers import (
    Alert,
    AlertKind,
    EmailNotifier,
    NotifyResult,
    SlackNotifier,
    WebhookNotifier,
    build_notifiers,
    email_message,
    slack_payload,
)
from tests.fakes import FakeDestination, Reply, always, free_port

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
SECRET = "alert-secret-0123"
EVIDENCE = "my-webhook keeps failing; deliveries paused and probed: HTTP 500: <html>oops</html>"


def make_alert(kind: AlertKind = AlertKind.OPENED, **fields: Any) -> Alert:
    resolved = kind is AlertKind.RESOLVED
    values: dict[str, Any] = {
        "component": destination_component("my-webhook"),
        "kind": kind,
        "status": Status.OPERATIONAL if resolved else Status.MAJOR,
        "worst_status": Status.MAJOR,
        "incident_id": "42",
        "incident_title": "Destination my-webhook: Major outage",
        "message": EVIDENCE,
        "started_at": T0,
        "at": T0 + timedelta(minutes=12, seconds=5),
        "url": "http://status.example.com/incidents/42",
    }
    values.update(fields)
    return Alert(**values)


def slack(fake: FakeDestination, http: HttpClient, **settings: Any) -> SlackNotifier:
    url = f"{fake.url}/services/T000/B000/XXXX"
    return SlackNotifier("chat", SlackSettings.model_validate({"url": url, **settings}), http)


def webhook(fake: FakeDestination, http: HttpClient, **settings: Any) -> WebhookNotifier:
    model = WebhookSettings.model_validate({"url": f"{fake.url}/alerts", **settings})
    return WebhookNotifier("hook", model, http)


# -- the formats as docs/alerts.md shows them


def test_the_docs_show_the_payloads_headwater_sends() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text("utf-8")
    slack_doc, webhook_doc = (json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S))
    [email_doc] = re.findall(r"```\n(Destination my-webhook: Major outage\n.*?)```", text, re.S)
    alert = make_alert(
        message="my-webhook keeps failing; deliveries paused and probed: HTTP 500",
        at=T0 + timedelta(seconds=5), url="https://status.example.com/incidents/42",
    )  # fmt: skip
    assert slack_payload(alert) == slack_doc
    assert alert.to_json() == webhook_doc
    settings = email_settings(25)
    assert email_message(alert, settings).get_content().startswith(email_doc)


# -- Slack


async def test_slack_posts_text_blocks_and_a_coloured_attachment(
    fake: FakeDestination, http: HttpClient
) -> None:
    result = await slack(fake, http).send(make_alert())
    assert result == NotifyResult.success()
    [request] = fake.requests
    assert request.method == "POST" and request.path == "/services/T000/B000/XXXX"
    assert request.headers["Content-Type"] == "application/json"
    payload = request.json()
    assert payload["text"] == ":red_circle: Destination my-webhook: Major outage (major_outage)"
    header, section = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "emoji": True,
                      "text": ":red_circle: Destination my-webhook: Major outage (major_outage)"}}  # fmt: skip
    # the evidence, with Slack's control characters escaped so it shows as written
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"] == EVIDENCE.replace("<", "&lt;").replace(">", "&gt;")
    [attachment] = payload["attachments"]
    assert attachment["color"] == "#e74c3c"
    fields, context = attachment["blocks"]
    texts = [f["text"] for f in fields["fields"]]
    assert texts[0] == "*Status*\nMajor outage"
    assert texts[1] == "*Incident*\nDestination my-webhook: Major outage (#42)"
    assert (
        texts[2]
        == f"*Started*\n<!date^{int(T0.timestamp())}^{{date_short_pretty}} {{time}}|2024-05-01T10:00:00.000Z>"
    )
    assert texts[3] == "*For*\n12m 5s"
    [element] = context["elements"]
    assert element["text"] == ("Headwater · opened · destination:my-webhook · "
                               "<http://status.example.com/incidents/42|View incident>")  # fmt: skip


async def test_slack_colour_and_emoji_follow_the_status(
    fake: FakeDestination, http: HttpClient
) -> None:
    notifier = slack(fake, http)
    await notifier.send(make_alert(status=Status.DEGRADED, worst_status=Status.DEGRADED))
    await notifier.send(make_alert(status=Status.PARTIAL, worst_status=Status.PARTIAL))
    degraded, partial = (r.json() for r in fake.requests)
    assert degraded["text"].startswith(":large_yellow_circle: ")
    assert degraded["attachments"][0]["color"] == "#f1c40f"
    assert partial["text"].startswith(":large_orange_circle: ")
    assert partial["attachments"][0]["color"] == "#e67e22"


async def test_slack_recovery_notice_is_green_and_says_so(
    fake: FakeDestination, http: HttpClient
) -> None:
    await slack(fake, http).send(make_alert(AlertKind.RESOLVED, message="Back after 12m 5s."))
    payload = fake.requests[0].json()
    assert payload["text"] == ":white_check_mark: Destination my-webhook is operational again"
    assert payload["attachments"][0]["color"] == "#2fcc66"
    fields = [f["text"] for f in payload["attachments"][0]["blocks"][0]["fields"]]
    assert fields[0] == "*Status*\nOperational (was major outage)"
    assert fields[3] == "*Lasted*\n12m 5s"
    assert "· resolved ·" in payload["attachments"][0]["blocks"][1]["elements"][0]["text"]


async def test_slack_errors_are_results_that_never_show_the_webhook_url(
    fake: FakeDestination, http: HttpClient
) -> None:
    fake.script = always(404, body=b"no_service")
    result = await slack(fake, http).send(make_alert())
    assert not result.ok and not result.retryable  # a removed webhook will not come back
    assert result.reason == "HTTP 404: no_service"
    fake.script = always(500, body=b"rollup_error")
    result = await slack(fake, http).send(make_alert())
    assert not result.ok and result.retryable
    assert result.reason == "HTTP 500: rollup_error"
    assert "XXXX" not in repr(SlackSettings.model_validate({"url": f"{fake.url}/XXXX"}))


async def test_slack_timeout_is_a_failed_result_not_an_exception(
    fake: FakeDestination, http: HttpClient
) -> None:
    fake.script = always(200, hold=True)  # answers only when the test is over
    result = await asyncio.wait_for(slack(fake, http, timeout_secs=0.3).send(make_alert()), 60)
    assert not result.ok and result.retryable
    assert result.reason == "timeout: no answer within 0.3 s"


# -- webhook


async def test_webhook_posts_the_alert_as_json_signed_with_hmac_sha256(
    fake: FakeDestination, http: HttpClient
) -> None:
    notifier = webhook(fake, http, shared_secret=SECRET, headers={"X-Team": "data"})
    result = await notifier.send(make_alert())
    assert result.ok
    [request] = fake.requests
    assert request.path == "/alerts"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Team"] == "data"
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Headwater-Signature"], expected)
    assert request.json() == {
        "version": 1,
        "kind": "opened",
        "summary": "Destination my-webhook: Major outage",
        "component": {"id": "destination:my-webhook", "name": "Destination my-webhook"},
        "status": "major_outage",
        "worst_status": "major_outage",
        "incident": {"id": "42", "title": "Destination my-webhook: Major outage"},
        "message": EVIDENCE,
        "url": "http://status.example.com/incidents/42",
        "started_at": "2024-05-01T10:00:00.000Z",
        "at": "2024-05-01T10:12:05.000Z",
        "duration_secs": 725.0,
    }


async def test_webhook_signature_changes_with_the_secret_and_is_absent_without_one(
    fake: FakeDestination, http: HttpClient
) -> None:
    await webhook(fake, http).send(make_alert())
    await webhook(fake, http, shared_secret="another-secret").send(make_alert())
    unsigned, signed = fake.requests
    assert "X-Headwater-Signature" not in unsigned.headers
    wrong = hmac.new(SECRET.encode(), signed.body, hashlib.sha256).hexdigest()
    assert signed.headers["X-Headwater-Signature"] != wrong


async def test_webhook_500_and_timeout_and_refusal_are_failed_results(
    fake: FakeDestination, http: HttpClient
) -> None:
    fake.script = always(503, body=b"busy", headers={"Retry-After": "7"})
    result = await webhook(fake, http).send(make_alert())
    assert result == NotifyResult(False, "HTTP 503: busy", retryable=True, retry_after_secs=7.0)
    fake.script = always(400, body=b"bad")
    assert await webhook(fake, http).send(make_alert()) == NotifyResult(False, "HTTP 400: bad")
    fake.script = always(200, delay_secs=1.0)
    result = await webhook(fake, http, timeout_secs=0.2).send(make_alert())
    assert not result.ok and result.retryable and result.reason is not None
    assert result.reason.startswith("timeout")
    settings = WebhookSettings.model_validate({"url": f"http://127.0.0.1:{free_port()}/x"})
    result = await WebhookNotifier("gone", settings, http).send(make_alert())
    assert not result.ok and result.retryable and result.reason is not None
    assert result.reason.startswith("connect: ")


# -- e-mail


class Recorder:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def message(self, index: int = 0) -> email.message.EmailMessage:
        content = self.envelopes[index].content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


def check_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"alerts", b"pa55")
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def smtp_server(handler: Recorder, **options: Any) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    return controller


def email_settings(port: int, security: str = "plain", **more: Any) -> EmailSettings:
    return EmailSettings.model_validate({
        "host": "127.0.0.1", "port": port, "security": security,
        "from": "Headwater <alerts@example.com>",
        "to": ["oncall@example.com", "data-team@example.com"], **more,
    })  # fmt: skip


async def test_email_over_plain_smtp_has_the_subject_recipients_and_evidence() -> None:
    recorder = Recorder()
    server = smtp_server(recorder)
    try:
        notifier = EmailNotifier("mail", email_settings(server.port))
        result = await notifier.send(make_alert(AlertKind.RESOLVED, message="Back after 12m 5s."))
    finally:
        server.stop()
    assert result == NotifyResult.success()
    [envelope] = recorder.envelopes
    assert envelope.mail_from == "alerts@example.com"
    assert envelope.rcpt_tos == ["oncall@example.com", "data-team@example.com"]
    message = recorder.message()
    assert message["Subject"] == "[Headwater] RESOLVED: Destination my-webhook — major_outage"
    assert message["From"] == "Headwater <alerts@example.com>"
    assert message["To"] == "oncall@example.com, data-team@example.com"
    assert message["X-Headwater-Incident"] == "42"
    assert message.get_content_type() == "text/plain"
    body = message.get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert body.startswith("Destination my-webhook is operational again\n\nBack after 12m 5s.\n")
    assert "Status:     operational (was major_outage)\n" in body
    assert "Incident:   Destination my-webhook: Major outage (#42)\n" in body
    assert "Started:    2024-05-01 10:00:00 UTC\n" in body
    assert "Lasted:     12m 5s\n" in body
    assert "Details:    http://status.example.com/incidents/42\n" in body


async def test_email_subject_of_an_opened_alert_shows_the_current_status() -> None:
    recorder = Recorder()
    server = smtp_server(recorder)
    try:
        settings = email_settings(server.port, subject_prefix="[acme]")
        alert = make_alert(status=Status.PARTIAL, worst_status=Status.MAJOR)
        assert (await EmailNotifier("mail", settings).send(alert)).ok
    finally:
        server.stop()
    message = recorder.message()
    assert message["Subject"] == "[acme] OPENED: Destination my-webhook — partial_outage"
    assert EVIDENCE in message.get_content()


async def test_email_with_starttls_and_login(ca: trustme.CA, client_tls: ssl.SSLContext) -> None:
    recorder = Recorder()
    server = smtp_server(recorder, tls_context=server_tls(ca), require_starttls=True,
                         authenticator=check_login, auth_required=True)  # fmt: skip
    try:
        settings = email_settings(server.port, "starttls", username="alerts", password="pa55")
        result = await EmailNotifier("mail", settings, client_tls).send(make_alert())
        wrong = email_settings(server.port, "starttls", username="alerts", password="nope")
        refused = await EmailNotifier("mail", wrong, client_tls).send(make_alert())
    finally:
        server.stop()
    assert result.ok
    assert len(recorder.envelopes) == 1
    assert recorder.message()["Subject"].startswith("[Headwater] OPENED: ")
    assert not refused.ok and not refused.retryable and refused.reason is not None
    assert refused.reason.startswith("login refused: SMTP 535")


async def test_email_over_ssl(ca: trustme.CA, client_tls: ssl.SSLContext) -> None:
    recorder = Recorder()
    server = smtp_server(recorder, ssl_context=server_tls(ca))
    try:
        settings = email_settings(server.port, "ssl")
        result = await EmailNotifier("mail", settings, client_tls).send(make_alert())
    finally:
        server.stop()
    assert result.ok, result.reason
    assert recorder.message()["To"] == "oncall@example.com, data-team@example.com"


async def test_email_certificate_not_trusted_is_a_permanent_failure(ca: trustme.CA) -> None:
    server = smtp_server(Recorder(), ssl_context=server_tls(ca))
    try:
        # the system's authorities do not know the test's CA
        result = await EmailNotifier("mail", email_settings(server.port, "ssl")).send(make_alert())
    finally:
        server.stop()
    assert not result.ok and not result.retryable and result.reason is not None
    assert result.reason.startswith("TLS certificate not trusted")


async def test_email_starttls_refused_when_the_server_cannot() -> None:
    server = smtp_server(Recorder())  # no TLS context: STARTTLS not offered
    try:
        result = await EmailNotifier("mail", email_settings(server.port, "starttls")).send(
            make_alert()
        )
    finally:
        server.stop()
    assert not result.ok and not result.retryable and result.reason is not None
    assert "check 'security'" in result.reason


async def test_email_failures_are_results() -> None:
    nobody = await EmailNotifier("mail", email_settings(free_port())).send(make_alert())
    assert not nobody.ok and nobody.retryable  # connection refused: try again later
    with socket.socket() as silent:  # accepts connections, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        settings = email_settings(port, timeout_secs=0.3)
        # without its timeout the notifier would wait for the greeting forever
        result = await asyncio.wait_for(EmailNotifier("mail", settings).send(make_alert()), 60)
    assert not result.ok and result.retryable and result.reason is not None
    assert "timeout" in result.reason.lower() or "timed out" in result.reason


async def test_email_recipient_refused_is_reported() -> None:
    class Picky(Recorder):
        async def handle_RCPT(
            self, server: SMTP, session: Session, envelope: Envelope, address: str,
            options: list[str],
        ) -> str:  # fmt: skip
            if address.startswith("data-team"):
                return "550 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    recorder = Picky()
    server = smtp_server(recorder)
    try:
        result = await EmailNotifier("mail", email_settings(server.port)).send(make_alert())
    finally:
        server.stop()
    assert recorder.envelopes[0].rcpt_tos == ["oncall@example.com"]  # the others got it
    assert not result.ok and not result.retryable
    assert (
        result.reason
        == "some recipients were refused: data-team@example.com (SMTP 550: no such user)"
    )


class Answering(Recorder):
    """Refuses every message with ``answer``."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.answer


@pytest.mark.parametrize(
    ("answer", "retryable"),
    [("451 4.3.0 try again later", True), ("554 5.7.1 rejected as spam", False)],
)
async def test_email_smtp_answers_4xx_retry_5xx_do_not(answer: str, retryable: bool) -> None:
    server = smtp_server(Answering(answer))
    try:
        result = await EmailNotifier("mail", email_settings(server.port)).send(make_alert())
    finally:
        server.stop()
    assert not result.ok and result.retryable is retryable
    assert result.reason == "SMTP {}: {}".format(*answer.split(" ", 1))


# -- building and sending


async def test_build_notifiers_makes_one_of_each_type(http: HttpClient) -> None:
    config = AlertsConfig.model_validate({"notifiers": [
        {"name": "chat", "type": "slack", "settings": {"url": "https://hooks.slack.com/services/T/B/X"}},
        {"name": "hook", "type": "webhook", "settings": {"url": "https://example.com/a"}},
        {"name": "mail", "type": "email", "settings": {"host": "smtp.example.com", "from": "a@example.com", "to": ["b@example.com"]}},
    ]})  # fmt: skip
    notifiers = build_notifiers(config, http)
    assert {n: type(x) for n, x in notifiers.items()} == {
        "chat": SlackNotifier, "hook": WebhookNotifier, "mail": EmailNotifier,
    }  # fmt: skip
    mail = notifiers["mail"]
    assert isinstance(mail, EmailNotifier) and mail.settings.effective_port == 587


class Broken:
    name = "broken"

    async def send(self, alert: Alert) -> NotifyResult:
        raise RuntimeError("a bug in a notifier")


async def test_sender_retries_retryable_failures_then_counts(
    fake: FakeDestination, http: HttpClient
) -> None:
    fake.script = lambda _req, i: Reply(500 if i < 2 else 200)
    sender = AlertSender({"hook": webhook(fake, http)}, attempts=3, backoff_secs=0)
    [delivery] = await sender.send([Outgoing(make_alert(), ("hook",))])
    assert delivery.result.ok and delivery.attempts == 3
    assert len(fake.requests) == 3
    assert (sender.stats["hook"].sent, sender.stats["hook"].retried) == (1, 2)

    fake.script = always(401, body=b"denied")  # permanent: tried once
    [delivery] = await sender.send([Outgoing(make_alert(), ("hook",))])
    assert not delivery.result.ok and delivery.attempts == 1
    assert sender.stats["hook"].failed == 1
    assert sender.stats["hook"].last_error == "HTTP 401: denied"


class Signalling:
    """Wraps a notifier and sets ``sent`` once it has sent."""

    def __init__(self, inner: WebhookNotifier) -> None:
        self.name = inner.name
        self.inner = inner
        self.sent = asyncio.Event()

    async def send(self, alert: Alert) -> NotifyResult:
        result = await self.inner.send(alert)
        self.sent.set()
        return result


async def test_one_slow_or_broken_notifier_does_not_hold_up_the_others(
    fake: FakeDestination, http: HttpClient
) -> None:
    with FakeDestination(always(200, hold=True)) as slow_server:
        fast = Signalling(webhook(fake, http))
        sender = AlertSender({
            "slow": webhook(slow_server, http, timeout_secs=60), "fast": fast, "broken": Broken(),
        }, backoff_secs=0)  # fmt: skip
        sender.submit([Outgoing(make_alert(), ("slow", "fast", "broken"))])
        await asyncio.wait_for(fast.sent.wait(), 60)  # the slow receiver holds its answer
        assert len(fake.requests) == 1
        assert sender.stats["broken"].failed == 1
        assert slow_server.answered == 0 and sender.stats["slow"].sent == 0
        slow_server.release()
        await asyncio.wait_for(sender.drain(), 60)  # drain waits for the slow one too
        assert slow_server.answered == 1
        await sender.close()
    assert sender.stats["slow"].sent == 1 and sender.stats["fast"].sent == 1
    assert sender.stats["broken"].last_error == "RuntimeError: a bug in a notifier"


async def test_one_alert_arrives_per_incident_then_the_recovery(
    fake: FakeDestination, http: HttpClient
) -> None:
    """The path the status monitor drives: checks every 2 s, a webhook receiver."""
    config = AlertsConfig.model_validate(
        {
            "notifiers": [
                {"name": "hook", "type": "webhook", "settings": {"url": f"{fake.url}/alerts"}}
            ]
        }
    )
    dispatcher = Dispatcher(config)
    sender = AlertSender(build_notifiers(config, http))
    component = destination_component("my-webhook")
    now = datetime.now(UTC)
    for check in range(5):  # five checks see the failure
        sender.submit(dispatcher.observe(component, "major_outage", now + timedelta(seconds=2 * check),
                                         incident_id=7, message="HTTP 500 from the endpoint"))  # fmt: skip
        await asyncio.sleep(0.01)
    await asyncio.wait_for(sender.drain(), 60)
    sender.submit(dispatcher.observe(component, Status.OPERATIONAL, now + timedelta(seconds=12)))
    await sender.drain()
    await sender.close()
    assert [(r.json()["kind"], r.json()["incident"]["id"]) for r in fake.requests] == [
        ("opened", "7"),
        ("resolved", "7"),
    ]
