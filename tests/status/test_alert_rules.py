"""When alerts go out: the dispatcher's rules on a fake clock, and the ``alerts:`` settings'
validation with errors that name the field."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from headwater.status.alerts import Dispatcher, Outgoing
from headwater.status.config import AlertRule, AlertsConfig, NotifierConfig, check_alerts
from headwater.status.model import DESTINATIONS, TRACKING_API, Status, destination_component
from headwater.status.notifiers import AlertKind

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
HOOK = destination_component("my-webhook")
MAJOR, DEGRADED, OK, MAINTENANCE = (
    Status.MAJOR, Status.DEGRADED, Status.OPERATIONAL, Status.MAINTENANCE,
)  # fmt: skip


def at(secs: float) -> datetime:
    """The fake clock: ``secs`` after T0."""
    return T0 + timedelta(seconds=secs)


def config(*rules: dict[str, Any], notifiers: tuple[str, ...] = ("ops", "chat")) -> AlertsConfig:
    data: dict[str, Any] = {"notifiers": [
        {"name": n, "type": "webhook", "settings": {"url": f"http://127.0.0.1:9/{n}"}} for n in notifiers
    ]}  # fmt: skip
    if rules:
        data["rules"] = list(rules)
    return AlertsConfig.model_validate(data)


def kinds(out: list[Outgoing]) -> list[tuple[str, tuple[str, ...]]]:
    return [(o.alert.kind.value, o.notifiers) for o in out]


class Checks:
    """Drives a dispatcher like the monitor does: one observation per check."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.sent: list[tuple[float, Outgoing]] = []

    def run(self, status: Status, start: float, end: float, every: float = 2.0, **kw: Any) -> None:
        secs = start
        while secs < end:
            for out in self.dispatcher.observe(HOOK, status, at(secs), **kw):
                self.sent.append((secs, out))
            secs += every

    def kinds(self) -> list[tuple[float, str]]:
        return [(secs, out.alert.kind.value) for secs, out in self.sent]


# -- the rules


def test_default_rule_alerts_at_the_first_failing_check_and_once_per_incident() -> None:
    checks = Checks(Dispatcher(config()))
    checks.run(OK, 0, 10)
    checks.run(MAJOR, 10, 600, incident_id=42, message="HTTP 500 from the endpoint")
    assert checks.kinds() == [(10, "opened")]
    [(_, out)] = checks.sent
    assert out.notifiers == ("ops", "chat")
    alert = out.alert
    assert (alert.component, alert.status, alert.worst_status) == (HOOK, MAJOR, MAJOR)
    assert (alert.incident_id, alert.message) == ("42", "HTTP 500 from the endpoint")
    assert alert.started_at == alert.at == at(10)


def test_threshold_delays_the_alert_and_a_short_blip_sends_nothing() -> None:
    checks = Checks(Dispatcher(config({"failure_threshold_secs": "30s"})))
    checks.run(MAJOR, 0, 20)  # 20 s of failure: under the threshold
    checks.run(OK, 20, 40)
    assert checks.sent == []  # no alert, and no recovery notice for an unalerted blip
    checks.run(DEGRADED, 40, 80)
    assert checks.kinds() == [(70, "opened")]
    assert checks.sent[0][1].alert.started_at == at(40)


def test_renotify_every_interval_while_it_lasts_and_never_with_zero() -> None:
    checks = Checks(Dispatcher(config({"renotify_secs": "1h"})))
    checks.run(MAJOR, 0, 3 * 3600 + 1, every=10)
    assert checks.kinds() == [(0, "opened"), (3600, "renotify"), (7200, "renotify"),
                              (10800, "renotify")]  # fmt: skip
    assert checks.sent[1][1].alert.started_at == at(0)

    never = Checks(Dispatcher(config({"renotify_secs": 0})))
    never.run(MAJOR, 0, 5 * 3600, every=60)
    assert never.kinds() == [(0, "opened")]


