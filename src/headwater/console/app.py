"""The web console under ``/console/``: Overview, Sources (with the live Debugger and the
tracking plan's Violations), Destinations (Event Delivery, Filters), Plans, Trace and
Diagnose — server-rendered pages of the documents the API gives, from
:class:`~headwater.observe.service.Observer` and
:class:`~headwater.processor.admin.ProcessorAdmin`, behind a login with a token (the admin
token or a scoped one; docs/console.md, docs/access.md).

Who may see a page: the holder of a session (:mod:`headwater.console.sessions`) whose role
has the permission the page declares (else 403 naming it); anyone else is sent to
``/console/login?next=<the page>``. Pages hide the links and buttons the role cannot use;
the routes behind them refuse it anyway. ``next`` must be a path of the console, so
the login cannot be used to send someone elsewhere. The login form is protected against
cross-site posting by a cookie of its own (``hw_login``, double-submit: the form must carry
the same random value); every other form carries the session's CSRF token. A request that
changes something and lacks the token is answered 403 and does nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import orjson
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from headwater.api.auth import Authenticator
from headwater.api.functions import source_url, summary
from headwater.api.permissions import PUBLIC, Need, PermissionDenied, Principal, declare
from headwater.config.workspace import Workspace
from headwater.console.charts import delivery_chart
from headwater.console.processing import rule_view, violation_types
from headwater.console.render import PREFIX, SecurityHeaders, environment, load_static, pretty
from headwater.console.sessions import COOKIE, Session, Sessions
from headwater.engage.activation import Activator
from headwater.functions.host import read_stats
from headwater.gateway.stats import redact_key
from headwater.observe.service import WINDOWS, ObserveError, Observer
from headwater.observe.tester import Tester
from headwater.processor.admin import AdminError, ProcessorAdmin
from headwater.processor.protocols_store import RETENTION_MS
from headwater.state import postgres
from headwater.state.audit import AuditLog
from headwater.state.postgres import NodeRow
from headwater.state.sql import StateUnavailable
from headwater.status.model import NODE_SILENT_SECS, REPLICA_SILENT_SECS
from headwater.unify.api import ProfileError, Profiles
from headwater.warehouses.view import FIXES, WarehouseView

HOME = f"{PREFIX}/"
LOGIN = f"{PREFIX}/login"
LOGIN_COOKIE = "hw_login"  # the login form's own CSRF value (double-submit)
LOGIN_COOKIE_SECS = 3600
MAX_FORM_BYTES = 8 * 1024
MAX_SAMPLE_BYTES = 64 * 1024  # the filter preview's form: a sample event, URL-encoded
MAX_FORM_FIELDS = 10
WINDOW_CHOICES = ("1h", "24h", "7d")
DEBUGGER_ENTRIES = 100
SOURCE_VIOLATIONS_WINDOW = "24h"  # the count on a source's page
SAMPLE_EVENT = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user-1",
    "properties": {"order_id": "5031", "revenue": 42.5, "currency": "USD"},
}

# what a role needs to use the console at all, and where each kind of role lands first
CONSOLE_PERMISSIONS = ("sources:read", "destinations:read", "events:read", "audit:read")
FIRST_PAGES = (("destinations:read", "/destinations"), ("events:read", "/trace"),
               ("audit:read", "/audit"))  # fmt: skip
AUDIT_PAGE_ENTRIES = 100

Page = Callable[[Request, Session], Awaitable[Response]]
Action = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path of the console, never another site."""
    if not value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or "\\" in value:
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return HOME
    if parts.path != PREFIX and not parts.path.startswith(HOME):
        return HOME
    return value


