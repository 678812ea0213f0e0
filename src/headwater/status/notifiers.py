"""Notifiers: send one :class:`Alert` to Slack, to a webhook (JSON) or by e-mail (SMTP).

Each notifier is a small class with ``async send(alert) -> NotifyResult``. A failure of the
receiver (an error answer, a timeout, a refused connection, an SMTP error) is a
:class:`NotifyResult` with the reason and whether trying again may help, never an exception:
the sender (:class:`headwater.status.alerts.AlertSender`) decides about retries, counts and
logs. The payload formats are documented in ``docs/alerts.md``; the functions that build them
(:func:`slack_payload`, :meth:`Alert.to_json`, :func:`email_message`) are pure, so the
formats can be read and tested without a network.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

import orjson

from headwater.delivery.http import HttpClient, HttpRequest, classify
from headwater.delivery.outcomes import Delivered, Retry
from headwater.status.config import (
    AlertsConfig,
    EmailSettings,
    SlackSettings,
    WebhookSettings,
)
from headwater.status.model import Component, Status

SIGNATURE_HEADER = "X-Headwater-Signature"
PAYLOAD_VERSION = 1  # of the webhook's JSON; raised only for a change that breaks readers

STATUS_LABELS = {
    Status.OPERATIONAL: "Operational",
    Status.DEGRADED: "Degraded performance",
    Status.PARTIAL: "Partial outage",
    Status.MAJOR: "Major outage",
    Status.MAINTENANCE: "Under maintenance",
}
STATUS_EMOJI = {  # Slack short codes
    Status.OPERATIONAL: ":white_check_mark:",
    Status.DEGRADED: ":large_yellow_circle:",
    Status.PARTIAL: ":large_orange_circle:",
    Status.MAJOR: ":red_circle:",
    Status.MAINTENANCE: ":wrench:",
}
STATUS_COLOURS = {  # the colour bar of the Slack message, as status pages colour them
    Status.OPERATIONAL: "#2fcc66",
    Status.DEGRADED: "#f1c40f",
    Status.PARTIAL: "#e67e22",
    Status.MAJOR: "#e74c3c",
    Status.MAINTENANCE: "#3498db",
}


class AlertKind(enum.StrEnum):
    """Why an alert is sent."""

    OPENED = "opened"  # the component has been failing for the rule's threshold
    RENOTIFY = "renotify"  # still failing, renotify_secs after the last alert
    RESOLVED = "resolved"  # operational again, after an ``opened`` alert

    @property
    def label(self) -> str:
        """In e-mail subjects: ``[Headwater] RESOLVED: ...``."""
        return _KIND_LABELS[self]


_KIND_LABELS = {
    AlertKind.OPENED: "OPENED",
    AlertKind.RENOTIFY: "STILL FAILING",
    AlertKind.RESOLVED: "RESOLVED",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert about one component's incident, as every notifier gets it."""

    component: Component
    kind: AlertKind
    status: Status
    """The component's status when the alert was made (``operational`` for ``resolved``)."""
    worst_status: Status
    """The most severe status of the incident so far."""
    incident_id: str
    incident_title: str
    message: str
    """What is wrong, with the evidence (or, for ``resolved``, how long it lasted)."""
    started_at: datetime
    """When the component left ``operational`` (UTC)."""
    at: datetime
    """When the alert was made (UTC)."""
    url: str | None = None
    """Where to read more: the incident on the status page."""

    @property
    def duration_secs(self) -> float:
        return max(0.0, (self.at - self.started_at).total_seconds())

    @property
    def shown_status(self) -> Status:
        """The status a title shows: the incident's worst once it is resolved."""
        return self.worst_status if self.kind is AlertKind.RESOLVED else self.status

    def headline(self) -> str:
        """One line: ``Destination my-webhook: Major outage``."""
        name = self.component.name
        if self.kind is AlertKind.RESOLVED:
            return f"{name} is operational again"
        if self.kind is AlertKind.RENOTIFY:
            return f"{name}: still {STATUS_LABELS[self.status].lower()}"
        return f"{name}: {STATUS_LABELS[self.status]}"

    def to_json(self) -> dict[str, Any]:
        """The webhook notifier's body (docs/alerts.md)."""
        return {
            "version": PAYLOAD_VERSION,
            "kind": self.kind.value,
            "summary": self.headline(),
            "component": {"id": self.component.id, "name": self.component.name},
            "status": self.status.value,
            "worst_status": self.worst_status.value,
            "incident": {"id": self.incident_id, "title": self.incident_title},
            "message": self.message,
            "url": self.url,
            "started_at": iso(self.started_at),
            "at": iso(self.at),
            "duration_secs": round(self.duration_secs, 3),
        }


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """How one send went: ``ok``, or the failure's ``reason`` and whether to try again."""

    ok: bool
    reason: str | None = None
    retryable: bool = False
    retry_after_secs: float | None = None  # the receiver's Retry-After, when it gave one

    @classmethod
    def success(cls) -> NotifyResult:
        return cls(True)

    @classmethod
    def failure(
        cls, reason: str, *, retryable: bool, retry_after_secs: float | None = None
    ) -> NotifyResult:
        return cls(False, reason, retryable, retry_after_secs)