def test_recovery_notice_follows_an_alert_and_carries_the_worst_status() -> None:
    checks = Checks(Dispatcher(config()))
    checks.run(DEGRADED, 0, 10, incident_id="7", message="3 failed attempts in a row")
    checks.run(MAJOR, 10, 20, message="breaker open: HTTP 500")  # worse: still one incident
    checks.run(OK, 20, 30)
    assert checks.kinds() == [(0, "opened"), (20, "resolved")]
    resolved = checks.sent[1][1].alert
    assert resolved.kind is AlertKind.RESOLVED and resolved.incident_id == "7"
    assert (resolved.status, resolved.worst_status) == (OK, MAJOR)
    assert (resolved.started_at, resolved.at) == (at(0), at(20))
    assert resolved.message == ("Destination my-webhook is operational again after 20s (major "
                                "outage at worst). The last evidence was: breaker open: HTTP 500")  # fmt: skip
    checks.run(MAJOR, 40, 42)  # the next failure is a new incident: alerted again
    assert checks.kinds()[-1] == (40, "opened")


def test_no_recovery_notice_when_the_rule_says_so() -> None:
    checks = Checks(Dispatcher(config({"send_recovery": False})))
    checks.run(MAJOR, 0, 10)
    checks.run(OK, 10, 20)
    assert checks.kinds() == [(0, "opened")]


def test_maintenance_silences_alerts() -> None:
    checks = Checks(Dispatcher(config({"failure_threshold_secs": 10})))
    checks.run(MAINTENANCE, 0, 3600)
    assert checks.sent == []
    # failing right before a window, then the window: the threshold's clock stops
    checks.run(MAJOR, 3600, 3606)
    checks.run(MAINTENANCE, 3606, 7200)
    checks.run(OK, 7200, 7210)
    assert checks.sent == []
    checks.run(MAJOR, 7210, 7230)
    assert checks.kinds() == [(7220, "opened")]


def test_an_alerted_incident_is_not_renotified_in_maintenance_but_its_recovery_is_sent() -> None:
    checks = Checks(Dispatcher(config({"renotify_secs": 600})))
    checks.run(MAJOR, 0, 10, incident_id=3)
    checks.run(MAINTENANCE, 10, 3600)
    assert checks.kinds() == [(0, "opened")]
    checks.run(OK, 3600, 3610)
    assert checks.kinds() == [(0, "opened"), (3600, "resolved")]
    assert checks.sent[1][1].alert.incident_id == "3"


def test_tick_sends_what_is_due_between_observations() -> None:
    dispatcher = Dispatcher(config({"failure_threshold_secs": 5, "renotify_secs": 60}))
    assert dispatcher.observe(HOOK, MAJOR, at(0)) == []
    assert dispatcher.tick(at(4)) == []
    assert kinds(dispatcher.tick(at(5))) == [("opened", ("ops", "chat"))]
    assert dispatcher.tick(at(30)) == []
    assert kinds(dispatcher.tick(at(65))) == [("renotify", ("ops", "chat"))]
    assert kinds(dispatcher.observe(HOOK, OK, at(70))) == [("resolved", ("ops", "chat"))]
    assert dispatcher.tick(at(5000)) == []  # nothing is failing


def test_incidents_are_kept_or_named_and_a_new_one_is_alerted() -> None:
    dispatcher = Dispatcher(config())
    [opened] = dispatcher.observe(HOOK, MAJOR, at(0))  # no incident given: one is named
    assert opened.alert.incident_id == "destination:my-webhook@2024-05-01T10:00:00.000Z"
    assert opened.alert.incident_title == "Destination my-webhook: Major outage"
    dispatcher.observe(HOOK, OK, at(5))
    [first] = dispatcher.observe(HOOK, MAJOR, at(10), incident_id=1, incident_title="Webhook down")
    assert dispatcher.observe(HOOK, MAJOR, at(12)) == []  # the incident is remembered
    [second] = dispatcher.observe(HOOK, MAJOR, at(14), incident_id=2)  # the store opened another
    assert (first.alert.incident_id, first.alert.incident_title) == ("1", "Webhook down")
    assert second.alert.kind is AlertKind.OPENED and second.alert.incident_id == "2"
    assert second.alert.started_at == at(14)


