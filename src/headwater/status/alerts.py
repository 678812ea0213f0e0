"""When to alert, and sending: the :class:`Dispatcher` decides, the :class:`AlertSender` sends.

The dispatcher is a pure state machine driven by explicit calls with a clock: the monitor
calls :meth:`Dispatcher.observe` with each component's status after every check (and may call
:meth:`Dispatcher.tick` in between), and gets back the alerts due, each with the notifiers it
goes to. Nothing in it sleeps, reads the time or does I/O, so its rules are tested with a
fake clock. Per component and rule it keeps one small state::

    operational ──fails──▶ failing ──threshold reached──▶ alerted ──every renotify_secs──┐
         ▲                    │                             │  ▲                          │
         │                    │ (healed: nothing sent)      │  └──────── renotify ────────┘
         └────────────────────┘◀────── healed: resolved ────┘

``under_maintenance`` silences everything: no alert is sent and the threshold's clock stops;
an incident that was alerted before the window keeps its state, so its recovery is still
announced once the window ends.

The sender sends what the dispatcher decided: each notifier on its own task and queue, so a
slow or failing receiver never delays the others, and one notifier gets its alerts in the
order they were made. Failed sends are retried (retryable failures only), logged and
counted in :attr:`AlertSender.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase

from headwater.status.config import ANY, AlertRule, AlertsConfig
from headwater.status.model import Component, Status
from headwater.status.notifiers import (
    STATUS_LABELS,
    Alert,
    AlertKind,
    Notifier,
    NotifyResult,
    human_duration,
    iso,
)

logger = logging.getLogger(__name__)

MAX_RETRY_WAIT_SECS = 60.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An alert and the notifiers (by name) it goes to."""

    alert: Alert
    notifiers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Route:
    index: int  # of the rule in the configuration
    rule: AlertRule
    notifiers: tuple[str, ...]


@dataclass(slots=True)
class _RuleState:
    opened_at: datetime | None = None  # when the ``opened`` alert was made
    last_sent_at: datetime | None = None  # when the newest alert was made


@dataclass(slots=True)
class _Tracked:
    """What the dispatcher knows of one component."""

    component: Component
    status: Status = Status.OPERATIONAL
    incident_id: str | None = None
    incident_title: str | None = None
    started_at: datetime | None = None  # when it left operational (the incident's start)
    clock_since: datetime | None = None  # the threshold's clock (restarts after maintenance)
    worst: Status = Status.OPERATIONAL
    message: str = ""  # the latest evidence
    url: str | None = None
    rules: dict[int, _RuleState] = field(default_factory=dict)

    def alerted(self) -> bool:
        return any(r.opened_at is not None for r in self.rules.values())

    def reset(self) -> None:
        self.incident_id = self.incident_title = self.started_at = self.clock_since = None
        self.worst = Status.OPERATIONAL
        self.rules.clear()


