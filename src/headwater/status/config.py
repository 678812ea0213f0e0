"""The ``alerts:`` section of the workspace: notifiers (where alerts go) and rules (when).

Declared like the rest of the workspace (:mod:`headwater.config.workspace`): every option once,
with its type, default and description; ``docs/alerts.md`` follows this file. A notifier's
``settings`` are checked against its type's model by :func:`check_alerts`, which
:class:`AlertsConfig` runs when it is validated; its messages name the field from the top of
the workspace file, e.g. ``alerts.notifiers[0].settings.url: ...``.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from headwater.config.units import Seconds
from headwater.config.urls import FRAMING_HEADERS, check_headers, check_http_url, field_path
from headwater.naming import NAME_PATTERN

ANY = "*"
RESERVED_HEADERS = FRAMING_HEADERS | {"x-headwater-signature"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_address(address: str) -> str:
    """``alerts@example.com`` or ``Headwater <alerts@example.com>``; nothing that could add a
    header (a line break) or leave the receiver guessing."""
    if any(c in address for c in "\r\n"):
        raise ValueError(f"{address!r} contains a line break")
    _, mail = parseaddr(address)
    local, at, domain = mail.rpartition("@")
    if not at or not local or not domain or " " in mail:
        raise ValueError(
            f"{address!r} is not an e-mail address; write e.g. 'ops@example.com' "
            "or 'Headwater <alerts@example.com>'"
        )
    return address


class SlackSettings(_Model):
    """Post to a Slack incoming webhook (or a Slack-compatible one: Mattermost, Rocket.Chat)."""

    url: SecretStr
    """The incoming webhook's URL, ``https://hooks.slack.com/services/...``. The URL is the
    credential, so it is kept secret: never logged nor shown."""

    timeout_secs: float = Field(default=10.0, gt=0, le=120)
    """An answer not complete after this long counts as a failed (retryable) send."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: SecretStr) -> SecretStr:
        try:
            check_http_url(url.get_secret_value(), "Slack's webhook URL needs none")
        except ValueError:  # the message would quote the secret URL
            raise ValueError(
                "not an http:// or https:// URL without user:password@; copy the incoming "
                "webhook's URL from Slack, e.g. 'https://hooks.slack.com/services/T000/B000/XXX'"
            ) from None
        return url


class WebhookSettings(_Model):
    """POST each alert as JSON (docs/alerts.md) to a URL."""

    url: str
    """Where to send, ``http://`` or ``https://``."""

    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. ``{Authorization: Bearer ...}``."""

    shared_secret: SecretStr | None = None
    """When set, ``X-Headwater-Signature`` carries the hex HMAC-SHA256 of the exact body with
    this secret, so the receiver can check the alert came from Headwater."""

    timeout_secs: float = Field(default=10.0, gt=0, le=120)
    """An answer not complete after this long counts as a failed (retryable) send."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return check_http_url(url, "send them in headers, e.g. {Authorization: Basic ...}")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return check_headers(headers, RESERVED_HEADERS)


class EmailSettings(_Model):
    """Send each alert as a plain-text e-mail through an SMTP server."""

    host: str
    """The SMTP server's host name or address."""

    port: int | None = Field(default=None, ge=1, le=65535)
    """The server's port. Default: 587 with ``starttls``, 465 with ``ssl``, 25 with ``plain``."""

    security: Literal["starttls", "ssl", "plain"] = "starttls"
    """``starttls``: connect in clear, then upgrade with STARTTLS (refused if the server cannot);
    ``ssl``: TLS from the first byte (SMTPS); ``plain``: no encryption (a local relay only).
    Certificates are verified against the system's trusted authorities."""

    username: str | None = None
    """The login, when the server asks for one (with ``password``)."""

    password: SecretStr | None = None
    """The password for ``username``."""

    from_: str = Field(alias="from")
    """The sender, e.g. ``Headwater <alerts@example.com>``."""

    to: Annotated[list[str], Field(min_length=1)]
    """The recipients, e.g. ``[oncall@example.com]``."""

    subject_prefix: str = "[Headwater]"
    """Put at the start of every subject, to sort or filter the mails."""

    timeout_secs: float = Field(default=10.0, gt=0, le=120)
    """A send not complete after this long counts as failed (retryable)."""

    @field_validator("host")
    @classmethod
    def _check_host(cls, host: str) -> str:
        if not host or any(c.isspace() or c in "/@" for c in host):
            raise ValueError(f"{host!r} is not a host name or address")
        if host.count(":") == 1:  # one colon: host:port (an IPv6 address has several)
            raise ValueError(f"{host!r}: write the host name alone and the port in 'port'")
        return host

    @field_validator("from_")
    @classmethod
    def _check_from(cls, address: str) -> str:
        return _check_address(address)

    @field_validator("to")
    @classmethod
    def _check_to(cls, addresses: list[str]) -> list[str]:
        return [_check_address(a) for a in addresses]

    @field_validator("subject_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if any(c in prefix for c in "\r\n"):
            raise ValueError("the subject prefix contains a line break")
        return prefix

    @model_validator(mode="after")
    def _check_login(self) -> EmailSettings:
        if self.username is not None and self.password is None:
            raise ValueError("password: required with a username")
        if self.password is not None and self.username is None:
            raise ValueError("username: required with a password")
        if self.username is not None and self.security == "plain":
            raise ValueError(
                "security: 'plain' would send the password unencrypted; "
                "use 'starttls' or 'ssl' with a username and password"
            )
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"starttls": 587, "ssl": 465, "plain": 25}[self.security]