class Notifier(Protocol):
    """Sends alerts somewhere. ``send`` never raises for the receiver's failures."""

    name: str

    async def send(self, alert: Alert) -> NotifyResult: ...


def iso(moment: datetime) -> str:
    """``2024-05-01T10:00:00.000Z``, as Statuspage writes times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def human_duration(secs: float) -> str:
    """``45s``, ``12m 5s``, ``3h 2m``, ``2d 4h``."""
    secs = int(secs)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m {secs % 60}s"
    if secs < 86400:
        return f"{secs // 3600}h {secs % 3600 // 60}m"
    return f"{secs // 86400}d {secs % 86400 // 3600}h"


# -- over HTTP: Slack and webhooks


async def _post(
    http: HttpClient, url: str, body: bytes, headers: Mapping[str, str], timeout_secs: float
) -> NotifyResult:
    request = HttpRequest("POST", url, {**headers, "Content-Type": "application/json"}, body)
    outcome = classify(await http.send(request, timeout_secs))
    if isinstance(outcome, Delivered):
        return NotifyResult.success()
    if isinstance(outcome, Retry):
        return NotifyResult.failure(
            outcome.reason, retryable=True, retry_after_secs=outcome.after_secs
        )
    return NotifyResult.failure(outcome.reason, retryable=False)


def _mrkdwn(text: str) -> str:
    """Text as Slack shows it literally: ``&``, ``<`` and ``>`` are its control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(alert: Alert) -> dict[str, Any]:
    """The incoming webhook's JSON: ``text`` (the notification and the fallback), ``blocks``
    (a header with the status's emoji and the evidence) and one attachment carrying the
    status's colour bar with the details. A recovery is green, with its own wording."""
    resolved = alert.kind is AlertKind.RESOLVED
    status = Status.OPERATIONAL if resolved else alert.status
    emoji = STATUS_EMOJI[status]
    headline = alert.headline()
    text = f"{emoji} {headline}"
    if not resolved:
        text += f" ({alert.status.value})"
    blocks: list[dict[str, Any]] = [
        # Slack refuses a header over 150 characters and a section text over 3,000
        {"type": "header", "text": {"type": "plain_text", "text": _cut(text, 150), "emoji": True}},
    ]
    if alert.message:
        evidence = _cut(_mrkdwn(alert.message), 3000)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": evidence}})
    started = int(alert.started_at.timestamp())
    state = (
        f"Operational (was {STATUS_LABELS[alert.worst_status].lower()})"
        if resolved
        else STATUS_LABELS[alert.status]
    )
    fields = [
        f"*Status*\n{state}",
        f"*Incident*\n{_mrkdwn(_cut(alert.incident_title, 1000))} (#{_mrkdwn(alert.incident_id)})",
        f"*Started*\n<!date^{started}^{{date_short_pretty}} {{time}}|{iso(alert.started_at)}>",
        f"*{'Lasted' if resolved else 'For'}*\n{human_duration(alert.duration_secs)}",
    ]
    context = f"Headwater · {alert.kind.value} · {_mrkdwn(alert.component.id)}"
    if alert.url:
        link = _mrkdwn(alert.url).replace("|", "%7C")
        context += f" · <{link}|View incident>"
    details = [
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
    ]
    return {
        "text": text,
        "blocks": blocks,
        "attachments": [{"color": STATUS_COLOURS[status], "blocks": details}],
    }


