"""The workspace model: what ``--config workspace.yaml`` declares.

Every option is declared once here, with its type, default and description; the docs in
``docs/configuration.md`` follow this file. Loading turns YAML and validation faults into a
:class:`~headwater.errors.ConfigError` whose message names the field, e.g.
``sources[1].write_key: ...``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from headwater.config.units import ByteSize, Seconds
from headwater.config.urls import field_path
from headwater.engage.config import audience_events, check_audiences, planned_events, source_of
from headwater.errors import ConfigError, MappingError
from headwater.log.base import DEDUPE_WINDOW_SECS
from headwater.mapping.actions import ActionConfig
from headwater.naming import NAME_PATTERN, check_known
from headwater.processor.filters import FilterList
from headwater.processor.protocols.plans import TrackingPlanConfig, check_tracking_plans
from headwater.processor.transforms import TransformationConfig
from headwater.status.config import AlertsConfig
from headwater.unify.config import SpaceConfig

WRITE_KEY_PATTERN = r"^[A-Za-z0-9_-]{8,128}$"
RESERVED_NAME = "headwater-canary"  # the canary's source and built-in destination
FILE_OVERHEAD = 1.6  # the log's files per byte of payload (framing, id index, SQLite pages)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Model):
    """A source: one app or site sending events with its own write key."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case name, unique in the workspace: letters, digits, '-' and '_'."""

    write_key: Annotated[str | None, Field(pattern=WRITE_KEY_PATTERN)] = None
    """The key SDKs send. Generated at first start (and printed once) when absent."""

    enabled: bool = True
    """A disabled source answers 401 ``source_disabled`` and stores nothing."""

    cors_origins: list[str] = ["*"]
    """Browser origins allowed to send (``*`` for any), e.g. ``https://shop.example.com``."""

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(
                    f"{origin!r} is not an origin; write '*' or a scheme and host, "
                    "e.g. 'https://shop.example.com'"
                )
        return [o.rstrip("/") for o in origins]


SQLITE_ONLY_LOG_SETTINGS = (
    "durability",
    "writer",
    "segment_max_bytes",
    "segment_max_age_secs",
    "disk_budget_bytes",
    "min_free_disk_bytes",
    "max_pending_records",
)