def test_rules_match_components_by_name_id_or_pattern_and_route_to_their_notifiers() -> None:
    dispatcher = Dispatcher(config(
        {"components": ["Destination *"], "notifiers": ["chat"]},
        {"components": ["tracking-api"], "notifiers": ["ops", "chat"], "failure_threshold_secs": 60},
    ))  # fmt: skip
    assert kinds(dispatcher.observe(HOOK, MAJOR, at(0))) == [("opened", ("chat",))]
    assert dispatcher.observe(DESTINATIONS, MAJOR, at(0)) == []  # "Destinations (routing)"
    assert dispatcher.observe(TRACKING_API, MAJOR, at(0)) == []
    assert kinds(dispatcher.observe(TRACKING_API, MAJOR, at(60))) == [("opened", ("ops", "chat"))]


def test_the_first_matching_rule_decides_for_a_notifier() -> None:
    dispatcher = Dispatcher(config(
        {"components": ["*"], "notifiers": ["chat"], "failure_threshold_secs": 0},
        {"components": ["destination:*"], "notifiers": ["*"], "failure_threshold_secs": 30},
    ))  # fmt: skip
    assert dispatcher.routes(HOOK)[1][1] == ("ops",)  # chat is the first rule's
    checks = Checks(dispatcher)
    checks.run(MAJOR, 0, 60)
    checks.run(OK, 60, 62)
    assert [(secs, o.alert.kind.value, o.notifiers) for secs, o in checks.sent] == [
        (0, "opened", ("chat",)),
        (30, "opened", ("ops",)),
        (60, "resolved", ("chat", "ops")),  # one notice, to both
    ]


def test_no_notifiers_no_alerts_and_a_naive_clock_is_refused() -> None:
    dispatcher = Dispatcher(AlertsConfig())
    assert dispatcher.observe(HOOK, MAJOR, at(0)) == []
    with pytest.raises(ValueError, match="has no time zone"):
        dispatcher.observe(HOOK, MAJOR, datetime(2024, 5, 1, 10))


# -- the settings


def fault(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        AlertsConfig.model_validate(data)
    [error] = caught.value.errors()
    return str(error["msg"]).removeprefix("Value error, ")


def notifier(type_: str, **settings: Any) -> dict[str, Any]:
    return {"notifiers": [{"name": "n", "type": type_, "settings": settings}]}


MAIL = {"host": "smtp.example.com", "from": "alerts@example.com", "to": ["ops@example.com"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            notifier("pager"),
            "alerts.notifiers[0].type: unknown notifier type 'pager'; the types are email, slack, webhook",
        ),
        (
            notifier("webhook", url="ftp://x"),
            "alerts.notifiers[0].settings.url: 'ftp://x' is not an http:// or https:// URL",
        ),
        (notifier("webhook"), "alerts.notifiers[0].settings.url: required setting is missing"),
        (
            notifier("webhook", url="https://x.example", secret="s"),
            "alerts.notifiers[0].settings.secret: unknown setting for a webhook notifier",
        ),
        (
            notifier("webhook", url="https://x.example", headers={"X-Headwater-Signature": "x"}),
            "alerts.notifiers[0].settings.headers: header 'X-Headwater-Signature' is set by Headwater and cannot be overridden",
        ),
        (
            notifier("webhook", url="https://x.example", timeout_secs=0),
            "alerts.notifiers[0].settings.timeout_secs: Input should be greater than 0",
        ),
        (
            notifier("slack", url="https://user:pw@hooks.slack.com/x"),
            "alerts.notifiers[0].settings.url: not an http:// or https:// URL without user:password@; copy the incoming webhook's URL from Slack, e.g. 'https://hooks.slack.com/services/T000/B000/XXX'",
        ),
        (
            notifier("email", **{**MAIL, "to": []}),
            "alerts.notifiers[0].settings.to: List should have at least 1 item after validation, not 0",
        ),
        (
            notifier("email", **{**MAIL, "to": ["ops"]}),
            "alerts.notifiers[0].settings.to: 'ops' is not an e-mail address; write e.g. 'ops@example.com' or 'Headwater <alerts@example.com>'",
        ),
        (
            notifier("email", **{**MAIL, "from": "a@b.c\nBcc: x@y.z"}),
            "alerts.notifiers[0].settings.from: 'a@b.c\\nBcc: x@y.z' contains a line break",
        ),
        (
            notifier("email", **{**MAIL, "host": "smtp.example.com:587"}),
            "alerts.notifiers[0].settings.host: 'smtp.example.com:587': write the host name alone and the port in 'port'",
        ),
        (
            notifier("email", **{**MAIL, "security": "tls"}),
            "alerts.notifiers[0].settings.security: Input should be 'starttls', 'ssl' or 'plain'",
        ),
        (
            notifier("email", **{**MAIL, "username": "u"}),
            "alerts.notifiers[0].settings.password: required with a username",
        ),
        (
            notifier("email", **{**MAIL, "security": "plain", "username": "u", "password": "p"}),
            "alerts.notifiers[0].settings.security: 'plain' would send the password unencrypted; use 'starttls' or 'ssl' with a username and password",
        ),
        (
            {"notifiers": [{"name": "Ops", "type": "slack"}]},
            "String should match pattern '^[a-z0-9][a-z0-9_-]{0,62}$'",
        ),
        (
            {"rules": [{"renotify_secs": "soon"}]},
            "'soon' is not a duration; write a number with a unit, e.g. '30s', '1h' or '7d'",
        ),
        ({"rules": [{"failure_threshold_secs": -1}]}, "Input should be greater than or equal to 0"),
        ({"rules": [{"notifiers": [""]}]}, "an empty name matches nothing; write a name or '*'"),
        ({"rules": [{"when": "always"}]}, "Extra inputs are not permitted"),
    ],
)
def test_settings_errors_name_the_field(data: dict[str, Any], message: str) -> None:
    assert fault(data) == message


