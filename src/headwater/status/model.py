"""Components and their health, computed from live signals.

Each check gathers :class:`Signals` from the running process and :func:`evaluate` turns them
into one :class:`ComponentState` per component, with the evidence. The thresholds are the
workspace's ``status:`` section (:class:`headwater.config.workspace.StatusConfig`,
docs/status.md).

A destination's own failure (its endpoint refusing or down) is that destination's
sub-component state only; the ``destinations`` component reports whether *Headwater* routes
and delivers (workers alive, queues draining, the canary arriving), so a vendor's outage is
never shown as a Headwater outage.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from headwater.config.workspace import StatusConfig
from headwater.log.base import Replica


class Status(enum.StrEnum):
    """Statuspage's component statuses, best first."""

    OPERATIONAL = "operational"
    DEGRADED = "degraded_performance"
    PARTIAL = "partial_outage"
    MAJOR = "major_outage"
    MAINTENANCE = "under_maintenance"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    Status.OPERATIONAL: 0,
    Status.MAINTENANCE: 0,
    Status.DEGRADED: 1,
    Status.PARTIAL: 2,
    Status.MAJOR: 3,
}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=lambda s: s.severity, default=Status.OPERATIONAL)


@dataclass(frozen=True, slots=True)
class Component:
    id: str
    name: str
    description: str
    group: str | None = None  # the id of the group it belongs to


@dataclass(frozen=True, slots=True)
class ComponentState:
    component: Component
    status: Status
    reason: str  # the evidence, for incidents and alerts ("" when operational)


@dataclass(frozen=True, slots=True)
class DestinationSignal:
    name: str
    worker_alive: bool
    breaker: str  # closed | open | half_open
    consecutive_failures: int
    last_error: str | None
    backlog_events: int  # log events after the cursor (an upper bound: not all are routed)
    lag_secs: float | None  # age of the oldest event after the cursor, None when caught up


@dataclass(frozen=True, slots=True)
class CanarySignal:
    enabled: bool
    destination: str
    interval_secs: float
    last_sent_ms: int | None
    last_seen_ms: int | None  # when the newest canary arrived at its destination
    last_latency_ms: float | None
    send_error: str | None  # the Tracking API refused or did not answer the last canary
    send_failures: int  # how many canaries in a row could not be sent
    pending_since_ms: int | None  # the oldest canary sent and not seen yet


@dataclass(frozen=True, slots=True)
class ProcessSignal:
    """A child process of ``headwater serve`` (the log writer, the delivery worker)."""

    name: str
    state: str  # running | restarting | stopped
    restarts: int
    last_exit: str | None  # how the last one ended ("killed by SIGKILL")
    last_restart_ms: int | None


@dataclass(frozen=True, slots=True)
class StateSignal:
    """The shared state store (``state: {backend: postgres}``), probed at each check."""

    where: str  # host:port/database schema S
    error: str | None  # why the probe failed; None when it answered
    latency_ms: float | None  # the probe's round trip when it answered
    down_since_ms: int | None = None
    nodes: list[tuple[str, str, float]] = field(default_factory=list)
    """Nodes that heartbeat recently (gateway and worker nodes on shared state): name, role
    and their last heartbeat's age in seconds."""


@dataclass(frozen=True, slots=True)
class Signals:
    now_ms: int
    log_refusing: str | None
    commit_latency_ms: float
    destinations: list[DestinationSignal] = field(default_factory=list)
    canary: CanarySignal | None = None
    processes: list[ProcessSignal] = field(default_factory=list)
    state: StateSignal | None = None  # None: the state is in the data directory
    log_replicas: tuple[Replica, ...] = ()  # a JetStream stream's copies, leader first


RECENT_RESTART_SECS = 600.0
"""A process restarted this recently shows as degraded, with its restart count."""


TRACKING_API = Component(
    "tracking-api", "Tracking API", "Accepts events from SDKs at /v1 (the canary's requests)"
)
INGESTION = Component(
    "sources", "Sources (ingestion)", "Stores accepted events durably in the event log"
)
DESTINATIONS = Component(
    "destinations", "Destinations (routing)", "Routes events and runs delivery to destinations"
)
MANAGEMENT_API = Component("management-api", "Management API", "The /api management endpoints")
STATE_STORE = Component(
    "state", "State store (PostgreSQL)",
    "Delivery positions and outcomes, flow counts and tracking-plan results, shared by nodes",
)  # fmt: skip
NODES = Component(
    "nodes", "Nodes",
    "The gateway and worker nodes sharing the state (worker nodes share the destinations), "
    "by their heartbeats",
)  # fmt: skip
REPLICA_SILENT_SECS = 5.0
"""A stream copy its leader has not heard from for this long is lost for now (the servers'
own ``current`` flag flips only after about 10 s)."""
NODE_SILENT_SECS = 10.0
"""A node whose last heartbeat is older than this (a lease's life) is down."""
STATE_SLOW_MS = 1000.0
"""A state store answering a trivial query slower than this shows as degraded."""
PROCESSES = Component(
    "processes", "Processes", "The processes of `headwater serve`, restarted when they die"
)
PROCESS_ROLES = {
    "writer": "The event log's writer: commits accepted events before they are acknowledged",
    "worker": "The delivery worker: reads the log and delivers to destinations",
}