class LogConfig(_Model):
    """The durable event log: embedded SQLite (the default) or a NATS JetStream cluster."""

    backend: Literal["sqlite", "jetstream"] = "sqlite"
    """``sqlite``: files in the data directory, one machine. ``jetstream``: a stream on a NATS
    JetStream cluster (docs/scale-out.md), for several machines or no single point of loss."""

    servers: list[str] = []
    """JetStream only: the NATS servers' URLs (``nats://10.0.0.1:4222``); any one of them is
    enough to join the cluster, list them all so a start-up survives one being down."""

    replicas: int = Field(default=3, ge=1, le=5)
    """JetStream only: copies of every event (3 = an event acknowledged with a 2xx survives
    the loss of any one server)."""

    stream: str = Field(default="headwater", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """JetStream only: the stream's name (one per workspace), also its subjects' prefix."""

    durability: Literal["fsync", "os"] = "fsync"
    """``fsync``: a 2xx means the event is on disk (survives power loss). ``os``: it is in the
    operating system's cache (survives a crash of Headwater, not of the machine)."""

    writer: Literal["process", "thread"] = "process"
    """Where the log's writer runs: a child process (no GIL shared with HTTP; faster single
    calls) or a thread of the server process (one process fewer)."""

    retention_max_age_secs: Seconds = Field(default=7 * 86400, gt=0)
    """Segments whose newest event is older than this are dropped."""

    retention_max_bytes: ByteSize = Field(default=10 * 1000**3, gt=0)
    """The oldest segments are dropped while the log's payloads exceed this."""

    segment_max_bytes: ByteSize = Field(default=64 * 1024**2, gt=0)
    """A new segment starts when the current one holds this many payload bytes."""

    segment_max_age_secs: Seconds = Field(default=3600, gt=0)
    """A new segment starts when the current one is this old (retention granularity)."""

    disk_budget_bytes: ByteSize | None = Field(default=None, gt=0)
    """Hard cap on the log's files; past it the Tracking API answers 503 + Retry-After until
    retention or an operator frees space. Default: none (``min_free_disk_bytes`` still
    protects the disk). The files take about 1.6x the payloads that retention counts."""

    min_free_disk_bytes: ByteSize = Field(default=64 * 1024**2, ge=0)
    """Writes are refused (503) when the disk has less free space than this."""

    max_write_latency_ms: int = Field(default=2000, gt=0)
    """Writes are refused (503) while commits take longer than this."""

    max_pending_records: int = Field(default=200_000, gt=0)
    """Writes are refused (503) while this many records wait for the writer."""

    @model_validator(mode="after")
    def _check_backend(self) -> LogConfig:
        if self.backend == "sqlite":
            if self.servers:
                raise ValueError("servers is for backend: jetstream; remove it or add "
                                 "'backend: jetstream'")  # fmt: skip
            return self
        if not self.servers:
            raise ValueError("backend jetstream needs servers, e.g. "
                             "servers: [nats://127.0.0.1:4222]")  # fmt: skip
        for url in self.servers:
            if not re.fullmatch(r"(nats|tls)://[^\s/]+(:\d+)?", url):
                raise ValueError(f"servers: {url!r} is not a NATS URL; write "
                                 "nats://HOST:PORT (or tls://HOST:PORT)")  # fmt: skip
        fields = type(self).model_fields
        sqlite_only = [name for name in SQLITE_ONLY_LOG_SETTINGS  # set to other than the default
                       if getattr(self, name) != fields[name].default]  # fmt: skip
        if sqlite_only:
            raise ValueError(
                f"{', '.join(sqlite_only)}: only for backend sqlite. On JetStream every event is "
                "on a quorum of servers before its 2xx, and the servers' own limits "
                "(jetstream.max_file_store) bound the disk; remove these settings"
            )
        return self

    def warnings(self) -> list[str]:
        """Settings that are valid but will probably hurt; printed at start-up."""
        if self.backend == "jetstream" and self.retention_max_age_secs < DEDUPE_WINDOW_SECS:
            return [
                f"log.retention_max_age_secs ({self.retention_max_age_secs:,.0f}) is under 24 h: "
                "JetStream's duplicate window cannot outlive the stream's max_age, so retried "
                "events are deduplicated only within that time"
            ]
        budget = self.disk_budget_bytes
        if budget is not None and budget < FILE_OVERHEAD * self.retention_max_bytes:
            return [
                f"log.disk_budget_bytes ({budget:,}) is below what retention keeps on disk "
                f"(about {FILE_OVERHEAD}x log.retention_max_bytes = "
                f"{int(FILE_OVERHEAD * self.retention_max_bytes):,} bytes): once the log fills "
                "its budget, the Tracking API answers 503 until retention by age frees "
                "space. Lower log.retention_max_bytes or raise the budget."
            ]
        return []


class GatewayConfig(_Model):
    """The Tracking API."""

    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    """Peers whose ``X-Forwarded-For`` is believed when setting ``context.ip`` (CIDRs)."""

    public_url: str | None = None
    """The URL SDKs reach this server at, for the analytics.js settings endpoint
    (``apiHost``). Default: taken from each request's Host header."""

    rejection_samples: int = Field(default=20, ge=1, le=1000)
    """How many recent rejections are kept per source and reason."""

    headers_timeout_secs: float = Field(default=10.0, gt=0, le=600)
    """A request's line and headers must arrive within this long of its first byte (or of
    the connection opening); else 408 and the connection is closed (slowloris clients)."""

    body_timeout_secs: float = Field(default=30.0, gt=0, le=600)
    """A request's body must arrive within this long of its headers; else 408 and the
    connection is closed."""


class DeliveryConfig(_Model):
    """How the delivery engine treats one destination (every field has a default)."""

    retry_window_secs: Seconds = Field(default=4 * 3600, gt=0)
    """Retryable failures (timeouts, connection errors, 408, 429, 5xx) are retried until this
    long after the event was received; then the event goes to the dead letter store."""

    timeout_secs: float = Field(default=10.0, gt=0, le=300)
    """A request without a complete answer after this long counts as a retryable failure."""

    concurrency: int = Field(default=8, ge=1, le=256)
    """Requests in flight at once. With 1, events arrive in log order."""

    rate_limit_per_sec: float | None = Field(default=None, gt=0)
    """At most this many requests a second (token bucket). Default: no limit."""

    batch_max_events: int | None = Field(default=None, ge=1)
    """Events per request; default: the destination's own (1 for webhook, 100 for segment),
    at most what the destination accepts."""

    batch_max_bytes: ByteSize | None = Field(default=None, gt=0, le=64 * 1024**2)
    """Payload bytes per request, at most 64 MiB; default: the destination's own (500 KB,
    450 KB for segment)."""

    backoff_base_secs: float = Field(default=1.0, gt=0)
    """The first retry waits about this long; each further one doubles it (with jitter)."""

    backoff_max_secs: float = Field(default=600.0, gt=0)
    """The longest wait between two retries of one batch."""

    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failures that open the circuit breaker: nothing more is sent but one
    probe at a time until the destination answers again."""

    breaker_probe_secs: float = Field(default=1.0, gt=0)
    """The wait before the first probe; it doubles after each failed probe."""

    breaker_max_probe_secs: float = Field(default=60.0, gt=0)
    """The longest wait between two probes."""


class DestinationConfig(_Model):
    """A destination: where the events of some sources are delivered."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case name, unique in the workspace. Events' ``integrations`` may name it."""

    type: str
    """The kind of destination: ``webhook``, ``segment``, ``devsink``, ``http``, ``amplitude``,
    ``mixpanel``, ``ga4``, ``braze``, ``customerio``, ``hubspot``, ``intercom``, ``slack``
    (docs/destinations.md) or ``function`` (a destination function, docs/functions.md)."""

    sources: Annotated[list[str], Field(min_length=1)]
    """The sources whose events go to this destination."""

    enabled: bool = True
    """A disabled destination receives nothing; its events are recorded as filtered."""

    settings: dict[str, Any] = Field(default_factory=dict)
    """The type's own settings (docs/destinations.md), checked when the workspace loads."""

    delivery: DeliveryConfig = DeliveryConfig()

    filters: FilterList = []
    """Destination filters (docs/fql.md): ``if`` (FQL or ``all``) and actions ``DROP``,
    ``SAMPLE``, ``DROP_PROPERTIES``, ``ALLOW_PROPERTIES``; at most 10."""

    actions: list[ActionConfig] | None = None
    """For destinations that map events (``http``; docs/mapping.md): change, disable or add
    to the type's preset actions. Absent: the presets as they are."""


class StateConfig(_Model):
    """Where Headwater keeps its state beside the log: SQLite files in the data directory (the
    default) or a schema in a PostgreSQL database that every node shares (docs/scale-out.md).
    The delivery store (positions, retries, ledger, dead letters, replays), the ingest flow
    counts, the protocols store, tokens, the audit trail, profiles, the warehouse sync
    history, the status page's components, incidents, uptime and maintenance, and the
    console sessions move to PostgreSQL."""

    backend: Literal["sqlite", "postgres"] = "sqlite"

    dsn: str | None = None
    """``postgres``: the database, e.g. ``postgresql://headwater@10.0.0.5:5432/headwater``,
    without a password."""

    password_env: str | None = None
    """``postgres``: the environment variable holding the password (or use ``PGPASSWORD``
    or ``~/.pgpass``); a password is never written in the workspace file."""

    schema_name: str = Field(default="headwater", alias="schema",
                             pattern=r"^[a-z_][a-z0-9_]{0,62}$")  # fmt: skip
    """``postgres``: the schema holding this workspace's tables (created if missing), so one
    database can serve several workspaces."""

    reconnect_secs: Seconds = Field(default=60, gt=0)
    """``postgres``: how long a call waits for PostgreSQL to come back before it fails (the
    delivery workers then keep trying; the log keeps accepting meanwhile)."""

    @model_validator(mode="after")
    def _check_backend(self) -> StateConfig:
        if self.backend == "sqlite":
            if self.dsn is not None or self.password_env is not None:
                raise ValueError("dsn and password_env are for backend: postgres; remove them "
                                 "or add 'backend: postgres'")  # fmt: skip
            return self
        if not self.dsn:
            raise ValueError("backend postgres needs dsn, e.g. "
                             "'postgresql://headwater@127.0.0.1:5432/headwater'")  # fmt: skip
        if _dsn_has_password(self.dsn):
            raise ValueError("dsn: remove the password; name the environment variable holding "
                             "it in password_env (or use PGPASSWORD / ~/.pgpass)")  # fmt: skip
        return self


class WarehouseConfig(_Model):
    """A warehouse: every event of some sources in SQL, in Segment's schema
    (docs/warehouses.md)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case name, unique among the warehouses."""

    type: Literal["duckdb", "postgres"] = "duckdb"
    """``duckdb``: an embedded file; ``postgres``: a PostgreSQL database, loaded with COPY."""

    path: str | None = None
    """``duckdb``: the file, relative to the data directory unless absolute. Default:
    ``warehouses/<name>.duckdb`` in the data directory."""

    dsn: str | None = None
    """``postgres``: a libpq connection string or URL, e.g.
    ``postgresql://loader@127.0.0.1:5432/analytics``, without a password."""

    password_env: str | None = None
    """``postgres``: the environment variable holding the password (or use ``PGPASSWORD``
    or ``~/.pgpass``); a password is never written in the workspace file."""

    sources: Annotated[list[str], Field(min_length=1)]
    """The sources loaded; each gets a schema named after it."""

    sync_interval: Seconds = Field(default=300, ge=1)
    """How often a sync starts (e.g. ``5m``); ``headwater warehouse sync`` starts one now."""

    tables: list[str] | None = None
    """Selective sync: load only these tables (e.g. ``[tracks, identifies, users,
    order_completed]``). Default: every table."""

    exclude_events: list[str] = []
    """Selective sync: track events with these names (as sent) are not loaded at all."""

    enabled: bool = True
    """A disabled warehouse is not synced; its backlog waits in the log (within retention)."""

    @model_validator(mode="after")
    def _check_target(self) -> WarehouseConfig:
        if self.type == "postgres":
            if not self.dsn:
                raise ValueError("a postgres warehouse needs dsn, e.g. "
                                 "'postgresql://loader@127.0.0.1:5432/analytics'")  # fmt: skip
            if _dsn_has_password(self.dsn):
                raise ValueError(
                    "dsn: remove the password; name the environment variable "
                    "holding it in password_env (or use PGPASSWORD / ~/.pgpass)"
                )
        elif self.dsn is not None:
            raise ValueError("dsn is for postgres warehouses; a duckdb warehouse takes path")
        return self


def _dsn_has_password(dsn: str) -> bool:
    if "://" in dsn:
        userinfo = dsn.split("://", 1)[1].split("@", 1)
        return len(userinfo) == 2 and ":" in userinfo[0]
    return "password=" in dsn.replace(" ", "")


class FunctionLimits(_Model):
    """What one call of a function may take (docs/functions.md)."""

    timeout_secs: float = Field(default=5.0, gt=0, le=300)
    """Wall-clock limit per call (per event, or per ``on_batch`` call): past it the call is
    stopped and counts as a retryable failure, as Segment's timeouts do."""

    cpu_secs: float | None = Field(default=None, gt=0, le=300)
    """CPU seconds per call (setrlimit; the worker is killed and replaced past it).
    Default: ``timeout_secs``."""

    memory_bytes: ByteSize = Field(default=512 * 1024**2, ge=64 * 1024**2)
    """Address space of each worker process (setrlimit): an allocation past it fails with
    MemoryError in the function."""

    workers: int = Field(default=1, ge=1, le=32)
    """Worker processes running this function; calls beyond them wait their turn."""


class FunctionConfig(_Model):
    """A function: Python code in a file beside the workspace (docs/functions.md)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case name, unique among functions (and, for destination functions, among
    destinations: it is the destination's name)."""

    kind: Literal["source", "destination", "insert"]
    """``source``: turns HTTP requests into events; ``destination``: receives events;
    ``insert``: changes or drops events before one destination's mapping."""

    file: str
    """The Python file, relative to the workspace file."""

    settings: dict[str, Any] = Field(default_factory=dict)
    """Passed to every handler as ``settings``; a value ``{env: NAME}`` is read from the
    server's environment variable NAME (for secrets), never from the workspace file."""

    source: str | None = None
    """Source functions: the source whose events they emit (its tracking plan and
    destinations apply)."""

    sources: list[str] = []
    """Destination functions: the sources whose events they receive."""

    destination: str | None = None
    """Insert functions: the destination they run before."""

    limits: FunctionLimits = FunctionLimits()

    delivery: DeliveryConfig | None = None
    """Destination functions: how the delivery engine treats them (retries, batching,
    concurrency), as for any destination."""

    def resolved_settings(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The settings with each ``{env: NAME}`` replaced by the variable's value."""
        out: dict[str, Any] = {}
        for key, value in self.settings.items():
            if isinstance(value, dict) and set(value) == {"env"}:
                var = str(value["env"])
                if var not in environ:
                    raise ConfigError(
                        f"functions {self.name!r}: settings.{key}: environment variable {var} "
                        "is not set; set it where Headwater runs"
                    )
                value = environ[var]
            out[key] = value
        return out


class StatusConfig(_Model):
    """Component health: how often it is checked and what counts as degraded
    (docs/status.md)."""

    check_interval_secs: float = Field(default=2.0, gt=0, le=60)
    """How often every component is checked (alerts can go out within about this long)."""

    commit_latency_degraded_ms: float = Field(default=500.0, gt=0)
    """Sources (ingestion) is degraded while log commits take longer than this on average."""

    delivery_lag_degraded_secs: float = Field(default=60.0, gt=0)
    """Destinations (routing) is degraded while a healthy destination's oldest undelivered
    event is older than this (Headwater is not keeping up)."""

    delivery_lag_partial_secs: float = Field(default=600.0, gt=0)
    """... and in partial outage past this."""

    destination_failures_degraded: int = Field(default=1, ge=1)
    """A destination is degraded after this many failed attempts in a row (its breaker
    opening makes it a major outage)."""

    canary_enabled: bool = True
    """Send a marked canary event through the Tracking API to ``canary_destination`` on a
    schedule and check that it arrives."""

    canary_interval_secs: float = Field(default=30.0, ge=1)
    """How often a canary is sent."""

    canary_destination: str | None = None
    """Where canaries go: a destination's name. Default: a built-in devsink named
    ``headwater-canary``, which the canary's source routes to only."""

    canary_late_secs: float = Field(default=5.0, gt=0)
    """Destinations (routing) is degraded while a canary is this late."""

    canary_missed_secs: float = Field(default=30.0, gt=0)
    """... and in partial outage when it has not arrived after this long."""


class WatchTarget(_Model):
    """A service Headwater watches (docs/status.md#watching-other-services)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case name; watched components are ``watch:<name>...``."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    """A status page (its base URL or its ``summary.json``), or an endpoint for ``http``."""

    type: Literal["statuspage", "http"] = "statuspage"
    """``statuspage``: every component of a Statuspage-compatible page; ``http``: up when
    a GET answers 2xx."""

    interval_secs: float = Field(default=60.0, ge=5)
    """How often it is polled."""

    timeout_secs: float = Field(default=10.0, gt=0, le=120)
    """No answer within this long counts as down."""

    slow_secs: float = Field(default=5.0, gt=0)
    """``http`` targets answering slower than this are degraded."""


class Workspace(_Model):
    """A workspace: its sources, destinations and how the process stores their events."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "default"
    sources: Annotated[list[SourceConfig], Field(min_length=1)]
    destinations: list[DestinationConfig] = []
    log: LogConfig = LogConfig()
    state: StateConfig = StateConfig()
    gateway: GatewayConfig = GatewayConfig()
    status: StatusConfig = StatusConfig()
    alerts: AlertsConfig = AlertsConfig()
    watch: list[WatchTarget] = []
    tracking_plans: list[TrackingPlanConfig] = []
    """Tracking plans and their enforcement per source (docs/tracking-plans.md)."""

    transformations: list[TransformationConfig] = []
    """Event transformations, each scoped to a source or a destination (docs/fql.md)."""

    warehouses: list[WarehouseConfig] = []
    """Warehouses loaded from the log in Segment's schema (docs/warehouses.md)."""
    spaces: list[SpaceConfig] = []
    """Unify spaces: identity resolution, profiles and computed traits (docs/unify.md)."""

    functions: list[FunctionConfig] = []
    """Source, destination and insert functions in Python (docs/functions.md)."""

    @model_validator(mode="before")
    @classmethod
    def _function_destinations(cls, data: Any) -> Any:
        """A destination function is a destination of type ``function``: it gets one here,
        so routing, delivery, the ledger and the trace treat it as any other."""
        if isinstance(data, dict) and isinstance(data.get("functions"), list):
            return with_function_destinations(data)
        return data

    @model_validator(mode="after")
    def _check_unique(self) -> Workspace:
        names: set[str] = set()
        keys: set[str] = set()
        for i, source in enumerate(self.sources):
            if source.name in names:
                raise ValueError(f"sources[{i}].name: {source.name!r} is used by two sources")
            names.add(source.name)
            if source.write_key is not None:
                if source.write_key in keys:
                    raise ValueError(
                        f"sources[{i}].write_key: the same write key is used by two sources"
                    )
                keys.add(source.write_key)
        _check_destinations(self.destinations, names)
        check_tracking_plans(self.tracking_plans, names)
        _check_transformations(self.transformations, names, {d.name for d in self.destinations})
        _check_warehouses(self.warehouses, names, shared=self.state.backend == "postgres")
        _check_spaces(self.spaces, names, {d.name for d in self.destinations},
                      self.tracking_plans)  # fmt: skip
        named = (("sources", [s.name for s in self.sources]),
                 ("destinations", [d.name for d in self.destinations]))  # fmt: skip
        for kind, names_of in named:
            for i, name in enumerate(names_of):
                if name == RESERVED_NAME:
                    raise ValueError(
                        f"{kind}[{i}].name: {RESERVED_NAME!r} is reserved for Headwater's "
                        "canary; choose another name"
                    )
        _check_functions(self.functions, names, {d.name for d in self.destinations})
        canary = self.status.canary_destination
        if canary is not None and not any(d.name == canary for d in self.destinations):
            raise ValueError(
                f"status.canary_destination: no destination is named {canary!r}; name one of "
                f"the workspace's destinations, or leave it out for the built-in devsink"
            )
        return self

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def destination(self, name: str) -> DestinationConfig | None:
        return next((d for d in self.destinations if d.name == name), None)

    def warehouse(self, name: str) -> WarehouseConfig | None:
        return next((w for w in self.warehouses if w.name == name), None)


def _check_warehouses(warehouses: list[WarehouseConfig], sources: set[str], *,
                      shared: bool) -> None:  # fmt: skip
    """Names unique, sources known; with shared state (the worker nodes take turns loading
    each warehouse) a DuckDB file named by an absolute path, the same for every node."""
    seen: set[str] = set()
    for i, warehouse in enumerate(warehouses):
        if warehouse.name in seen:
            raise ValueError(f"warehouses[{i}].name: {warehouse.name!r} is used by two warehouses")
        seen.add(warehouse.name)
        if shared and warehouse.type == "duckdb" and not Path(warehouse.path or "").is_absolute():
            raise ValueError(
                f"warehouses[{i}].path: with state on PostgreSQL the worker nodes take turns "
                f"loading {warehouse.name!r}, so they must all open one DuckDB file, and a "
                "path relative to each node's data directory is a file per node: give an "
                "absolute path that every worker opens (workers on one machine), or make it "
                'a postgres warehouse (docs/warehouses.md, "Several worker nodes")'
            )
        for j, source in enumerate(warehouse.sources):
            check_known(f"warehouses[{i}].sources[{j}]", "source", source, sources)


def _check_destinations(destinations: list[DestinationConfig], sources: set[str]) -> None:
    """Names unique, sources known, the type known and its settings valid."""
    from headwater.destinations import TYPES  # the registry imports delivery code: load late

    seen: set[str] = set()
    for i, dest in enumerate(destinations):
        where = f"destinations[{i}]"
        if dest.name in seen:
            raise ValueError(f"{where}.name: {dest.name!r} is used by two destinations")
        seen.add(dest.name)
        for j, source in enumerate(dest.sources):
            check_known(f"{where}.sources[{j}]", "source", source, sources)
        kind = TYPES.get(dest.type)
        if kind is None:
            raise ValueError(
                f"{where}.type: unknown destination type {dest.type!r}; "
                f"the types are {', '.join(sorted(TYPES))}"
            )
        try:
            settings = kind.settings_model.model_validate(dest.settings)
        except ValidationError as exc:
            faults = []
            for err in exc.errors():
                field = _field_path(("settings", *err["loc"]))
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    message = f"unknown setting for a {dest.type} destination"
                elif err["type"] == "missing":
                    message = "required setting is missing"
                faults.append(f"{where}.{field}: {message}")
            raise ValueError("\n".join(faults)) from None
        _check_actions(kind, settings, dest, where)
        batch = dest.delivery.batch_max_events
        if batch is not None and batch > kind.max_batch_events:
            raise ValueError(
                f"{where}.delivery.batch_max_events: a {dest.type} destination takes at most "
                f"{kind.max_batch_events} events per request, not {batch}"
            )


def _check_actions(kind: Any, settings: Any, dest: DestinationConfig, where: str) -> None:
    """Compile a mapped destination's actions (presets and the workspace's) once, so that a
    malformed mapping or trigger stops start-up with its place."""
    from headwater.destinations.mapped import MappedDestination

    if not issubclass(kind, MappedDestination):
        if dest.actions is not None:
            raise ValueError(
                f"{where}.actions: a {dest.type} destination has no actions (it sends events "
                "as they are); remove actions, or use a type that maps events, such as http"
            )
        return
    try:
        kind.compile_actions(settings, dest.actions, where)
    except MappingError as exc:
        raise ValueError(str(exc)) from None


def with_function_destinations(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with a ``function`` destination for each destination function not yet
    declared (a workspace passed on as JSON already has them)."""
    destinations = list(data.get("destinations") or [])
    have = {d.get("name") for d in destinations if isinstance(d, dict)}
    for f in data["functions"]:
        if not isinstance(f, dict) or f.get("kind") != "destination" or f.get("name") in have:
            continue
        destinations.append(
            {
                "name": f.get("name"),
                "type": "function",
                "sources": f.get("sources") or [],
                "settings": {"function": f.get("name")},
                **({"delivery": f["delivery"]} if f.get("delivery") else {}),
            }
        )
    return {**data, "destinations": destinations}


def _check_functions(
    functions: list[FunctionConfig], sources: set[str], destinations: set[str]
) -> None:
    seen: set[str] = set()
    for i, f in enumerate(functions):
        where = f"functions[{i}]"
        if f.name in seen:
            raise ValueError(f"{where}.name: {f.name!r} is used by two functions")
        seen.add(f.name)
        needs = {"source": "source", "destination": "sources", "insert": "destination"}[f.kind]
        if f.delivery is not None and f.kind != "destination":
            raise ValueError(f"{where}.delivery: only destination functions are delivered to")
        for field in ("source", "sources", "destination"):
            given = getattr(f, field)
            if field != needs and given:
                raise ValueError(f"{where}.{field}: a {f.kind} function takes {needs}, not {field}")
        if f.kind == "source":
            if f.source is None:
                raise ValueError(
                    f"{where}.source: a source function names the source it emits into"
                )
            check_known(f"{where}.source", "source", f.source, sources)
        elif f.kind == "destination":
            if not f.sources:
                raise ValueError(f"{where}.sources: a destination function names its sources")
            for j, source in enumerate(f.sources):
                check_known(f"{where}.sources[{j}]", "source", source, sources)
        else:
            if f.destination is None:
                raise ValueError(
                    f"{where}.destination: an insert function names the destination it runs before"
                )
            check_known(f"{where}.destination", "destination", f.destination, destinations)


def _check_transformations(
    transformations: list[TransformationConfig], sources: set[str], destinations: set[str]
) -> None:
    for i, t in enumerate(transformations):
        if t.source is not None:
            check_known(f"transformations[{i}].source", "source", t.source, sources)
        if t.destination is not None:
            check_known(f"transformations[{i}].destination", "destination", t.destination,
                        destinations)  # fmt: skip


def _check_spaces(
    spaces: list[SpaceConfig], sources: set[str], destinations: set[str],
    plans: list[TrackingPlanConfig],
) -> None:  # fmt: skip
    seen: set[str] = set()
    for i, space in enumerate(spaces):
        if space.name in seen:
            raise ValueError(f"spaces[{i}].name: {space.name!r} is used by two spaces")
        seen.add(space.name)
        for j, source in enumerate(space.sources):
            check_known(f"spaces[{i}].sources[{j}]", "source", source, sources)
        check_audiences(space.audiences, {t.key for t in space.computed_traits}, f"spaces[{i}]")
        if source_of(space.name) in sources:
            raise ValueError(f"spaces[{i}].name: the source name {source_of(space.name)!r} is "
                             f"kept for space {space.name!r}'s audience activations; rename "
                             "that source")  # fmt: skip
        known = planned_events(space.sources, plans)
        for j, audience in enumerate(space.audiences):
            if known is not None:
                for name in audience_events(audience):
                    if name not in known:
                        raise ValueError(
                            f"spaces[{i}].audiences[{j}].where: event {name!r} never reaches "
                            f"this space: the tracking plans of its sources block unplanned "
                            f"events, and none plans it (planned: {', '.join(sorted(known))})"
                        )
            for k, target in enumerate(audience.destinations):
                check_known(f"spaces[{i}].audiences[{j}].destinations[{k}].name", "destination",
                            target.name, destinations)  # fmt: skip


def _field_path(loc: tuple[int | str, ...]) -> str:
    return field_path(loc) or "(top level)"


def format_validation_error(origin: str, exc: ValidationError) -> str:
    """One line per fault, each naming the field: ``file: sources[0].name: ...``."""
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against docs/configuration.md"
        elif err["type"] == "missing":
            message = "required field is missing"
        field = _field_path(loc)
        prefixes = (
            "sources[",
            "destinations[",
            "spaces[",
            "functions[",
            "log.",
            "gateway.",
            "status.",
            "alerts.",
        )
        if message.startswith(prefixes):
            lines.extend(f"{origin}: {line}" for line in message.splitlines())
        else:
            lines.append(f"{origin}: {field}: {message}")
    return "\n".join(lines)


ENV_REF = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)\}$")
"""A value that is exactly ``${NAME}``: the environment variable NAME (how ``headwater
export`` writes secrets)."""


def expand_env(data: Any, origin: str, where: str = "") -> Any:
    """Replace each ``${NAME}`` string by the variable's value; one that is not set is an
    error naming the field and the variable."""
    if isinstance(data, dict):
        return {
            k: expand_env(v, origin, f"{where}.{k}" if where else str(k)) for k, v in data.items()
        }
    if isinstance(data, list):
        return [expand_env(v, origin, f"{where}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, str):
        found = ENV_REF.match(data)
        if found is not None:
            value = os.environ.get(found.group(1))
            if value is None:
                raise ConfigError(
                    f"{origin}: {where}: the environment variable {found.group(1)} is not set; "
                    "set it to the secret it stands for (`headwater export` names each one)"
                )
            return value
    return data


def parse_workspace(data: Any, origin: str = "workspace") -> Workspace:
    """Validate already-parsed YAML/JSON data into a Workspace or raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with 'sources:' at the top level")
    try:
        return Workspace.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(origin, exc)) from exc


def load_workspace(path: Path) -> Workspace:
    """Read and validate a workspace YAML file; every fault raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read workspace file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from exc
    workspace = parse_workspace(expand_env(data, str(path)), str(path))
    if workspace.functions:
        from headwater.functions.check import check_files  # no function code runs here

        workspace = check_files(workspace, path.parent, os.environ)
    return workspace