def test_rules_must_name_notifiers_that_exist() -> None:
    data = {
        **notifier("webhook", url="https://x.example"),
        "rules": [{"notifiers": ["n", "pager"]}],
    }
    assert fault(data) == (
        "alerts.rules[0].notifiers[1]: no notifier is named 'pager'; the notifiers are n"
    )
    assert fault({"rules": [{"notifiers": ["ops"]}]}) == (
        "alerts.rules[0].notifiers[0]: no notifier is named 'ops'; "
        "the notifiers are none are declared under alerts.notifiers"
    )


def test_check_alerts_reports_every_fault_one_per_line() -> None:
    # built without validation, as the workspace's own check would see it
    config = AlertsConfig.model_construct(
        notifiers=[NotifierConfig(name=name, type="webhook", settings={"url": "https://x.example"})
                   for name in ("a", "a")],
        rules=[AlertRule(notifiers=["b"])],
    )  # fmt: skip
    with pytest.raises(ValueError, match="two notifiers") as caught:
        check_alerts(config, where="workspace.alerts")
    assert str(caught.value).splitlines() == [
        "workspace.alerts.notifiers[1].name: 'a' is used by two notifiers",
        "workspace.alerts.rules[0].notifiers[0]: no notifier is named 'b'; the notifiers are a",
    ]


def test_defaults() -> None:
    empty = AlertsConfig()
    assert empty.notifiers == []
    [rule] = empty.rules
    assert (rule.components, rule.notifiers) == (["*"], ["*"])
    assert (rule.failure_threshold_secs, rule.renotify_secs, rule.send_recovery) == (0, 3600, True)
    mail = AlertsConfig.model_validate(notifier("email", **MAIL)).notifiers[0].parsed_settings()
    assert mail.model_dump(exclude={"password"}) == {
        "host": "smtp.example.com", "port": None, "security": "starttls", "username": None,
        "from_": "alerts@example.com", "to": ["ops@example.com"], "subject_prefix": "[Headwater]",
        "timeout_secs": 10.0,
    }  # fmt: skip


def test_the_docs_example_loads_and_means_what_the_docs_say() -> None:
    text = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    config = AlertsConfig.model_validate(yaml.safe_load(block)["alerts"])
    assert [(n.name, n.type) for n in config.notifiers] == [
        ("oncall-slack", "slack"), ("pager-hook", "webhook"), ("ops-mail", "email"),
    ]  # fmt: skip
    assert [type(n.parsed_settings()).__name__ for n in config.notifiers] == [
        "SlackSettings", "WebhookSettings", "EmailSettings",
    ]  # fmt: skip
    first, second = config.rules
    assert (first.failure_threshold_secs, first.renotify_secs) == (0, 3600)
    assert (second.components, second.failure_threshold_secs, second.renotify_secs) == (
        ["Destination *"], 120, 4 * 3600,
    )  # fmt: skip
    assert Dispatcher(config).routes(HOOK)[1][1] == ("ops-mail",)