MEANWHILE = {
    "worker": "; accepted events wait in the log and are delivered once it runs",
    "writer": "; the Tracking API answers 503 + Retry-After meanwhile (SDKs retry)",
}


def process_component(name: str) -> Component:
    about = PROCESS_ROLES.get(name, f"The {name} process")
    return Component(f"process:{name}", f"Process {name}", about, group=PROCESSES.id)


def destination_component(name: str) -> Component:
    return Component(f"destination:{name}", f"Destination {name}", f"Delivery to {name}",
                     group=DESTINATIONS.id)  # fmt: skip


def components(
    destinations: list[str], processes: list[str] | None = None, shared_state: bool = False
) -> list[Component]:
    """Every component, in display order."""
    found = [TRACKING_API, INGESTION, DESTINATIONS,
             *(destination_component(d) for d in destinations), MANAGEMENT_API]  # fmt: skip
    if shared_state:
        found += [STATE_STORE, NODES]
    if processes:
        found += [PROCESSES, *(process_component(p) for p in processes)]
    return found


def evaluate(signals: Signals, config: StatusConfig) -> list[ComponentState]:
    """The state of every component from one set of signals."""
    states = [_tracking_api(signals), _ingestion(signals, config)]
    states.append(_routing(signals, config))
    states += [_destination(d, config) for d in signals.destinations]
    states.append(ComponentState(MANAGEMENT_API, Status.OPERATIONAL, ""))
    if signals.state is not None:
        states.append(_state_store(signals.state, signals.now_ms))
        if signals.state.error is None:
            states.append(_nodes(signals.state))
    if signals.processes:
        own = [_process(p, signals.now_ms) for p in signals.processes]
        status = worst([p.status for p in own])
        reasons = "; ".join(p.reason for p in own if p.reason)
        states += [ComponentState(PROCESSES, status, reasons), *own]
    return states


def _state_store(state: StateSignal, now_ms: int) -> ComponentState:
    if state.error is not None:
        since = ""
        if state.down_since_ms is not None:
            since = f" for {max(0, now_ms - state.down_since_ms) // 1000} s"
        return ComponentState(
            STATE_STORE, Status.MAJOR,
            f"PostgreSQL at {state.where} does not answer{since} ({state.error}); delivery "
            "waits to record outcomes and resumes when it is back; accepted events wait in "
            "the log",
        )  # fmt: skip
    if state.latency_ms is not None and state.latency_ms > STATE_SLOW_MS:
        return ComponentState(
            STATE_STORE, Status.DEGRADED,
            f"PostgreSQL at {state.where} takes {state.latency_ms:.0f} ms to answer "
            f"(threshold {STATE_SLOW_MS:.0f} ms)",
        )  # fmt: skip
    return ComponentState(STATE_STORE, Status.OPERATIONAL, "")


def _nodes(state: StateSignal) -> ComponentState:
    down = [(n, role) for n, role, age in state.nodes if age > NODE_SILENT_SECS]
    ages = {n: age for n, _, age in state.nodes}
    live = [role for n, role, age in state.nodes if age <= NODE_SILENT_SECS]
    counted = f"{live.count('worker')} worker node(s), {live.count('gateway')} gateway node(s)"
    if not down:
        return ComponentState(NODES, Status.OPERATIONAL, f"{counted} live" if live
                              else "no node has written a heartbeat yet")  # fmt: skip
    said = ", ".join(f"{n} (last heartbeat {ages[n]:.0f} s ago)" for n, _ in down)
    workers_down = any(role == "worker" for _, role in down)
    if workers_down and "worker" not in live:
        return ComponentState(NODES, Status.MAJOR, f"no worker node is live: {said}; accepted "
                              "events wait in the log")  # fmt: skip
    if workers_down:
        return ComponentState(NODES, Status.DEGRADED, f"node(s) down: {said}; the live worker "
                              f"node(s) took over their destinations ({counted} live)")  # fmt: skip
    return ComponentState(NODES, Status.DEGRADED, f"gateway node(s) down: {said}; the "
                          f"balancer sends their requests to others ({counted} live)")  # fmt: skip


def _process(p: ProcessSignal, now_ms: int) -> ComponentState:
    component = process_component(p.name)
    restarts = f"restarted {p.restarts} time(s) since start; last exit: {p.last_exit}"
    if p.state != "running":
        meanwhile = MEANWHILE.get(p.name, "")
        return ComponentState(
            component, Status.MAJOR,
            f"the {p.name} process died ({p.last_exit}) and is being restarted{meanwhile}",
        )  # fmt: skip
    recent = p.last_restart_ms is not None and now_ms - p.last_restart_ms < (
        RECENT_RESTART_SECS * 1000
    )
    if recent:
        return ComponentState(component, Status.DEGRADED, f"the {p.name} process was {restarts}")
    return ComponentState(component, Status.OPERATIONAL, "")


