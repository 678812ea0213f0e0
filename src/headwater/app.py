"""The one place that wires the stages into a running process.

``/v1/*`` goes straight to the Tracking API (a bare ASGI app: it is the hot path);
``/api/v1/*`` and ``/api/openapi.json`` to the management API (FastAPI, admin token); every
other path to a Starlette app for health checks (``/healthz``, ``/readyz``), Prometheus
metrics (``/metrics``, unauthenticated like any exporter's: firewall it, see
docs/metrics.md), the status API and page, and the console (``/console/``). The log is
opened when the server starts and closed, after pending writes finish, when it stops.

Delivery runs where ``delivery_mode`` says (docs/architecture.md): ``process`` (what
``headwater serve`` does) starts the delivery worker as a supervised child process
(:mod:`headwater.supervisor`) and sees it through a
:class:`~headwater.delivery.remote.RemoteEngine`; ``remote`` (``--role gateway``) only sees
a worker started separately on the same data directory; ``inline`` runs the engine on this
process's event loop (tests, ``--single-process``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import orjson
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from headwater.api.app import build_api
from headwater.api.auth import Authenticator
from headwater.api.permissions import PUBLIC, Principal, declare_routes
from headwater.config.changes import ConfigService, record_pauses
from headwater.config.workspace import Workspace, parse_workspace
from headwater.console.app import Console
from headwater.console.sessions import COOKIE, Sessions, SharedSessions
from headwater.delivery.engine import DeliveryEngine
from headwater.delivery.remote import RemoteEngine
from headwater.delivery.store import SetCursor
from headwater.delivery.view import DeliveryView
from headwater.engage.activation import Activator, with_engage
from headwater.errors import LogError
from headwater.functions.host import STATS_DIR as FUNCTIONS_DIR
from headwater.functions.host import FunctionMetrics
from headwater.functions.sources import SourceFunctions
from headwater.gateway.api import Receive, Scope, Send, TrackingAPI
from headwater.gateway.normalize import iso_ms
from headwater.gateway.stats import IngestStats
from headwater.log.base import EventLog, StoredRecord
from headwater.log.notify import WakeSender
from headwater.log.sqlite import SqliteLog
from headwater.log.sqlite_process import ProcessLog
from headwater.observe.findings import Finding, identity_findings, identity_stage
from headwater.observe.service import Observer
from headwater.processor.admin import ProcessorAdmin, effective_plans
from headwater.processor.ingest import IngestPipeline
from headwater.processor.protocols_store import ProtocolsStore
from headwater.state import postgres
from headwater.state.admin_token import AdminToken, load_admin_token
from headwater.state.audit import AuditLog
from headwater.state.config import Snapshot, digest, open_config
from headwater.state.sql import StateUnavailable, first_line
from headwater.state.tokens import TokenStore
from headwater.state.workspace_history import keep_snapshot, record_workspace_load
from headwater.status.metrics import CONTENT_TYPE, Metrics
from headwater.status.model import ProcessSignal
from headwater.status.service import StatusService, keep_canary_key, with_canary
from headwater.supervisor import Child, ProcessInfo, control_socket, wake_socket, writer_info
from headwater.unify import api as profile_api
from headwater.unify.consumer import Unify, wall_ms
from headwater.warehouses.loader import Warehouses
from headwater.warehouses.view import WarehouseView

if TYPE_CHECKING:
    from headwater.log.jetstream import JetStreamLog

logger = logging.getLogger("headwater")

LOG_DIR = "log"
DELIVERY_DIR = "delivery"
PROTOCOLS_DIR = "protocols"
API_PREFIXES = ("/api/v1/", "/api/openapi.json")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WORKER_START_SECS = 60.0
WORKER_START_ATTEMPTS = 3
DeliveryMode = Literal["inline", "process", "remote"]


def _read_only(workspace: Workspace) -> str | None:
    """Why this node's API may not change the configuration (None: it may)."""
    if postgres.uses_postgres(workspace.state):
        return ("with state: {backend: postgres} every node runs the workspace file it reads, "
                "and a change made here would reach this node only; edit the file (or "
                "`headwater diff`/`export` it) and restart the nodes one by one")  # fmt: skip
    return None