class Dispatcher:
    """Decides which alerts to send, with dedupe: one ``opened`` alert per incident once it
    has lasted the rule's ``failure_threshold_secs``, a ``renotify`` every ``renotify_secs``
    while it lasts, a ``resolved`` notice when it heals (only after an ``opened``), nothing
    while the component is ``under_maintenance``.

    When several rules match a component and name the same notifier, the first of them
    decides for that notifier, so no notifier hears of one incident twice.
    """

    def __init__(self, config: AlertsConfig) -> None:
        self._tracked: dict[str, _Tracked] = {}
        self.configure(config)

    def configure(self, config: AlertsConfig) -> None:
        """Rules and notifiers changed through the API: open incidents stay tracked."""
        self._rules = list(config.rules)
        self._notifier_names = tuple(n.name for n in config.notifiers)
        self._routes: dict[tuple[str, str], list[_Route]] = {}

    def observe(
        self,
        component: Component,
        status: Status | str,
        now: datetime,
        *,
        incident_id: str | int | None = None,
        incident_title: str | None = None,
        message: str = "",
        url: str | None = None,
    ) -> list[Outgoing]:
        """Record ``component``'s status at ``now`` and return the alerts now due.

        ``incident_id``/``incident_title`` name the incident the status store opened for this
        spell; give them whenever known (the last ones given are kept otherwise; without any,
        the dispatcher names the incident itself). A different ``incident_id`` while the
        component is still failing starts a new incident. ``message`` is the evidence shown
        in the alert; ``url`` a link to the incident. ``now`` is timezone-aware (UTC).
        """
        _check_clock(now)
        status = Status(status)
        tracked = self._tracked.get(component.id)
        if tracked is None:
            tracked = self._tracked[component.id] = _Tracked(component)
        tracked.component = component
        if url is not None:
            tracked.url = url
        if status is Status.OPERATIONAL:
            out = self._recover(tracked, now)
            tracked.status = status
            return out
        if status is Status.MAINTENANCE:
            tracked.status = status
            tracked.clock_since = None
            if not tracked.alerted():  # nobody was told: after the window, start afresh
                tracked.reset()
            return []
        new_id = None if incident_id is None else str(incident_id)
        if new_id is not None and tracked.incident_id not in (None, new_id):
            tracked.reset()  # the store opened another incident: alert it as new
        if tracked.started_at is None:
            tracked.started_at = now
        if tracked.clock_since is None:
            tracked.clock_since = now
        if new_id is not None:
            tracked.incident_id = new_id
        if incident_title:
            tracked.incident_title = incident_title
        if tracked.incident_id is None:
            tracked.incident_id = f"{component.id}@{iso(tracked.started_at)}"
        if status.severity > tracked.worst.severity:
            tracked.worst = status
        tracked.status = status
        if message:
            tracked.message = message
        return self._due(tracked, now)

    def tick(self, now: datetime) -> list[Outgoing]:
        """The alerts due at ``now`` for components still failing since their last
        :meth:`observe` (a threshold passed, a re-notification due)."""
        _check_clock(now)
        out: list[Outgoing] = []
        for tracked in self._tracked.values():
            if tracked.status not in (Status.OPERATIONAL, Status.MAINTENANCE):
                out += self._due(tracked, now)
        return out

    def forget(self, component_id: str) -> None:
        """Drop a component that no longer exists (a destination removed): no recovery
        notice will follow for it."""
        self._tracked.pop(component_id, None)

    def routes(self, component: Component) -> list[tuple[AlertRule, tuple[str, ...]]]:
        """The rules that apply to ``component`` and the notifiers each decides for."""
        return [(r.rule, r.notifiers) for r in self._routes_for(component)]

    # -- inside

    def _routes_for(self, component: Component) -> list[_Route]:
        key = (component.id, component.name)
        routes = self._routes.get(key)
        if routes is None:
            routes, taken = [], set[str]()
            for index, rule in enumerate(self._rules):
                if not any(
                    fnmatchcase(component.name, p) or fnmatchcase(component.id, p)
                    for p in rule.components
                ):
                    continue
                wanted = self._notifier_names if ANY in rule.notifiers else rule.notifiers
                mine = tuple(n for n in dict.fromkeys(wanted) if n not in taken)
                taken.update(mine)
                if mine:
                    routes.append(_Route(index, rule, mine))
            self._routes[key] = routes
        return routes

    def _due(self, tracked: _Tracked, now: datetime) -> list[Outgoing]:
        assert tracked.clock_since is not None  # set by observe for a failing component
        alerts: dict[Alert, list[str]] = {}
        for route in self._routes_for(tracked.component):
            state = tracked.rules.setdefault(route.index, _RuleState())
            rule = route.rule
            if state.opened_at is None:
                if (now - tracked.clock_since).total_seconds() < rule.failure_threshold_secs:
                    continue
                kind = AlertKind.OPENED
                state.opened_at = now
            elif (
                rule.renotify_secs > 0
                and state.last_sent_at is not None
                and (now - state.last_sent_at).total_seconds() >= rule.renotify_secs
            ):
                kind = AlertKind.RENOTIFY
            else:
                continue
            state.last_sent_at = now
            alerts.setdefault(self._alert(tracked, kind, now), []).extend(route.notifiers)
        return [Outgoing(alert, tuple(names)) for alert, names in alerts.items()]

    def _recover(self, tracked: _Tracked, now: datetime) -> list[Outgoing]:
        if tracked.incident_id is None:
            return []
        alerts: dict[Alert, list[str]] = {}
        for route in self._routes_for(tracked.component):
            state = tracked.rules.get(route.index)
            if state is None or state.opened_at is None or not route.rule.send_recovery:
                continue
            alert = self._alert(tracked, AlertKind.RESOLVED, now)
            alerts.setdefault(alert, []).extend(route.notifiers)
        tracked.reset()
        return [Outgoing(alert, tuple(names)) for alert, names in alerts.items()]

    def _alert(self, tracked: _Tracked, kind: AlertKind, now: datetime) -> Alert:
        assert tracked.incident_id is not None and tracked.started_at is not None
        component = tracked.component
        worst = STATUS_LABELS[tracked.worst].lower()
        if kind is AlertKind.RESOLVED:
            lasted = human_duration((now - tracked.started_at).total_seconds())
            message = f"{component.name} is operational again after {lasted} ({worst} at worst)."
            if tracked.message:
                message += f" The last evidence was: {tracked.message}"
            status = Status.OPERATIONAL
        else:
            message = tracked.message or f"{component.name} is {tracked.status.value}."
            status = tracked.status
        return Alert(
            component=component,
            kind=kind,
            status=status,
            worst_status=tracked.worst,
            incident_id=tracked.incident_id,
            incident_title=tracked.incident_title
            or f"{component.name}: {STATUS_LABELS[tracked.worst]}",
            message=message,
            started_at=tracked.started_at,
            at=now,
            url=tracked.url,
        )