class Console:
    """The console's routes; ``app.py`` mounts them next to the health checks."""

    def __init__(
        self,
        workspace: Workspace,
        observer: Observer,
        auth: Authenticator,
        sessions: Sessions,
        admin: Callable[[], ProcessorAdmin | None],
        profiles: Profiles | None = None,
        audit: AuditLog | None = None,
        warehouses: WarehouseView | None = None,
        functions_dir: Path | None = None,
        activator: Activator | None = None,
    ) -> None:
        self.workspace = workspace
        self.activator = activator
        self.functions_dir = functions_dir
        self.warehouses = warehouses
        self.profiles = profiles
        self.observer = observer
        self.auth = auth
        self.audit = audit
        self.sessions = sessions
        self.admin = admin  # None until the server has started
        self.tester = Tester(observer, admin)
        self.env = environment()
        self.static = load_static()
        self.env.globals["static"] = self._static_url
        # the Cluster page: shown when the log or the state is shared by several nodes
        self.env.globals["clustered"] = (
            workspace.log.backend == "jetstream" or postgres.uses_postgres(workspace.state)
        )

    def routes(self) -> list[BaseRoute]:
        listing = Need("sources:read", lists_sources=True)
        one_source = Need("sources:read", source_param="name")
        pages: list[tuple[str, Page, Need]] = [
            ("/", self._overview, listing),
            ("/sources", self._sources, listing),
            ("/sources/{name}", self._source, one_source),
            ("/sources/{name}/violations", self._violations,
             Need("tracking-plans:read", source_param="name")),
            ("/destinations", self._destinations, Need("destinations:read")),
            ("/destinations/{name}", self._destination, Need("destinations:read")),
            ("/plans", self._plans, Need("tracking-plans:read")),
            ("/plans/{name}", self._plan, Need("tracking-plans:read")),
            ("/trace", self._trace, Need("events:read")),
            ("/event-tester", self._event_tester, Need("tester:run")),
            ("/diagnose", self._diagnose, Need("diagnose:read")),
            ("/audit", self._audit, Need("audit:read")),
            ("/cluster", self._cluster, Need("diagnose:read")),
            ("/profiles", self._profile, Need("profiles:read")),
            ("/warehouses", self._warehouses, Need("warehouses:read")),
            ("/warehouses/{name}", self._warehouse, Need("warehouses:read")),
            ("/functions", self._functions, Need("functions:read")),
            ("/functions/{name}", self._function, Need("functions:read")),
            ("/audiences", self._audiences, Need("profiles:read")),
            ("/audiences/{space}/{key}", self._audience, Need("profiles:read")),
        ]  # fmt: skip
        # forms that act: (path, action, the page they belong to, the largest body taken)
        actions: list[tuple[str, Action, str, int, Need]] = [
            ("/sources/{name}/blocked/resend", self._resend, "/sources/{name}/violations",
             MAX_FORM_BYTES, Need("delivery:write", source_param="name")),
            ("/destinations/{name}/filters/preview", self._preview, "/destinations/{name}",
             MAX_SAMPLE_BYTES, Need("destinations:read")),
            ("/destinations/{name}/test", self._test_destination, "/destinations/{name}",
             MAX_SAMPLE_BYTES, Need("tester:run")),
            ("/event-tester", self._run_event_tester, "/event-tester", MAX_SAMPLE_BYTES,
             Need("tester:run")),
            ("/warehouses/{name}/sync", self._sync_warehouse, "/warehouses/{name}",
             MAX_FORM_BYTES, Need("warehouses:write")),
        ]  # fmt: skip
        public = declare(PUBLIC)
        console = [
            public(Route("/login", self._login_form, methods=["GET"])),
            public(Route("/login", self._login, methods=["POST"])),
            public(Route("/logout", self._logout, methods=["POST"])),
            public(Route("/static/{file}", self._static_file, methods=["GET"])),
            *(
                _declared(Route(path, self._signed_in(page, need), methods=["GET"]), need)
                for path, page, need in pages
            ),
            *(
                _declared(
                    Route(path, self._form_action(action, page, limit, need), methods=["POST"]),
                    need,
                )
                for path, action, page, limit, need in actions
            ),
            # any signed-in role may be told that a page does not exist
            public(Route("/{rest:path}", self._signed_in(self._not_found, None), methods=["GET"])),
        ]
        return [
            public(Route("/", _to_console, methods=["GET"])),
            Mount(PREFIX, routes=console, middleware=[Middleware(SecurityHeaders)]),
        ]

    # ------------------------------------------------------------------ plumbing

    def _static_url(self, name: str) -> str:
        return f"{PREFIX}/static/{name}?v={self.static[name].version}"

    async def _static_file(self, request: Request) -> Response:
        found = self.static.get(request.path_params["file"])
        if found is None:
            return Response("no such file", status_code=404, media_type="text/plain")
        # a versioned URL (?v=<hash>) never changes: keep it; a bare one: ask each time
        versioned = bool(request.query_params.get("v"))
        cache = "public, max-age=31536000, immutable" if versioned else "no-cache"
        return Response(found.body, media_type=found.media_type, headers={"cache-control": cache})

    def _render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        principal = session.principal if session else None
        html = self.env.get_template(template).render(
            csrf=session.csrf if session else None,
            signed_in=session is not None,
            principal=principal,
            can=lambda permission: principal is not None and principal.has(permission),
            section=context.pop("section", None),
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    async def _session(self, request: Request) -> Session | None:
        """The request's session, ended when its token has been revoked since sign-in."""
        session = await self.sessions.get(request.cookies.get(COOKIE))
        if session is not None and not self.auth.active(session.principal):
            await self.sessions.end(session.id)
            return None
        return session

    def _refused(self, request: Request, session: Session, need: Need | None) -> Response | None:
        """403 naming the permission when the session's role lacks what the route needs."""
        if need is None:
            return None
        source = request.path_params.get(need.source_param) if need.source_param else None
        try:
            session.principal.check(need.permission, source, lists_sources=need.lists_sources)
        except PermissionDenied as exc:
            return self._render(
                request, "error.html", session, 403, code="forbidden", message=exc.message
            )
        return None

    def _signed_in(self, page: Page, need: Need | None) -> Callable[[Request], Awaitable[Response]]:
        """Pages need a session (without one, the login page and back here after) whose
        role has the page's permission."""

        async def endpoint(request: Request) -> Response:
            session = await self._session(request)
            if session is None:
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{LOGIN}?next={quote(here, safe='')}", 303)
            refused = self._refused(request, session, need)
            if refused is not None:
                return refused
            try:
                return await page(request, session)
            except (ObserveError, AdminError) as exc:
                return self._error(request, session, exc)

        return endpoint

    def _form_action(
        self, action: Action, page: str, limit: int, need: Need
    ) -> Callable[[Request], Awaitable[Response]]:
        """A form that changes something or runs something: it needs a session (else the
        login, and back to ``page`` after), the permission ``need`` (else 403), a body of at
        most ``limit`` bytes and the session's CSRF token (else 403, and nothing is done)."""

        async def endpoint(request: Request) -> Response:
            session = await self._session(request)
            if session is None:  # checked before reading the body
                params = {k: quote(v, safe="") for k, v in request.path_params.items()}
                here = PREFIX + page.format(**params)
                return RedirectResponse(f"{LOGIN}?next={quote(here, safe='')}", 303)
            refused = self._refused(request, session, need)
            if refused is not None:
                return refused
            form = await _read_form(request, limit)
            if form is None:
                return self._render(
                    request, "error.html", session, 413, code="form_too_large",
                    message=f"The form is larger than {limit // 1024} KiB, so it was not "
                    "read. Send less (a single event, for the filter preview).",
                )  # fmt: skip
            if not self.sessions.csrf_ok(session, form.get("csrf_token")):
                return self._csrf_refused(request, session)
            try:
                return await action(request, session, form)
            except (ObserveError, AdminError) as exc:
                return self._error(request, session, exc)

        return endpoint

    def _error(
        self, request: Request, session: Session, exc: ObserveError | AdminError
    ) -> Response:
        return self._render(
            request, "error.html", session, exc.status, code=exc.code, message=exc.message,
            section=None,
        )  # fmt: skip

    def _csrf_refused(self, request: Request, session: Session) -> Response:
        return self._render(
            request, "error.html", session, 403, code="csrf_token_missing",
            message="This request did not carry the page's CSRF token, so it was refused "
            "(another site may have tried to act for you). Use the buttons of the "
            "console itself; reload the page if it has been open for long.",
        )  # fmt: skip

    def _admin(self) -> ProcessorAdmin:
        admin = self.admin()
        if admin is None:
            raise ObserveError("starting", "Headwater is starting; reload in a moment", 503)
        return admin

    def _window(self, request: Request) -> tuple[str, list[str]]:
        """The window asked for (validated by the observer) and the choices to offer: those
        the log's retention covers."""
        text = request.query_params.get("window") or "1h"
        self.observer.window(text)  # raises ObserveError (400) with what to write instead
        return text, self._window_choices()

    def _window_choices(self) -> list[str]:
        keep = self.workspace.log.retention_max_age_secs
        return [w for w in WINDOW_CHOICES if int(w[:-1]) * WINDOWS[w[-1]] <= keep]

    def _trusted(self, address: str | None) -> bool:
        """Whether ``address`` is a proxy of ``gateway.trusted_proxies``: its X-Forwarded-*
        headers are believed, as the Tracking API believes them."""
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in net for net in self.workspace.gateway.trusted_proxies)

    def _https(self, request: Request) -> bool:
        """Whether the browser reached us over HTTPS (then cookies are ``Secure``)."""
        if request.url.scheme == "https":
            return True
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        return proto == "https" and self._trusted(request.client.host if request.client else None)

    def _client(self, request: Request) -> str:
        """The address failed logins are counted against: the peer, or the right-most
        forwarded address that is not a trusted proxy."""
        peer = request.client.host if request.client else "unknown"
        forwarded = request.headers.get("x-forwarded-for")
        if not forwarded or not self._trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        return next((h for h in reversed(hops) if not self._trusted(h)), hops[0] if hops else peer)

    # ------------------------------------------------------------------ login / logout

    async def _login_form(self, request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if await self._session(request) is not None:
            return RedirectResponse(target, 303)
        notice = "You are signed out." if request.query_params.get("signed_out") else None
        return self._login_page(request, target, notice=notice)

    def _login_page(
        self,
        request: Request,
        target: str,
        status: int = 200,
        error: str | None = None,
        notice: str | None = None,
        login_csrf: str | None = None,
    ) -> Response:
        """The login form; a new form value and cookie unless ``login_csrf`` is reused."""
        value = login_csrf or secrets.token_urlsafe(24)
        response = self._render(
            request, "login.html", None, status, next=target, login_csrf=value, error=error,
            notice=notice,
        )  # fmt: skip
        if login_csrf is None:
            response.set_cookie(
                LOGIN_COOKIE, value, max_age=LOGIN_COOKIE_SECS, path=LOGIN, httponly=True,
                samesite="strict", secure=self._https(request),
            )  # fmt: skip
        return response

    async def _login(self, request: Request) -> Response:
        form = await _read_form(request)
        if form is None:
            return _plain(413, "The form is too large.")
        target = safe_next(form.get("next"))
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        presented = form.get("csrf_token") or ""
        if not expected or not hmac.compare_digest(
            expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass")
        ):
            return self._login_page(
                request, target, 403,
                error="This login form has expired or your browser did not send its cookie. "
                "Here is a fresh one: enter the admin token again.",
            )  # fmt: skip
        client = self._client(request)
        if not self.sessions.login_allowed(client):
            response = self._login_page(
                request, target, 429, login_csrf=expected,
                error="Too many wrong tokens from your address: wait a minute, then try again.",
            )  # fmt: skip
            response.headers["retry-after"] = "60"
            return response
        principal = self.auth.principal(form.get("token"))
        if principal is None:
            self.sessions.login_failed(client)
            return self._login_page(
                request, target, 401, login_csrf=expected,
                error="That is not a valid token (or it was revoked); check it and try "
                "again (see below where tokens come from).",
            )  # fmt: skip
        if not any(principal.has(need) for need in CONSOLE_PERMISSIONS):
            return self._login_page(
                request, target, 403, login_csrf=expected,
                error=f"Token {principal.name!r} has the role {principal.role}, which can use "
                "no page of the console (it is for the Profile API); sign in with another.",
            )  # fmt: skip
        await self.sessions.end(request.cookies.get(COOKIE))  # never reuse an id from before login
        session = await self.sessions.create(principal)
        if target == HOME and not principal.has("sources:read"):
            target = self._first_page(principal)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE, session.id, max_age=int(self.sessions.ttl_secs), path="/", httponly=True,
            samesite="strict", secure=self._https(request),
        )  # fmt: skip
        response.delete_cookie(LOGIN_COOKIE, path=LOGIN)
        return response

    def _first_page(self, principal: Principal) -> str:
        """Where a role without the Overview lands after signing in."""
        for permission, path in FIRST_PAGES:
            if principal.has(permission):
                return PREFIX + path
        return HOME

    async def _logout(self, request: Request) -> Response:
        session = await self._session(request)
        form = await _read_form(request)
        if form is None:
            return _plain(413, "The form is too large.")
        if session is None:
            return RedirectResponse(f"{LOGIN}?signed_out=1", 303)
        if not self.sessions.csrf_ok(session, form.get("csrf_token")):
            return self._csrf_refused(request, session)
        await self.sessions.end(session.id)
        response = RedirectResponse(f"{LOGIN}?signed_out=1", 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------------ pages

    async def _not_found(self, request: Request, session: Session) -> Response:
        path = request.url.path
        if path.endswith("/") and path != HOME:  # /console/sources/ → /console/sources
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(path.rstrip("/") + query, 307)
        raise ObserveError(
            "not_found", f"{request.url.path} is not a page of the console; the menu above "
            "lists them", 404,
        )  # fmt: skip

    async def _overview(self, request: Request, session: Session) -> Response:
        window_text, choices = self._window(request)
        window = self.observer.window(window_text)
        who = session.principal
        visible = [s for s in self.workspace.sources if who.sees_source(s.name)]
        overviews = [await self.observer.overview(s.name, window) for s in visible]
        report: dict[str, Any] = {"findings": []}
        if who.allows("diagnose:read"):
            report = await self.observer.diagnose(window)
        severities = {"critical": 0, "warning": 0, "info": 0}
        for finding in report["findings"]:
            severities[finding["severity"]] += 1
        unknown = overviews[0]["unknownWriteKeyRequests"] if overviews else 0
        return self._render(
            request, "overview.html", session, section="overview", window=window_text,
            windows=choices, overviews=overviews, severities=severities,
            findings=report["findings"], unknown_key_requests=unknown,
        )  # fmt: skip

    async def _sources(self, request: Request, session: Session) -> Response:
        window_text, choices = self._window(request)
        window = self.observer.window(window_text)
        rows = []
        for source in self.workspace.sources:
            if not session.principal.sees_source(source.name):
                continue
            overview = await self.observer.overview(source.name, window)
            rows.append(
                {
                    "name": source.name,
                    "enabled": source.enabled,
                    "key": redact_key(source.write_key) if source.write_key else None,
                    "received": overview["received"],
                    "failedOnIngest": overview["failedOnIngest"],
                    "destinations": [d["destination"] for d in overview["destinations"]],
                }
            )
        return self._render(
            request, "sources.html", session, section="sources", rows=rows,
            window=window_text, windows=choices,
        )  # fmt: skip

    async def _source(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        source = self.observer.require_source(name)
        admin = self.admin()
        violations: dict[str, Any] | None = None
        if admin is not None and SOURCE_VIOLATIONS_WINDOW in self._window_choices():
            window = self.observer.window(SOURCE_VIOLATIONS_WINDOW)
            violations = await admin.violations(name, window.since_ms)
        return self._render(
            request, "source.html", session, section="sources", source=source,
            key=redact_key(source.write_key) if source.write_key else None,
            destinations=[d.name for d in self.workspace.destinations if name in d.sources],
            entries=self.observer.debugger.recent(name, DEBUGGER_ENTRIES),
            counts=self.observer.debugger.counts(name), keep=self.observer.debugger.keep,
            stream=f"/api/v1/sources/{quote(name, safe='')}/debugger/stream",
            violations=violations, violations_window=SOURCE_VIOLATIONS_WINDOW,
        )  # fmt: skip

    async def _violations(self, request: Request, session: Session) -> Response:
        return await self._violations_page(request, session)

    async def _violations_page(
        self, request: Request, session: Session, resend: dict[str, Any] | None = None
    ) -> Response:
        """The source's tracking-plan violations over the window, by event and field."""
        name = request.path_params["name"]
        self.observer.require_source(name)
        window_text, choices = self._window(request)
        admin = self._admin()
        doc = await admin.violations(name, self.observer.window(window_text).since_ms)
        plan = admin.plan(doc["plan"]) if doc["plan"] else None
        return self._render(
            request, "violations.html", session, section="sources", source=name, doc=doc,
            plan=plan, types=violation_types(doc["events"]), window=window_text,
            windows=choices, resend=resend, keep_days=RETENTION_MS // 86_400_000,
        )  # fmt: skip

    async def _resend(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        """Re-check every blocked event of the source (30 days) against its current plan."""
        name = request.path_params["name"]
        self.observer.require_source(name)
        self._window(request)  # a bad window is refused before anything is re-sent
        since_ms = time.time_ns() // 1_000_000 - RETENTION_MS
        result = await self._admin().resend_blocked(name, since_ms, None)
        if self.audit is not None:
            await asyncio.to_thread(
                self.audit.record, session.principal.name, "resend", f"sources/{name}/blocked",
                {"since": "30d", **result}, "console",
            )  # fmt: skip
        return await self._violations_page(request, session, resend=result)

    async def _destinations(self, request: Request, session: Session) -> Response:
        window_text, choices = self._window(request)
        window = self.observer.window(window_text)
        rows = []
        for config in self.workspace.destinations:
            report = await self.observer.delivery_report(config.name, window)
            keep = ("counts", "retryingNow", "breaker")
            rows.append({"config": config, **{k: report[k] for k in keep}})
        return self._render(
            request, "destinations.html", session, section="destinations", rows=rows,
            window=window_text, windows=choices,
        )  # fmt: skip

    async def _destination(self, request: Request, session: Session) -> Response:
        return await self._destination_page(request, session)

    async def _destination_page(
        self,
        request: Request,
        session: Session,
        status: int = 200,
        sample: str | None = None,
        preview: dict[str, Any] | None = None,
        preview_error: str | None = None,
        test: dict[str, Any] | None = None,
        test_event: str = "",
        test_error: str | None = None,
    ) -> Response:
        name = request.path_params["name"]
        config = self.observer.require_destination(name)
        window_text, choices = self._window(request)
        report = await self.observer.delivery_report(name, self.observer.window(window_text))
        if sample is None:
            sample = pretty(self._newest_event(config.sources))
        return self._render(
            request, "destination.html", session, status, section="destinations",
            config=config, report=report, chart=delivery_chart(report["series"], window_text),
            window=window_text, windows=choices, sample=sample, preview=preview,
            preview_error=preview_error, test=test, test_event=test_event, test_error=test_error,
        )  # fmt: skip

    def _newest_event(self, sources: list[str]) -> dict[str, Any]:
        """The filter preview's first sample: the newest event the destination's sources
        received (from the debugger's memory), else an example."""
        newest: dict[str, Any] | None = None
        for source in sources:
            for entry in self.observer.debugger.recent(source, DEBUGGER_ENTRIES):
                if entry["kind"] != "rejected" and entry.get("source") == source:
                    if newest is None or entry["at"] > newest["at"]:
                        newest = entry
                    break
        event = newest.get("event") if newest else None
        return event if isinstance(event, dict) else SAMPLE_EVENT

    async def _preview(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        """The destination's filters (and transformations) on the sample event of the form."""
        name = request.path_params["name"]
        self.observer.require_destination(name)
        text = form.get("event", "")
        try:
            event = orjson.loads(text) if text.strip() else None
        except orjson.JSONDecodeError as exc:
            return await self._destination_page(
                request, session, 400, sample=text,
                preview_error=f"The sample is not valid JSON ({exc}). Fix it and try again.",
            )  # fmt: skip
        if not isinstance(event, dict):
            return await self._destination_page(
                request, session, 400, sample=text,
                preview_error='The sample must be one event as a JSON object, e.g. {"type": '
                '"track", "event": "Order Completed", "properties": {...}}.',
            )  # fmt: skip
        try:
            result = self._admin().preview(name, {"event": event})
        except AdminError as exc:
            if exc.status != 400:
                raise
            return await self._destination_page(
                request, session, 400, sample=text, preview_error=exc.message
            )
        return await self._destination_page(request, session, sample=text, preview=result)

    async def _test_destination(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        """Send a test event (or a sample) through the destination: dry run or for real."""
        name = request.path_params["name"]
        self.observer.require_destination(name)
        text = form.get("event", "")
        event, error = pasted_event(text, optional=True)
        if error is not None:
            return await self._destination_page(
                request, session, 400, test_event=text, test_error=error
            )
        try:
            result = await self.tester.test_destination(name, event, form.get("send") == "1")
        except ObserveError as exc:
            if exc.status != 400:
                raise
            return await self._destination_page(
                request, session, 400, test_event=text, test_error=exc.message
            )
        return await self._destination_page(request, session, test=result, test_event=text)

    async def _event_tester(self, request: Request, session: Session) -> Response:
        return self._tester_page(request, session, 200, None, pretty(SAMPLE_EVENT), None)

    async def _run_event_tester(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        """The pasted event, stage by stage; with ``send``, that destination's answer too."""
        source, text = form.get("source", ""), form.get("event", "")
        self.observer.require_source(source)
        event, error = pasted_event(text, optional=False)
        if error is not None:
            return self._tester_page(request, session, 400, source, text, error)
        try:
            doc = await self.tester.test_event(source, event or {}, form.get("send") or None)
        except ObserveError as exc:
            if exc.status not in (400, 409):
                raise
            return self._tester_page(request, session, exc.status, source, text, exc.message)
        return self._tester_page(request, session, 200, source, text, None, doc)

    def _tester_page(
        self, request: Request, session: Session, status: int, source: str | None, text: str,
        error: str | None, doc: dict[str, Any] | None = None,
    ) -> Response:  # fmt: skip
        return self._render(
            request, "event_tester.html", session, status, section="tester",
            sources=[s.name for s in self.workspace.sources], source=source, text=text,
            error=error, doc=doc,
        )  # fmt: skip

    async def _plans(self, request: Request, session: Session) -> Response:
        return self._render(
            request, "plans.html", session, section="plans", plans=self._admin().plans()
        )

    async def _plan(self, request: Request, session: Session) -> Response:
        doc = self._admin().plan(request.path_params["name"])
        rules = [rule_view(r) for r in doc["plan"].get("rules", [])]
        return self._render(request, "plan.html", session, section="plans", plan=doc, rules=rules)

    async def _trace(self, request: Request, session: Session) -> Response:
        message_id = (request.query_params.get("id") or "").strip()
        trace: dict[str, Any] | None = None
        error: str | None = None
        status = 200
        if message_id:
            try:
                trace = await self.observer.trace(message_id)
            except ObserveError as exc:
                if exc.status != 404:
                    raise
                error, status = exc.message, 404
        return self._render(
            request, "trace.html", session, status, section="trace", message_id=message_id,
            trace=trace, error=error,
        )  # fmt: skip

    async def _profile(self, request: Request, session: Session) -> Response:
        """A profile of a space: identifiers, traits, computed traits, events and the merge
        history as a timeline (``?space=main&id=user_id:u-42``)."""
        spaces = [s.name for s in self.workspace.spaces]
        space = request.query_params.get("space") or (spaces[0] if spaces else "")
        name = (request.query_params.get("id") or "").strip()
        profile: dict[str, Any] | None = None
        error: str | None = None
        status = 200
        if name and self.profiles is not None:
            try:
                profile = await self.profiles.profile(space, name)
            except ProfileError as exc:
                error, status = exc.message, exc.status
                if exc.message == "Profile was not found.":
                    error = f"No profile {name!r} in space {space!r}."
        return self._render(
            request, "profile.html", session, status, section="profiles", spaces=spaces,
            space=space, name=name, profile=profile, error=error,
        )  # fmt: skip

    async def _audit(self, request: Request, session: Session) -> Response:
        """The audit trail, newest first, a page at a time (``?resource=``, ``?cursor=``)."""
        if self.audit is None:
            raise ObserveError("starting", "the audit trail is not open yet; reload", 503)
        resource = (request.query_params.get("resource") or "").strip() or None
        cursor = request.query_params.get("cursor") or None
        try:
            page = await asyncio.to_thread(self.audit.entries, resource, None,
                                           AUDIT_PAGE_ENTRIES, cursor)  # fmt: skip
        except ValueError as exc:
            raise ObserveError("invalid_cursor", str(exc), 400) from None
        return self._render(
            request, "audit.html", session, section="audit", resource=resource,
            entries=[e.to_json() for e in page.entries], next_cursor=page.next_cursor,
        )  # fmt: skip

    async def _cluster(self, request: Request, session: Session) -> Response:
        """The nodes sharing the state (role, host, pid, heartbeat, the destinations each
        delivers) and the stream's copies as its leader reports them."""
        state = self.workspace.state
        nodes: list[NodeRow] = []
        nodes_error = None
        if postgres.uses_postgres(state):
            try:
                nodes = await asyncio.get_running_loop().run_in_executor(
                    None, postgres.Probe(state).cluster
                )
            except StateUnavailable as exc:
                nodes_error = str(exc)
        log = self.observer.log
        stats = log.stats() if log is not None else None
        return self._render(
            request, "cluster.html", session, section="cluster", nodes=nodes,
            nodes_error=nodes_error, shared_state=postgres.uses_postgres(state),
            log_backend=self.workspace.log.backend,
            replicas=stats.replicas if stats is not None else (),
            silent_secs=NODE_SILENT_SECS, replica_silent_secs=REPLICA_SILENT_SECS,
        )  # fmt: skip

    def _warehouse_view(self) -> WarehouseView:
        if self.warehouses is None:
            raise ObserveError("starting", "the warehouses' state is not open yet; reload", 503)
        return self.warehouses

    def _function_docs(self) -> dict[str, dict[str, Any]]:
        stats = read_stats(self.functions_dir) if self.functions_dir is not None else {}
        return {f.name: summary(f, stats.get(f.name)) for f in self.workspace.functions}

    async def _functions(self, request: Request, session: Session) -> Response:
        """Every function: kind, where it runs, invocations, errors, p50/p99, state."""
        rows = list((await asyncio.to_thread(self._function_docs)).values())
        return self._render(request, "functions.html", session, section="functions", rows=rows)

    async def _function(self, request: Request, session: Session) -> Response:
        """One function: its figures, failures with their tracebacks, its last log lines,
        and a source function's URL for a role that may see its secret."""
        name = request.path_params["name"]
        doc = (await asyncio.to_thread(self._function_docs)).get(name)
        if doc is None:
            names = ", ".join(f.name for f in self.workspace.functions) or "none"
            raise ObserveError("not_found", f"no function is named {name!r}; the functions "
                               f"are {names}", 404)  # fmt: skip
        url = None
        if (
            doc["kind"] == "source"
            and self.functions_dir is not None
            and (session.principal.has("functions:write"))
        ):
            url = await asyncio.to_thread(source_url, self.functions_dir, name,
                                          str(request.base_url))  # fmt: skip
        return self._render(request, "function.html", session, section="functions", f=doc,
                            url=url)  # fmt: skip

    def _paused(self, space: str) -> dict[str, dict[str, Any]]:
        return self.activator.paused(space) if self.activator is not None else {}

    async def _audiences(self, request: Request, session: Session) -> Response:
        """Every space's audiences: size, the last hour's entries and exits, backfill,
        destinations (paused or not)."""
        spaces = []
        if self.profiles is not None:
            for space in self.workspace.spaces:
                doc = await self.profiles.audiences(space.name)
                paused = await asyncio.to_thread(self._paused, space.name)
                spaces.append({"name": space.name, "audiences": doc["audiences"],
                               "paused": paused})  # fmt: skip
        return self._render(request, "audiences.html", session, section="audiences",
                            spaces=spaces)  # fmt: skip

    async def _audience(self, request: Request, session: Session) -> Response:
        """One audience: its condition, size over the last 24 hours, members, the latest
        entries and exits, and why a profile is in it or not (``?id=user_id:u-42``)."""
        if self.profiles is None:
            raise ObserveError("starting", "the profiles are not open yet; reload", 503)
        space, key = request.path_params["space"], request.path_params["key"]
        try:
            doc = await self.profiles.audience(space, key, {"limit": "50"})
        except ProfileError as exc:
            raise ObserveError(exc.code, exc.message, exc.status) from None
        name = (request.query_params.get("id") or "").strip()
        why: dict[str, Any] | None = None
        error: str | None = None
        status = 200
        if name:
            try:
                why = await self.profiles.why(space, key, name)
            except ProfileError as exc:
                error, status = exc.message, exc.status
                if exc.message == "Profile was not found.":
                    error = f"No profile {name!r} in space {space!r}."
        paused = await asyncio.to_thread(self._paused, space)
        return self._render(request, "audience.html", session, status, section="audiences",
                            space=space, a=doc, paused=paused, name=name, why=why,
                            error=error)  # fmt: skip

    async def _warehouses(self, request: Request, session: Session) -> Response:
        """Every warehouse: its last sync, lag and discards."""
        rows = await self._warehouse_view().statuses()
        return self._render(request, "warehouses.html", session, section="warehouses", rows=rows)

    async def _warehouse(self, request: Request, session: Session) -> Response:
        return await self._warehouse_page(request, session)

    async def _warehouse_page(
        self, request: Request, session: Session, requested: int | None = None
    ) -> Response:
        """One warehouse: last syncs, rows per table, lag, errors with their fix, discards."""
        view = self._warehouse_view()
        name = request.path_params["name"]
        try:
            view.require(name)
        except KeyError as exc:
            raise ObserveError("not_found", str(exc.args[0]), 404) from exc
        doc = await view.status(name, history=20)
        last = doc["lastSync"]
        fix = None
        if last is not None and last["status"] in ("failed", "partial", "interrupted"):
            fix = FIXES.get(last.get("errorKind") or "error", FIXES["error"])
        return self._render(
            request, "warehouse.html", session, section="warehouses", w=doc, fix=fix,
            requested=requested,
        )  # fmt: skip

    async def _sync_warehouse(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        """Ask the loader for a sync now (it takes the request within a second)."""
        name = request.path_params["name"]
        view = self._warehouse_view()
        try:
            requested = await view.request(name, "sync")
        except KeyError as exc:
            raise ObserveError("not_found", str(exc.args[0]), 404) from exc
        return await self._warehouse_page(request, session, requested)

    async def _diagnose(self, request: Request, session: Session) -> Response:
        window_text, choices = self._window(request)
        source = request.query_params.get("source") or None
        destination = request.query_params.get("destination") or None
        report = await self.observer.diagnose(
            self.observer.window(window_text), source, destination
        )
        return self._render(
            request, "diagnose.html", session, section="diagnose", report=report,
            window=window_text, windows=choices, source=source, destination=destination,
            sources=[s.name for s in self.workspace.sources],
            destinations=[d.name for d in self.workspace.destinations],
        )  # fmt: skip


def _declared(route: Route, need: Need) -> Route:
    declare(need.permission, source_param=need.source_param, lists_sources=need.lists_sources)(
        route
    )
    return route


def pasted_event(text: str, optional: bool) -> tuple[dict[str, Any] | None, str | None]:
    """A pasted event: (the event, None), (None, None) when empty and ``optional``, or
    (None, what is wrong with it)."""
    if not text.strip():
        return None, None if optional else "Paste one event as a JSON object."
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, f"The event is not valid JSON ({exc}). Fix it and try again."
    if not isinstance(event, dict):
        return None, (
            'The event must be one JSON object, e.g. {"type": "track", "event": "Order '
            'Completed", "userId": "u1"}.'
        )
    return event, None


async def _to_console(request: Request) -> Response:
    return RedirectResponse(HOME, 307)


def _plain(status: int, text: str) -> Response:
    return Response(text, status_code=status, media_type="text/plain; charset=utf-8")


async def _read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body of at most ``limit`` bytes (None if
    larger); anything else reads as an empty form. Read by hand so that an unauthenticated
    request cannot make the server buffer a large body."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    try:
        pairs = parse_qsl(
            body.decode("utf-8", "replace"), keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
        )  # fmt: skip
    except ValueError:
        return {}
    return dict(pairs)