def _tracking_api(signals: Signals) -> ComponentState:
    canary = signals.canary
    if canary is not None and canary.enabled and canary.send_error:
        status = Status.MAJOR if canary.send_failures >= 2 else Status.DEGRADED
        return ComponentState(
            TRACKING_API, status,
            f"{canary.send_failures} canary request(s) in a row failed: {canary.send_error}",
        )  # fmt: skip
    if signals.log_refusing is not None:
        return ComponentState(
            TRACKING_API, Status.PARTIAL,
            f"answering 503 + Retry-After: the log refuses writes ({signals.log_refusing}); "
            "SDKs keep their events and retry",
        )  # fmt: skip
    return ComponentState(TRACKING_API, Status.OPERATIONAL, "")


def _ingestion(signals: Signals, config: StatusConfig) -> ComponentState:
    refusing = signals.log_refusing
    if refusing in ("writer_failed", "disk_full", "disk_budget", "jetstream_unavailable",
                    "jetstream_full"):  # fmt: skip
        return ComponentState(INGESTION, Status.MAJOR, f"the event log refuses writes: {refusing}")
    if refusing is not None:
        return ComponentState(
            INGESTION, Status.PARTIAL, f"the event log refuses writes: {refusing}"
        )
    silent = [r for r in signals.log_replicas
              if not r.leader and (r.offline or r.seen_secs > REPLICA_SILENT_SECS)]  # fmt: skip
    if silent:
        leader = signals.log_replicas[0].name
        said = ", ".join(
            f"{r.name} ({'offline' if r.offline else f'not heard from for {r.seen_secs:.0f} s'}"
            f", {r.lag} operation(s) behind)" for r in silent
        )  # fmt: skip
        copies = len(signals.log_replicas)
        return ComponentState(
            INGESTION, Status.DEGRADED,
            f"JetStream server(s) {said} according to the stream's leader {leader}: writes "
            f"go on while {copies // 2 + 1} of the {copies} copies answer",
        )  # fmt: skip
    if signals.commit_latency_ms > config.commit_latency_degraded_ms:
        return ComponentState(
            INGESTION, Status.DEGRADED,
            f"log commits take {signals.commit_latency_ms:.0f} ms "
            f"(threshold {config.commit_latency_degraded_ms} ms)",
        )  # fmt: skip
    return ComponentState(INGESTION, Status.OPERATIONAL, "")


def _routing(signals: Signals, config: StatusConfig) -> ComponentState:
    findings: list[tuple[Status, str]] = []
    dead = [d.name for d in signals.destinations if not d.worker_alive]
    if dead:
        findings.append((Status.MAJOR, f"delivery worker stopped for: {', '.join(dead)}"))
    canary = signals.canary
    if canary is not None and canary.enabled and canary.pending_since_ms is not None:
        waited = (signals.now_ms - canary.pending_since_ms) / 1000
        if waited > config.canary_missed_secs:
            findings.append((Status.PARTIAL, f"the canary sent {waited:.0f} s ago has not "
                             f"arrived at {canary.destination}"))  # fmt: skip
        elif waited > config.canary_late_secs:
            findings.append((Status.DEGRADED, f"the canary is late: sent {waited:.1f} s ago, "
                             f"not yet at {canary.destination}"))  # fmt: skip
    for d in signals.destinations:
        # a backlog behind a healthy destination means Headwater is not keeping up
        if d.breaker != "closed" or d.lag_secs is None:
            continue
        if d.lag_secs > config.delivery_lag_partial_secs:
            findings.append((Status.PARTIAL, f"{d.name}: oldest undelivered event waits "
                             f"{d.lag_secs:.0f} s ({d.backlog_events} behind)"))  # fmt: skip
        elif d.lag_secs > config.delivery_lag_degraded_secs:
            findings.append((Status.DEGRADED, f"{d.name}: oldest undelivered event waits "
                             f"{d.lag_secs:.0f} s ({d.backlog_events} behind)"))  # fmt: skip
    if not findings:
        return ComponentState(DESTINATIONS, Status.OPERATIONAL, "")
    status = worst([s for s, _ in findings])
    return ComponentState(DESTINATIONS, status, "; ".join(r for _, r in findings))


def _destination(d: DestinationSignal, config: StatusConfig) -> ComponentState:
    component = destination_component(d.name)
    error = f": {d.last_error}" if d.last_error else ""
    if d.breaker != "closed":
        return ComponentState(
            component, Status.MAJOR,
            f"{d.name} keeps failing; deliveries paused and probed{error}. Events wait on "
            "disk and are retried within the retry window",
        )  # fmt: skip
    if d.consecutive_failures >= config.destination_failures_degraded:
        return ComponentState(
            component, Status.DEGRADED,
            f"{d.consecutive_failures} failed attempts in a row{error}",
        )  # fmt: skip
    return ComponentState(component, Status.OPERATIONAL, "")