def _check_clock(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"{now!r} has no time zone; pass e.g. datetime.now(UTC)")


@dataclass(frozen=True, slots=True)
class Delivery:
    """How sending one alert to one notifier ended, after any retries."""

    notifier: str
    alert: Alert
    result: NotifyResult
    attempts: int


@dataclass(slots=True)
class NotifierStats:
    """Counts for one notifier since the process started."""

    sent: int = 0
    failed: int = 0  # alerts given up on after the last attempt
    retried: int = 0  # attempts that failed and were tried again
    dropped: int = 0  # alerts not sent because the notifier's queue was full
    last_error: str | None = None


class AlertSender:
    """Sends alerts: concurrently across notifiers, in order within one, retrying
    retryable failures ``attempts`` times in all with doubling waits from ``backoff_secs``.

    :meth:`submit` queues and returns at once (for the monitor's loop); :meth:`send` sends
    and waits (for tests and the CLI). Failures are logged and counted, never raised.
    """

    def __init__(
        self,
        notifiers: Mapping[str, Notifier],
        *,
        attempts: int = 3,
        backoff_secs: float = 1.0,
        queue_max: int = 1000,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.notifiers = dict(notifiers)
        self.stats = {name: NotifierStats() for name in self.notifiers}
        self._attempts = attempts
        self._backoff_secs = backoff_secs
        self._queue_max = queue_max
        self._queues: dict[str, asyncio.Queue[Alert]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    async def send(self, outgoing: Iterable[Outgoing]) -> list[Delivery]:
        """Send now and return how each send ended (in the order of ``outgoing``)."""
        per_notifier: dict[str, list[Alert]] = {}
        for item in outgoing:
            for name in item.notifiers:
                per_notifier.setdefault(name, []).append(item.alert)

        async def one_notifier(name: str, alerts: Sequence[Alert]) -> list[Delivery]:
            return [await self._deliver(name, alert) for alert in alerts]

        done = await asyncio.gather(*(one_notifier(n, a) for n, a in per_notifier.items()))
        return [d for deliveries in done for d in deliveries]

    def submit(self, outgoing: Iterable[Outgoing]) -> None:
        """Queue for sending in the background and return at once (needs a running loop)."""
        for item in outgoing:
            for name in item.notifiers:
                queue = self._queue(name)
                try:
                    queue.put_nowait(item.alert)
                except asyncio.QueueFull:
                    stats = self.stats.setdefault(name, NotifierStats())
                    stats.dropped += 1
                    logger.error(
                        "alert to notifier %s dropped: %d alerts wait for it already",
                        name, queue.qsize(),
                    )  # fmt: skip

    async def drain(self) -> None:
        """Wait until every submitted alert has been sent or given up on."""
        await asyncio.gather(*(q.join() for q in self._queues.values()))

    async def close(self, timeout_secs: float = 5.0) -> None:
        """Give queued alerts ``timeout_secs`` to go out, then stop the workers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), timeout_secs)
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()

    # -- inside

    def _queue(self, name: str) -> asyncio.Queue[Alert]:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = asyncio.Queue(self._queue_max)
            self._workers[name] = asyncio.get_running_loop().create_task(
                self._work(name, queue), name=f"alerts:{name}"
            )
        return queue

    async def _work(self, name: str, queue: asyncio.Queue[Alert]) -> None:
        while True:
            alert = await queue.get()
            try:
                await self._deliver(name, alert)
            finally:
                queue.task_done()

    async def _deliver(self, name: str, alert: Alert) -> Delivery:
        stats = self.stats.setdefault(name, NotifierStats())
        notifier = self.notifiers.get(name)
        attempt = 0
        while True:
            attempt += 1
            if notifier is None:
                result = NotifyResult.failure(f"no notifier is named {name!r}", retryable=False)
            else:
                try:
                    result = await notifier.send(alert)
                except Exception as exc:  # a bug, not the receiver: log it whole, keep going
                    logger.exception("notifier %s failed", name)
                    result = NotifyResult.failure(f"{type(exc).__name__}: {exc}", retryable=False)
            if result.ok or not result.retryable or attempt >= self._attempts:
                break
            stats.retried += 1
            wait = self._backoff_secs * 2 ** (attempt - 1)
            if result.retry_after_secs is not None:
                wait = max(wait, result.retry_after_secs)
            await asyncio.sleep(min(wait, MAX_RETRY_WAIT_SECS))
        if result.ok:
            stats.sent += 1
        else:
            stats.failed += 1
            stats.last_error = result.reason
            logger.warning(
                "alert %s for %s (incident %s) not sent to notifier %s after %d attempt(s): %s",
                alert.kind.value, alert.component.name, alert.incident_id, name, attempt,
                result.reason,
            )  # fmt: skip
        return Delivery(name, alert, result, attempt)
