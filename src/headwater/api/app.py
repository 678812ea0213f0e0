"""The management API under ``/api/v1``, and its OpenAPI document at ``/api/openapi.json``.

Every route needs a token (``Authorization: Bearer``: the admin token or a scoped one,
:mod:`headwater.api.auth`) or a console session (a cookie; then any method but GET also needs
the session's CSRF token in ``X-CSRF-Token``), and declares the permission it needs
(:func:`~headwater.api.auth.requires`, docs/access.md): a token whose role lacks it is
answered 403 naming the permission. Errors are ``{"code", "message"}`` like the Tracking
API's, with a message that says what to do. Secrets in destination settings are never
returned.

The OpenAPI document itself is public: it describes the routes, the same in every
installation, and holds no data or secret of this one (tests/api/test_management_api.py).

The routes only read what :class:`~headwater.observe.service.Observer` and the workspace
already know; the console renders the same documents as pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from headwater import __version__
from headwater.api import (
    audiences,
    audit_routes,
    errors,
    functions,
    processing,
    resources,
    testing,
    tokens,
    warehouses,
)
from headwater.api.auth import Authenticator, current_principal, requires
from headwater.api.errors import ErrorBody
from headwater.api.params import WindowParam
from headwater.api.permissions import (
    ADMIN,
    PUBLIC,
    PermissionDenied,
    Principal,
    declare,
    route_need,
)
from headwater.config.changes import ConfigService
from headwater.config.workspace import DestinationConfig, SourceConfig, Workspace
from headwater.engage.activation import Activator
from headwater.gateway.stats import redact_key
from headwater.observe.debugger import UNATTRIBUTED
from headwater.observe.service import ObserveError, Observer
from headwater.observe.tester import Tester
from headwater.processor.admin import AdminError, ProcessorAdmin
from headwater.state.audit import AuditLog
from headwater.unify.api import Profiles
from headwater.warehouses.view import WarehouseView

MASK = "**********"
DEVSINK_LIMIT_MAX = 10_000

SessionCheck = Callable[[Request], Awaitable[Principal | None]]
"""The principal of the request's console session (None without a valid session, or
without its CSRF token when the method needs one)."""


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request is malformed; the message says how."},
    401: {"model": ErrorBody, "description": "No token, or a wrong one."},
    403: {
        "model": ErrorBody,
        "description": "The token's role lacks the permission the route needs (named).",
    },
    404: {"model": ErrorBody, "description": "No such source, destination or event."},
}


def build_api(
    workspace: Workspace,
    observer: Observer,
    auth: Authenticator,
    session_check: SessionCheck | None = None,
    admin: Callable[[], ProcessorAdmin | None] = lambda: None,
    warehouse_view: WarehouseView | None = None,
    audit: AuditLog | None = None,
    functions_dir: Path | None = None,
    workspace_file: Path | None = None,
    profiles: Profiles | None = None,
    activator: Activator | None = None,
    config: ConfigService | None = None,
) -> FastAPI:
    async def authorize(request: Request) -> None:
        """Who is asking (``request.state.principal``); each route's own dependency then
        checks its permission. A route that declared none is for owners only."""
        need = route_need(request.scope["route"]) if "route" in request.scope else None
        if need is not None and need.permission == PUBLIC:
            return
        principal = auth.from_bearer(request.headers.get("authorization"))
        request.state.origin = "api"
        if principal is None and session_check is not None:
            principal = await session_check(request)
            request.state.origin = "console"
        if principal is None:
            raise ApiError(
                "unauthorized",
                "this endpoint needs a token: send 'Authorization: Bearer <token>' (the admin "
                "token printed at first start or set through HEADWATER_ADMIN_TOKEN, or one "
                "from `headwater tokens create`)",
                401,
            )
        request.state.principal = principal
        if need is None and principal.role != ADMIN.role:
            raise PermissionDenied(principal, "owner", " (the route declares no permission)")

    app = FastAPI(
        title="Headwater management API",
        version=__version__,
        description="Sources, destinations, the debugger, Event Delivery, traces and diagnose. "
        "Authenticate with `Authorization: Bearer <token>`; each route needs a permission "
        "(docs/access.md).",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the bundled UIs load assets from CDNs; the machine may be offline
        redoc_url=None,
        dependencies=[Depends(authorize)],
        responses=ERRORS,
    )
    _errors(app)
    _sources(app, observer, config)
    _destinations(app, observer, config)
    _events(app, observer)
    processing.register(app, observer, admin, audit)
    testing.register(app, Tester(observer, admin))
    if warehouse_view is not None:
        warehouses.register(app, warehouse_view, config)
    if audit is not None:
        audit_routes.register(app, audit)
    if functions_dir is not None:
        functions.register(app, workspace, functions_dir, workspace_file)
    if profiles is not None:
        audiences.register(app, profiles, activator, audit)
    if config is not None:
        resources.register(app, config)
    if auth.tokens is not None:
        tokens.register(
            app, auth.tokens, audit, lambda: [s.name for s in observer.workspace.sources]
        )
    _document(app)
    _public_document(app)
    return app


def _public_document(app: FastAPI) -> None:
    """The OpenAPI document's own route is FastAPI's: mark it public for the route walk.
    It is also served under the version it describes, ``/api/v1/openapi.json``."""
    for route in app.routes:
        if getattr(route, "path", None) == app.openapi_url:
            declare(PUBLIC)(route)

    @app.get("/api/v1/openapi.json", include_in_schema=False, dependencies=[requires(PUBLIC)])
    async def versioned() -> JSONResponse:
        return JSONResponse(app.openapi())


def _document(app: FastAPI) -> None:
    """The OpenAPI document as the API behaves: bearer auth on every route, and bad input
    answered 400 ``{code, message}`` (FastAPI would list its own 422)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)  # fmt: skip
        components = doc.setdefault("components", {})
        components.setdefault("securitySchemes", {})["adminToken"] = {
            "type": "http", "scheme": "bearer",
            "description": "the admin token (printed at first start, or HEADWATER_ADMIN_TOKEN) "
            "or a scoped token (`headwater tokens create`)",
        }  # fmt: skip
        doc["security"] = [{"adminToken": []}]
        for operations in doc.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", ERRORS[400] | {"content": _error_content()})
        schemas = components.get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def _errors(app: FastAPI) -> None:
    """Every refusal in the one shape of :mod:`headwater.api.errors`."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return errors.one(exc.status, exc.code, exc.message, headers=headers)

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        """ObserveError and AdminError: a question or a change the API cannot take."""
        assert isinstance(exc, ObserveError | AdminError)
        return errors.one(exc.status, exc.code, exc.message)

    app.add_exception_handler(ObserveError, refused)
    app.add_exception_handler(AdminError, refused)

    @app.exception_handler(PermissionDenied)
    async def forbidden(request: Request, exc: PermissionDenied) -> JSONResponse:
        return errors.one(403, "forbidden", exc.message, permission=exc.permission)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        faults = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            where = ".".join(loc[1:] if loc[:1] in (["body"], ["query"], ["path"], ["header"])
                             else loc)  # fmt: skip
            message = str(e.get("msg", "invalid"))
            faults.append(errors.fault("invalid_request", f"{where}: {message}" if where
                                       else message, where or None))  # fmt: skip
        if not faults:
            faults = [errors.fault("invalid_request", "the request is malformed")]
        return errors.error_response(400, faults)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"{request.url.path} is not an endpoint of the API; see /api/openapi.json"
        return errors.one(exc.status_code, code, message)


def _sources(app: FastAPI, observer: Observer, config: ConfigService | None) -> None:
    def source_doc(source: SourceConfig) -> dict[str, Any]:
        return {
            "name": source.name,
            "enabled": source.enabled,
            "writeKeyPrefix": redact_key(source.write_key) if source.write_key else None,
            "corsOrigins": source.cors_origins,
            "destinations": [
                d.name for d in observer.workspace.destinations if source.name in d.sources
            ],
        }

    @app.get(
        "/api/v1/sources",
        tags=["sources"],
        summary="List the sources (a source_admin token sees its own)",
        dependencies=[requires("sources:read", lists_sources=True)],
    )
    async def list_sources(request: Request) -> dict[str, Any]:
        who = current_principal(request)
        return {
            "sources": [
                source_doc(s) for s in observer.workspace.sources if who.sees_source(s.name)
            ]
        }

    @app.get(
        "/api/v1/sources/{name}",
        tags=["sources"],
        summary="One source",
        dependencies=[requires("sources:read", source_param="name")],
    )
    async def get_source(name: str, response: Response) -> dict[str, Any]:
        doc = source_doc(observer.require_source(name))
        resources.set_etag(config, response, "sources", name)
        return doc

    @app.get(
        "/api/v1/sources/{name}/debugger",
        tags=["sources"],
        summary="The source's newest events and refusals (newest first)",
        dependencies=[requires("debugger:read", source_param="name")],
    )
    async def debugger(
        name: str, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> dict[str, Any]:
        observer.require_source(name)
        return {
            "source": name,
            "keep": observer.debugger.keep,
            "counts": observer.debugger.counts(name),
            # refusals no source could be named for (unknown or missing write key): they are
            # among the entries of every source's view, not in its counts
            "unattributedRejected": observer.debugger.counts(UNATTRIBUTED)["rejected"],
            "entries": observer.debugger.recent(name, limit),
        }

    @app.get(
        "/api/v1/sources/{name}/debugger/stream",
        tags=["sources"],
        summary="Live debugger (Server-Sent Events: `event: entry`, `event: missed`)",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
        dependencies=[requires("debugger:read", source_param="name")],
    )
    async def debugger_stream(name: str) -> StreamingResponse:
        observer.require_source(name)
        return StreamingResponse(
            observer.debugger.stream(name),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @app.get(
        "/api/v1/sources/{name}/overview",
        tags=["sources"],
        summary="Delivery Overview: received → failed on ingest → filtered → failed → delivered",
        dependencies=[requires("sources:read", source_param="name")],
    )
    async def overview(name: str, window: WindowParam = "1h") -> dict[str, Any]:
        return await observer.overview(name, observer.window(window))


def _destinations(app: FastAPI, observer: Observer, config: ConfigService | None) -> None:
    read = [requires("destinations:read")]

    @app.get(
        "/api/v1/destinations",
        tags=["destinations"],
        summary="List the destinations",
        dependencies=read,
    )
    async def list_destinations() -> dict[str, Any]:
        return {"destinations": [destination_doc(d) for d in observer.workspace.destinations]}

    @app.get(
        "/api/v1/destinations/{name}",
        tags=["destinations"],
        summary="One destination",
        dependencies=read,
    )
    async def get_destination(name: str, response: Response) -> dict[str, Any]:
        doc = destination_doc(observer.require_destination(name))
        resources.set_etag(config, response, "destinations", name)
        engine = observer.delivery
        if engine is not None:
            await engine.refresh()  # counters as they are now
        worker = engine.workers.get(name) if engine is not None else None
        if worker is not None:  # what each filter did since the server started
            doc["filterStats"] = worker.stage.stats()
            doc["transformedSinceStart"] = worker.stage.transformed
        return doc

    @app.get(
        "/api/v1/destinations/{name}/delivery",
        tags=["destinations"],
        summary="Event Delivery: outcomes, latency, errors with samples",
        dependencies=read,
    )
    async def delivery(name: str, window: WindowParam = "1h") -> dict[str, Any]:
        return await observer.delivery_report(name, observer.window(window))

    @app.get(
        "/api/v1/devsink/{name}",
        tags=["destinations"],
        summary="The newest events a devsink destination received (newest first)",
        dependencies=read,
    )
    async def devsink(
        name: str, limit: Annotated[int, Query(ge=1, le=DEVSINK_LIMIT_MAX)] = 100
    ) -> dict[str, Any]:
        engine = observer.delivery
        page = await engine.devsink_page(name, limit) if engine is not None else None
        if page is None:
            sinks = [d.name for d in observer.workspace.destinations if d.type == "devsink"]
            raise ApiError(
                "not_found",
                f"no devsink destination is named {name!r}; the devsinks are: "
                f"{', '.join(sinks) or 'none'}",
                404,
            )
        return {"destination": name, **page}


def _events(app: FastAPI, observer: Observer) -> None:
    @app.get(
        "/api/v1/events/{message_id:path}",  # a messageId is any string, slashes included
        tags=["events"],
        summary="Trace one event: where it came from, what each stage decided, its delivery",
        dependencies=[requires("events:read")],
    )
    async def trace(message_id: str) -> dict[str, Any]:
        return await observer.trace(message_id)

    @app.get(
        "/api/v1/diagnose",
        tags=["diagnose"],
        summary="The most likely causes of missing events, with evidence and fixes",
        dependencies=[requires("diagnose:read")],
    )
    async def diagnose(
        since: WindowParam = "1h", source: str | None = None, destination: str | None = None
    ) -> dict[str, Any]:
        return await observer.diagnose(observer.window(since), source, destination)


def destination_doc(config: DestinationConfig) -> dict[str, Any]:
    return {
        "name": config.name,
        "type": config.type,
        "enabled": config.enabled,
        "sources": config.sources,
        "settings": redacted_settings(config),
        "delivery": config.delivery.model_dump(mode="json"),
        "filters": [f.model_dump(mode="json", by_alias=True) for f in config.filters],
    }


def redacted_settings(config: DestinationConfig) -> dict[str, Any]:
    """The settings with secrets masked: secret-typed fields, and every header value (user
    headers often carry tokens under names of their own, e.g. ``X-Honeycomb-Team``)."""
    from headwater.destinations import TYPES

    kind = TYPES.get(config.type)
    if kind is None:
        return {}
    model = kind.settings_model.model_validate(config.settings)
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            out[name] = MASK
        elif name == "headers" and isinstance(value, dict):  # names only: values carry keys
            out[name] = {k: MASK for k in value}
        elif isinstance(value, BaseModel):
            out[name] = value.model_dump(mode="json")
        else:
            out[name] = value
    return out