class SlackNotifier:
    """A Slack incoming webhook (docs/alerts.md#slack)."""

    type = "slack"

    def __init__(self, name: str, settings: SlackSettings, http: HttpClient) -> None:
        self.name = name
        self.settings = settings
        self._http = http

    async def send(self, alert: Alert) -> NotifyResult:
        url = self.settings.url.get_secret_value()
        result = await _post(
            self._http, url, orjson.dumps(slack_payload(alert)), {}, self.settings.timeout_secs
        )
        if result.reason and url in result.reason:  # the URL is the credential: never show it
            result = NotifyResult.failure(
                result.reason.replace(url, "[webhook URL]"), retryable=result.retryable
            )
        return result


def signature(secret: str, body: bytes) -> str:
    """``X-Headwater-Signature``: the hex HMAC-SHA256 of the exact body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """Any HTTP endpoint: a JSON POST per alert, optionally signed (docs/alerts.md#webhook)."""

    type = "webhook"

    def __init__(self, name: str, settings: WebhookSettings, http: HttpClient) -> None:
        self.name = name
        self.settings = settings
        self._http = http

    async def send(self, alert: Alert) -> NotifyResult:
        body = orjson.dumps(alert.to_json())
        headers = dict(self.settings.headers)
        if self.settings.shared_secret is not None:
            headers[SIGNATURE_HEADER] = signature(
                self.settings.shared_secret.get_secret_value(), body
            )
        return await _post(self._http, self.settings.url, body, headers, self.settings.timeout_secs)


# -- by e-mail


def email_message(alert: Alert, settings: EmailSettings) -> EmailMessage:
    """A plain-text mail, its subject like ``[Headwater] RESOLVED: Destination x — major_outage``
    (the incident's worst status once it is resolved)."""
    subject = f"{alert.kind.label}: {alert.component.name} — {alert.shown_status.value}"
    if settings.subject_prefix:
        subject = f"{settings.subject_prefix} {subject}"
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.from_
    message["To"] = ", ".join(settings.to)
    message["Date"] = format_datetime(alert.at.astimezone(UTC))
    message["Message-ID"] = make_msgid(domain="headwater.local")
    message["X-Headwater-Incident"] = alert.incident_id
    message.set_content(_email_body(alert))
    return message


def _email_body(alert: Alert) -> str:
    resolved = alert.kind is AlertKind.RESOLVED
    status = alert.status.value
    if resolved:
        status = f"{status} (was {alert.worst_status.value})"
    rows = [
        ("Component", f"{alert.component.name} ({alert.component.id})"),
        ("Status", status),
        ("Incident", f"{alert.incident_title} (#{alert.incident_id})"),
        ("Started", f"{alert.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"),
        ("Lasted" if resolved else "For", human_duration(alert.duration_secs)),
    ]
    if alert.url:
        rows.append(("Details", alert.url))
    lines = [alert.headline(), ""]
    if alert.message:
        lines += [alert.message, ""]
    lines += [f"{label + ':':<12}{value}" for label, value in rows]
    lines += ["", "-- ", "Sent by Headwater: the alerts section of the workspace file says when."]
    return "\n".join(lines) + "\n"


class EmailNotifier:
    """E-mail through an SMTP server (docs/alerts.md#email).

    Sent with the standard library's ``smtplib`` in a worker thread rather than with
    ``aiosmtplib``: alerts are a handful per incident, so a thread blocked for one SMTP
    conversation costs nothing, and ``smtplib`` is one dependency fewer to keep, with
    STARTTLS, SMTPS and AUTH already there.
    """

    type = "email"

    def __init__(
        self, name: str, settings: EmailSettings, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        # the system's trusted authorities; tests pass a context that trusts their own CA
        self._ssl_context = ssl_context

    async def send(self, alert: Alert) -> NotifyResult:
        message = email_message(alert, self.settings)
        timeout = self.settings.timeout_secs
        try:
            # the socket timeout ends the thread's waits too, so none outlives the deadline long
            refused = await asyncio.wait_for(asyncio.to_thread(self._send, message), timeout)
        except TimeoutError:
            return NotifyResult.failure(f"timeout: not sent within {timeout:g} s", retryable=True)
        except smtplib.SMTPRecipientsRefused as exc:
            return NotifyResult.failure(
                f"every recipient was refused: {_refusals(exc.recipients)}", retryable=False
            )
        except smtplib.SMTPNotSupportedError as exc:
            return NotifyResult.failure(
                f"the server does not offer what is needed: {exc}; check 'security'",
                retryable=False,
            )
        except smtplib.SMTPAuthenticationError as exc:
            return NotifyResult.failure(
                f"login refused: {_smtp_answer(exc.smtp_code, exc.smtp_error)}", retryable=False
            )
        except smtplib.SMTPResponseException as exc:  # 4xx: try again later; 5xx: permanent
            return NotifyResult.failure(
                _smtp_answer(exc.smtp_code, exc.smtp_error), retryable=400 <= exc.smtp_code < 500
            )
        except ssl.SSLCertVerificationError as exc:
            return NotifyResult.failure(f"TLS certificate not trusted: {exc}", retryable=False)
        except (smtplib.SMTPException, OSError) as exc:  # refused, DNS, reset, TLS, protocol
            return NotifyResult.failure(f"{type(exc).__name__}: {exc}", retryable=True)
        if refused:
            # the others got it: sending again would repeat it to them
            return NotifyResult.failure(
                f"some recipients were refused: {_refusals(refused)}", retryable=False
            )
        return NotifyResult.success()

    def _send(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        s = self.settings
        timeout = s.timeout_secs
        context = self._ssl_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.security == "ssl":
            smtp = smtplib.SMTP_SSL(s.host, s.effective_port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.effective_port, timeout=timeout)
        with smtp:
            if s.security == "starttls":
                smtp.starttls(context=context)  # raises SMTPNotSupportedError if not offered
            if s.username is not None and s.password is not None:
                smtp.login(s.username, s.password.get_secret_value())
            return smtp.send_message(message)


def _smtp_answer(code: int, error: bytes | str) -> str:
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else error
    return f"SMTP {code}: {text}"


def _refusals(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{to} ({_smtp_answer(*answer)})" for to, answer in recipients.items())


def build_notifiers(config: AlertsConfig, http: HttpClient) -> dict[str, Notifier]:
    """Every notifier of the workspace's ``alerts:`` section, by name. ``http`` is shared
    (one connection pool for the process) and stays the caller's to close."""
    notifiers: dict[str, Notifier] = {}
    for entry in config.notifiers:
        settings = entry.parsed_settings()
        if isinstance(settings, SlackSettings):
            notifiers[entry.name] = SlackNotifier(entry.name, settings, http)
        elif isinstance(settings, WebhookSettings):
            notifiers[entry.name] = WebhookNotifier(entry.name, settings, http)
        else:
            notifiers[entry.name] = EmailNotifier(entry.name, settings)
    return notifiers