NotifierSettings = SlackSettings | WebhookSettings | EmailSettings
SETTINGS_MODELS: dict[str, type[NotifierSettings]] = {
    "slack": SlackSettings,
    "webhook": WebhookSettings,
    "email": EmailSettings,
}


class NotifierConfig(_Model):
    """A notifier: one place alerts are sent to."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case name, unique among the notifiers; rules name it."""

    type: str
    """The kind of notifier: ``slack``, ``webhook`` or ``email`` (docs/alerts.md)."""

    settings: dict[str, Any] = Field(default_factory=dict)
    """The type's own settings (docs/alerts.md), checked when the workspace loads."""

    def parsed_settings(self) -> NotifierSettings:
        """The settings as the type's model (raises pydantic's ValidationError if invalid;
        :func:`check_alerts` has reported that with the field's name at load time)."""
        return SETTINGS_MODELS[self.type].model_validate(self.settings)


class AlertRule(_Model):
    """Which components' alerts go to which notifiers, and when."""

    name: Annotated[str | None, Field(pattern=NAME_PATTERN)] = None
    """A name for the API and ``headwater diff`` (``alert-rules/<name>``); a rule without
    one is addressed by its place, ``alert-rule-1``, ``alert-rule-2``, ..."""

    components: Annotated[list[str], Field(min_length=1)] = [ANY]
    """Component names or ids, or patterns with ``*`` (``Destination *``); ``*`` for all."""

    notifiers: Annotated[list[str], Field(min_length=1)] = [ANY]
    """The notifiers that get these alerts, by name; ``*`` for all."""

    failure_threshold_secs: Seconds = Field(default=0, ge=0)
    """How long a component must stay out of ``operational`` before the first alert. With
    0 the alert goes out at the first check that sees the failure."""

    renotify_secs: Seconds = Field(default=3600, ge=0)
    """While the incident lasts, repeat the alert this often; 0: never."""

    send_recovery: bool = True
    """Send a ``resolved`` notice when the component is operational again (only for an
    incident that was alerted)."""

    @field_validator("components", "notifiers")
    @classmethod
    def _check_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name.strip():
                raise ValueError("an empty name matches nothing; write a name or '*'")
        return names


class AlertsConfig(_Model):
    """Alerts: where they go (notifiers) and when (rules)."""

    notifiers: list[NotifierConfig] = []
    """Where alerts can go: Slack, webhooks, e-mail."""

    rules: list[AlertRule] = [AlertRule()]
    """When alerts go out. Default: one rule sending every component's alerts to every
    notifier, at once, again every hour while it lasts, and a notice when it is resolved."""

    @model_validator(mode="after")
    def _check(self) -> AlertsConfig:
        check_alerts(self)
        return self

    def notifier(self, name: str) -> NotifierConfig | None:
        return next((n for n in self.notifiers if n.name == name), None)


def check_alerts(config: AlertsConfig, where: str = "alerts") -> None:
    """Notifier names unique, types known, settings valid; rules name existing notifiers.

    Raises ValueError with one line per fault, each naming the field from the top of the
    workspace file (``where`` is the section's path), e.g.
    ``alerts.notifiers[0].settings.url: ...`` or ``alerts.rules[1].notifiers[0]: ...``.
    """
    faults: list[str] = []
    names: set[str] = set()
    for i, notifier in enumerate(config.notifiers):
        at = f"{where}.notifiers[{i}]"
        if notifier.name in names:
            faults.append(f"{at}.name: {notifier.name!r} is used by two notifiers")
        names.add(notifier.name)
        model = SETTINGS_MODELS.get(notifier.type)
        if model is None:
            faults.append(
                f"{at}.type: unknown notifier type {notifier.type!r}; "
                f"the types are {', '.join(sorted(SETTINGS_MODELS))}"
            )
            continue
        try:
            model.model_validate(notifier.settings)
        except ValidationError as exc:
            faults.extend(_settings_faults(at, notifier.type, exc))
    for i, rule in enumerate(config.rules):
        for j, name in enumerate(rule.notifiers):
            if name != ANY and name not in names:
                known = ", ".join(sorted(names)) or "none are declared under alerts.notifiers"
                faults.append(
                    f"{where}.rules[{i}].notifiers[{j}]: no notifier is named {name!r}; "
                    f"the notifiers are {known}"
                )
    if faults:
        raise ValueError("\n".join(faults))


def _settings_faults(at: str, kind: str, exc: ValidationError) -> list[str]:
    faults = []
    for err in exc.errors():
        field = field_path(("settings", *err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown setting for a {kind} notifier"
        elif err["type"] == "missing":
            message = "required setting is missing"
        if not err["loc"] and ": " in message and message.split(": ", 1)[0].isidentifier():
            # a check across fields names its field first: "password: required with username"
            field, message = f"settings.{message.split(': ', 1)[0]}", message.split(": ", 1)[1]
        faults.append(f"{at}.{field}: {message}")
    return faults