class Headwater:
    """The ASGI application of one Headwater process."""

    def __init__(
        self,
        workspace: Workspace,
        data_dir: Path,
        self_url: str | None = None,
        admin_token: AdminToken | None = None,
        delivery_mode: DeliveryMode = "inline",
        log_level: str = "info",
        workspace_file: Path | None = None,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        """``workspace_file``: where ``workspace`` was read from, so a reload of the functions
        re-reads their settings (None: only their code reloads). ``now_ms``: the clock that
        identity processing (trait windows, audience exits) reads in inline mode."""
        self._now_ms = now_ms
        self.delivery_mode = delivery_mode
        self._log_level = log_level
        self.data_dir = data_dir
        # the configuration store is the source of truth; the file seeds it (config/changes.py)
        self.config_store = open_config(data_dir)
        self._seeded_from = self.config_store.snapshot()
        workspace = self._seed(workspace, workspace_file)
        self.workspace = workspace
        self._applied = workspace  # the last workspace that ran whole (_reconfigure)
        # what the process runs: the user's workspace plus the canary's source and sink
        self.running, self._canary_key = with_canary(workspace)
        # audience activations: a source per space, posted to in process (engage/activation.py)
        self._engage_keys: dict[str, str] = {}
        self.running = with_engage(self.running, self._engage_key)
        self.activator = Activator(workspace.spaces, data_dir, self._activate, workspace.state)
        self.status = StatusService(workspace, data_dir, self_url)
        self.stats = IngestStats(samples=workspace.gateway.rejection_samples)
        self.observer = Observer(workspace, data_dir, self.stats)
        self.stats.on_refuse = self.observer.recorder.refused
        self.token = admin_token or load_admin_token(data_dir)
        self.tokens = TokenStore.open(data_dir, workspace.state)
        self.tokens.follow()  # on PostgreSQL: every node's tokens, in memory
        self.auth = Authenticator(self.token, self.tokens)
        self.audit = AuditLog.open(data_dir, workspace.state)
        self.observer.audit = self.audit  # trace and diagnose cite who changed what
        base_dir = workspace_file.resolve().parent if workspace_file is not None else None
        self.config = ConfigService(self.config_store, self._reconfigure, self.audit,
                                    read_only=_read_only(workspace), base_dir=base_dir)  # fmt: skip
        # with shared state the cluster's, so a balancer need not keep a user on one node
        self.sessions = (SharedSessions(workspace.state, self.token.digest)
                         if postgres.uses_postgres(workspace.state) else Sessions())  # fmt: skip
        self.protocols = ProtocolsStore(data_dir / PROTOCOLS_DIR, state=workspace.state)
        self.admin: ProcessorAdmin | None = None
        # warehouse syncs run beside delivery (the worker process, or inline here); the
        # gateway only reads their state (the cluster's, with shared state)
        self.warehouses = WarehouseView(workspace, data_dir, lambda: self.log)
        self._loaders: Warehouses | None = None
        self.observer.stages.append(self.warehouses.trace_stages)
        self.observer.findings.append(self.warehouses.findings)
        self.profiles = profile_api.Profiles(
            workspace.spaces, data_dir, self._fetch_event, workspace.state
        )
        self._api = build_api(
            workspace, self.observer, self.auth, self._session_principal, lambda: self.admin,
            audit=self.audit, warehouse_view=self.warehouses,
            functions_dir=data_dir / FUNCTIONS_DIR, workspace_file=workspace_file,
            profiles=self.profiles, activator=self.activator, config=self.config,
        )  # fmt: skip
        self.source_functions = SourceFunctions(workspace.functions, data_dir / FUNCTIONS_DIR)
        self.log: EventLog | None = None
        self.delivery: DeliveryView | None = None
        self._engine: DeliveryEngine | RemoteEngine | None = None
        self.worker: Child | None = None
        self._wake: WakeSender | None = None
        self._delivery_started = False
        self._tracking: TrackingAPI | None = None
        self.unify: Unify | None = None  # identity processing here (inline mode only)
        self._profile_web = Starlette(
            routes=profile_api.routes(self.profiles, self._profiles_read_ok)
        )
        self.observer.stages.append(self._identity_trace)
        self.observer.findings.append(self._identity_findings)
        self.metrics = Metrics(self.stats, lambda: self.log, lambda: self.delivery)
        self.metrics.canary = self.status.canary_state
        self.metrics.registry.register(self.warehouses)
        self.metrics.registry.register(self.profiles)
        self.function_metrics = FunctionMetrics(workspace.functions, data_dir / FUNCTIONS_DIR)
        self.metrics.registry.register(self.function_metrics)
        self.console = Console(
            workspace,
            self.observer,
            self.auth,
            self.sessions,
            lambda: self.admin,
            profiles=self.profiles,
            audit=self.audit,
            warehouses=self.warehouses,
            functions_dir=data_dir / FUNCTIONS_DIR,
            activator=self.activator,
        )
        self._web = Starlette(
            exception_handlers={
                StateUnavailable: _state_unavailable,
                psycopg.OperationalError: _state_unavailable,
            },
            routes=[
                # unauthenticated like any exporter's and status page's (docs/access.md)
                *declare_routes(
                    PUBLIC,
                    [
                        Route("/healthz", self._healthz),
                        Route("/readyz", self._readyz),
                        Route("/metrics", self._metrics),
                        *self.status.routes(),
                    ],
                ),
                *self.console.routes(),
            ],
        )

    async def start(self) -> None:
        await asyncio.to_thread(record_workspace_load, self.audit, self.workspace, self.data_dir)
        config = self.workspace.log
        log: SqliteLog | ProcessLog | JetStreamLog
        if config.backend == "jetstream":
            from headwater.log.jetstream import JetStreamLog  # nats-py (~28 MB): only when used

            log = JetStreamLog(config)
            await log.open()  # fails start-up with the servers named when none answers
        else:
            backend = ProcessLog if config.writer == "process" else SqliteLog
            log = backend(self.data_dir / LOG_DIR, config)
        self.log = log
        if self._seeded_from.resources:  # the file disabled or enabled destinations since
            seeded = parse_workspace(self._seeded_from.document())  # the last run
            end = log.stats().last_offset or 0
            record_pauses(self.config_store, seeded, self.workspace, end, live=False)
        self.delivery = await self._start_delivery(log)
        self._delivery_started = True
        await self.observer.start(log, self.delivery)
        pipeline = await self._processor(self.log)
        await self.source_functions.start()  # a source function that cannot load stops start-up
        self._tracking = TrackingAPI(
            self.running.sources,
            self.log,
            self.stats,
            self.workspace.gateway,
            on_accepted=self.observer.recorder.accepted,
            processor=pipeline,
            functions=self.source_functions,
        )
        self._tracking.reconfigure(self.running.sources, self.config_store.retired_keys())
        await self.status.start(self.log, self.delivery, self, self._canary_key,
                                processes=self.process_signals)  # fmt: skip
        self.activator.start()

    def _seed(self, workspace: Workspace, workspace_file: Path | None) -> Workspace:
        """The workspace to run: the configuration store's, after the file seeded it (a
        changed file — by its bytes, so an upgrade that adds a default is no change — is
        applied over what the API changed; the log says what that replaced)."""
        document = workspace.model_dump(mode="json", by_alias=True)
        try:
            raw: Any = workspace_file.read_bytes() if workspace_file is not None else None
        except OSError:
            raw = None
        if raw is None:  # a workspace given in code: its own content, defaults left out
            raw = workspace.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        else:  # and the values of the ${NAME} it names: a changed secret is a changed file
            refs = sorted({n.decode() for n in re.findall(rb"\$\{([A-Z_][A-Z0-9_]*)\}", raw)})
            raw += orjson.dumps({name: os.environ.get(name) for name in refs})
        had = self._seeded_from.revision > 0
        snapshot, written = self.config_store.seed(document, digest(raw))
        if had and written is not None and not written.empty:
            steps = {"created": written.created, "changed": written.changed,
                     "deleted": written.deleted}  # fmt: skip
            said = "; ".join(f"{what} {', '.join(f'{k}/{n}' for k, n in keys)}"
                             for what, keys in steps.items() if keys)  # fmt: skip
            logger.warning("the workspace file changed since the last start: it was applied "
                           "over the configuration store (%s)", said)  # fmt: skip
        return parse_workspace(snapshot.document(), str(self.config_store.path))

    def _engage_key(self, source: str) -> str:
        """The in-process write key of a space's activation source (made once)."""
        return self._engage_keys.setdefault(source, "wk_engage_" + secrets.token_urlsafe(18))

    async def _activate(self, source: str, messages: list[dict[str, Any]]) -> None:
        """Audience activations into the log as a batch of the space's source, through the
        Tracking API in process (normalised, checked, counted like any batch)."""
        assert self._tracking is not None
        transport = httpx.ASGITransport(app=self._tracking)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://headwater") as client:
            answer = await client.post("/v1/batch", json={"batch": messages},
                                       auth=(self._engage_keys[source], ""))  # fmt: skip
        if answer.status_code != 200:
            raise LogError(f"audience activations were not stored: {answer.status_code} "
                           f"{answer.text[:200]}")  # fmt: skip
        for refused in answer.json().get("rejected", []):  # ours are well formed: a bug
            logger.error("an audience activation was refused: %s", refused)

    async def _start_delivery(self, log: SqliteLog | ProcessLog | JetStreamLog) -> DeliveryView:
        delivery_dir = self.data_dir / DELIVERY_DIR
        if self.delivery_mode == "inline":
            pauses = self.config_store.pauses
            engine = DeliveryEngine(self.running, log, delivery_dir, pauses=pauses)
            self._engine = engine
            await engine.start()
            self._loaders = Warehouses(self.workspace, log, self.data_dir, engine.node)
            self._loaders.start()
            self.unify = Unify(
                self.workspace.spaces, log, self.data_dir, self._now_ms, self.workspace.state
            )
            await self.unify.start()
            return engine
        if isinstance(log, SqliteLog | ProcessLog):  # on JetStream the worker follows the stream
            self._wake = log.signal.on_commit = WakeSender(wake_socket(self.data_dir))
        if self.delivery_mode == "process":
            command = [sys.executable, "-m", "headwater.worker_role",
                       str(self.data_dir.resolve()), self._log_level]  # fmt: skip
            config = self.workspace.model_dump_json(by_alias=True).encode() + b"\n"
            self.worker = Child("worker", "worker", command, config)
            self.worker.start()
        # a gateway node on shared state: the worker nodes deliver, wherever they run
        cluster = self.delivery_mode == "remote" and postgres.uses_postgres(self.workspace.state)
        remote = RemoteEngine(self.running, log, delivery_dir, control_socket(self.data_dir),
                              cluster=cluster)  # fmt: skip
        self._engine = remote
        await remote.start()
        if not cluster:
            await self._await_worker(remote)
        return remote

    async def _await_worker(self, remote: RemoteEngine) -> None:
        """Accept no event before the worker runs: a destination seen for the first time
        starts at the log's end as the worker finds it."""
        deadline = time.monotonic() + WORKER_START_SECS
        while not await remote.refresh():
            if self.worker is not None and self.worker.restarts >= WORKER_START_ATTEMPTS:
                raise LogError(
                    f"the delivery worker exited {self.worker.restarts} times at start (last: "
                    f"{self.worker.last_exit}); see its messages above"
                )
            if time.monotonic() > deadline:
                raise LogError(
                    f"the delivery worker did not answer within {WORKER_START_SECS:.0f} s; "
                    "see its messages above (with --role gateway, start `headwater serve "
                    "--role worker` on the same data directory)"
                )
            await asyncio.sleep(0.05)

    async def _reconfigure(
        self, workspace: Workspace, before: Snapshot, after: Snapshot
    ) -> dict[str, Any]:
        """Run a changed workspace from the next request on, without a restart: sources and
        their keys in the Tracking API, plans and transformations at ingest, alert rules,
        and each changed destination's worker (in this process or the worker process). What
        a removed or disabled destination has not delivered is kept; the answer says so."""
        if self.log is None or self._tracking is None:
            return {"destinations": {}, "note": "stored; the server applies it when it starts"}
        end = self.log.stats().last_offset or 0
        # the diffs are against the last workspace that ran whole: a change whose apply
        # failed part way is made good by the next one
        old, store = self._applied, self.config_store
        await asyncio.to_thread(record_pauses, store, old, workspace, end)
        made_again = [d.name for d in workspace.destinations if old.destination(d.name) is None]
        if made_again and self.delivery is not None:  # a new destination under an old name
            # starts at the log's end, whichever process runs it and whenever it starts
            await self.delivery.store.write([SetCursor(name, end) for name in made_again])
        for source in old.sources:  # a deleted source's old keys go with it
            if workspace.source(source.name) is None:
                await asyncio.to_thread(store.drop_retired, source.name)
        running, _ = with_canary(workspace)
        running = with_engage(keep_canary_key(running, self._canary_key), self._engage_key)
        self.workspace, self.running = workspace, running
        self.observer.workspace = self.console.workspace = workspace
        retired = await asyncio.to_thread(store.retired_keys)
        self._tracking.reconfigure(running.sources, retired)
        if self.admin is not None:
            plans, _ = effective_plans(workspace.tracking_plans, self.data_dir)
            self.admin.pipeline.reconfigure(plans, workspace.transformations)
            self.admin.sources = {s.name for s in workspace.sources}
            self.admin.destinations = {d.name: list(d.filters) for d in workspace.destinations}
            self.admin.transformations = list(workspace.transformations)
        if self.delivery is not None:
            self.status.reconfigure(workspace, self.delivery.http)
        if self.worker is not None:  # a restarted worker starts with this workspace
            self.worker.stdin = workspace.model_dump_json(by_alias=True).encode() + b"\n"
        self.warehouses.workspace = workspace
        await self.profiles.reconfigure(workspace.spaces)
        await self.activator.reconfigure(workspace.spaces)
        done: dict[str, str] = {}
        synced: dict[str, str] = {}
        spaces: dict[str, str] = {}
        if isinstance(self._engine, DeliveryEngine):
            done = await self._engine.reconfigure(running, end, after.revision)
            if self._loaders is not None:
                synced = await self._loaders.reconfigure(workspace)
            if self.unify is not None:
                spaces = await self.unify.reconfigure(workspace.spaces)
        elif isinstance(self._engine, RemoteEngine):
            done = await self._engine.reconfigure(workspace, running, end, after.revision)
            synced, spaces = self._engine.warehouses_done, self._engine.spaces_done
        if not self.audit.shared:
            await asyncio.to_thread(keep_snapshot, workspace, self.data_dir)
        kept = await self._kept(old, workspace)
        self._applied = workspace
        return {"destinations": done, "warehouses": synced, "spaces": spaces, "kept": kept}

    async def _kept(self, old: Workspace, new: Workspace) -> dict[str, str]:
        """For each destination removed or disabled: what stays in the delivery store."""
        gone = [d.name for d in old.destinations
                if new.destination(d.name) is None or not new.destination(d.name).enabled]  # type: ignore[union-attr]  # fmt: skip
        if not gone or self.delivery is None:
            return {}
        store = self.delivery.store

        def collect(db: Any) -> dict[str, str]:
            cursors, dead = db.cursors(), db.dead_letter_counts()
            out = {}
            for name in gone:
                retries, _ = db.retry_summary(name)
                out[name] = (
                    f"kept until purged: the events after log offset {cursors.get(name, 0)} not "
                    f"yet delivered, {retries} waiting for a retry, {dead.get(name, 0)} dead "
                    f"letters (`headwater deadletter list --destination {name}`)"
                )
            return out

        kept: dict[str, str] = await store.run(collect)
        return kept

    def processes(self) -> list[ProcessInfo]:
        """The child processes this one supervises (the log writer, the delivery worker)."""
        found = [writer_info(self.log)] if isinstance(self.log, ProcessLog) else []
        if self.worker is not None:
            found.append(self.worker.info())
        return found

    def process_signals(self) -> list[ProcessSignal]:
        return [ProcessSignal(p.name, p.state, p.restarts, p.last_exit, p.last_restart_ms)
                for p in self.processes()]  # fmt: skip

    async def _processor(self, log: EventLog) -> IngestPipeline:
        """Tracking plans and source transformations at ingest; blocked events and
        violations in the protocols store; their decisions in each event's trace."""
        await self.protocols.open()
        ws = self.workspace
        plans, from_api = effective_plans(ws.tracking_plans, self.data_dir)
        flow, processed = self.observer.flow, self.stats.processed

        def count(source: str, step: str, n: int) -> None:  # windows, and Prometheus totals
            flow.add(source, step, n)
            processed[(source, step)] += n

        pipeline = IngestPipeline(plans, ws.transformations, self.protocols, count, flow.decided)
        self.admin = ProcessorAdmin(
            self.data_dir, {s.name for s in ws.sources},
            {d.name: list(d.filters) for d in ws.destinations}, list(ws.transformations),
            pipeline, log, from_api,
        )  # fmt: skip
        self.observer.unstored.append(self._blocked_trace)
        return pipeline

    async def _blocked_trace(self, message_id: str) -> dict[str, Any] | None:
        """The trace of an event a tracking plan blocked: it is not in the log."""
        blocked = await self.protocols.blocked_event(message_id)
        if blocked is None:
            return None
        return {
            "messageId": blocked.message_id,
            "offset": None,
            "source": blocked.source,
            "type": blocked.event().get("type"),
            "receivedAt": iso_ms(blocked.received_ms),
            "event": blocked.event(),
            "stages": [
                {"stage": "received", "atMs": blocked.received_ms, "decision": "accepted",
                 "detail": f"accepted from source {blocked.source} (answered 200)"},
                {"stage": "tracking plan", "plan": blocked.plan, "decision": "blocked",
                 "detail": f"blocked by tracking plan {blocked.plan!r} ({blocked.reason}); kept "
                 "30 days — fix the plan or the sender, then `headwater plans resend-blocked "
                 f"--source {blocked.source}`", "violations": blocked.violations},
            ],
            "destinations": [],
        }  # fmt: skip

    async def stop(self) -> None:
        await self.metrics.close()
        await self.status.stop()
        await self.observer.stop()
        await self.protocols.close()
        await self.activator.close()
        await self.profiles.close()
        await self.source_functions.close()
        await asyncio.to_thread(self.tokens.close)
        await asyncio.to_thread(self.audit.close)
        self.config_store.close()
        await asyncio.to_thread(self.sessions.close)
        if self.unify is not None:
            await self.unify.stop()
        if self.worker is not None:
            await self.worker.stop()
        if self._loaders is not None:
            await self._loaders.stop()
        self.warehouses.close()
        if self._engine is not None:
            await self._engine.stop()
        if self._wake is not None:
            self._wake.close()
        if self.log is not None:
            await self.log.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith(profile_api.PREFIX):
            await self._profile_web(scope, receive, send)  # type: ignore[arg-type]
        elif kind == "http" and scope["path"].startswith("/v1/"):
            if self._tracking is None:
                await _not_ready(send)
                return
            await self._tracking(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif scope["path"].startswith(API_PREFIXES):
            await self._api(scope, receive, send)  # type: ignore[arg-type]
        else:
            await self._web(scope, receive, send)  # type: ignore[arg-type]

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    logger.exception("start-up failed")
                    try:  # what did start (the log, delivery workers) must not run on
                        await self.stop()
                    except Exception:
                        logger.exception("stopping after the failed start-up failed too")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> JSONResponse:
        """Ready when the log accepts writes and the delivery engine has started."""
        if self.log is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        stats = self.log.stats()
        started = self._delivery_started
        status = "ready" if started else "starting"
        if stats.refusing is not None:
            status = "refusing_writes"
        body: dict[str, Any] = {
            "status": status,
            "log": {"refusing": stats.refusing, "last_offset": stats.last_offset},
            "delivery": {
                "started": started,
                "destinations": len(self.delivery.workers) if self.delivery is not None else 0,
            },
            "processes": [p.as_dict() for p in self.processes()],
        }
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    async def _metrics(self, request: Request) -> Response:
        """Prometheus text exposition (docs/metrics.md)."""
        for what, refresh in (
            ("the warehouses' state", self.warehouses.refresh),
            ("the identity graphs", self.profiles.refresh),
            ("the functions' stats", self.function_metrics.refresh),
        ):
            try:
                await refresh()
            except Exception:
                logger.warning("metrics: cannot read %s", what, exc_info=True)
        return Response(await self.metrics.render(), media_type=CONTENT_TYPE)

    def _profiles_read_ok(self, presented: str, permission: str) -> bool:
        """Who may use the Profile API: a token whose role holds ``permission``
        (``profiles_read`` tokens, and the roles that hold every permission)."""
        principal = self.auth.principal(presented)
        return principal is not None and principal.allows(permission)

    async def _fetch_event(self, message_id: str) -> StoredRecord | None:
        return await self.log.get(message_id) if self.log is not None else None

    async def _identity_trace(self, record: StoredRecord) -> list[dict[str, Any]]:
        """Which profile the event joined, or what merge or refusal it caused, per space."""
        stages: list[dict[str, Any]] = []
        for space in self.workspace.spaces:
            if record.source in space.sources:
                found = await self.profiles.of_message(space.name, record.message_id,
                                                    record.offset)  # fmt: skip
                stages.append(identity_stage(space.name, found))
        return stages

    async def _identity_findings(self, since_ms: int) -> list[Finding]:
        found: list[Finding] = []
        for space in self.workspace.spaces:
            summary = await self.profiles.problems(space.name, since_ms)
            found.extend(identity_findings(space.name, summary["problems"], summary["counters"]))
        return found

    async def _session_principal(self, request: Request) -> Principal | None:
        """A console session may use the API too (the console's live views do), as the
        token it signed in with; requests that change something must carry its CSRF
        token."""
        session = await self.sessions.get(request.cookies.get(COOKIE))
        if session is None or not self.auth.active(session.principal):
            return None
        if request.method in UNSAFE_METHODS and not self.sessions.csrf_ok(
            session, request.headers.get("x-csrf-token")
        ):
            return None
        return session.principal


async def _state_unavailable(request: Request, exc: Exception) -> Response:
    """A console page or status route that needed PostgreSQL while it does not answer (the
    console's sessions are there with shared state): 503, saying so, never a bare 500."""
    return PlainTextResponse(f"503 Service Unavailable: {first_line(exc)}. The state store "
                             "(PostgreSQL) does not answer; the status page (/status) shows "
                             "since when. Try again once it is back.", 503,
                             headers={"retry-after": "5"})  # fmt: skip


async def _not_ready(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": b'{"code":"starting","message":"Headwater is starting; try again"}',
        }
    )
