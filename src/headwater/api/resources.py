"""The write side of ``/api/v1``: one pattern for every resource of the workspace.

For each :class:`~headwater.config.resources.Kind` (``sources``, ``destinations``,
``alert-rules``, ...; a new workspace section is one ``register`` call there):

    GET    /api/v1/<kind>?pagination.cursor=&pagination.count=   a page (see OWN_READS)
    GET    /api/v1/<kind>/<name>                                 one, with ``ETag``
    POST   /api/v1/<kind>                                        create (201)
    PUT    /api/v1/<kind>/<name>         If-Match                replace
    DELETE /api/v1/<kind>/<name>         If-Match                delete
    POST   /api/v1/<kind>/<name>/enable | /disable               sources, destinations

plus ``POST /api/v1/sources/<name>/rotate-write-key``, ``PUT /api/v1/destinations/<name>/
filters`` and the whole workspace for config as code: ``GET /api/v1/workspace`` (export,
secrets as environment references), ``POST /api/v1/workspace/plan`` (what an apply would
change) and ``PUT /api/v1/workspace`` (apply, ``If-Match`` the revision).

Every change goes through :class:`~headwater.config.changes.ConfigService`: validated as a
whole workspace, refused whole with each fault's field, applied to the running process at
once. The version in ``ETag`` is the workspace revision that last changed the resource.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from fastapi import Body, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from headwater.api.auth import current_principal, requires
from headwater.api.errors import error_response
from headwater.config.changes import (
    DEFAULT_GRACE_SECS,
    ChangeError,
    ConfigService,
    fault,
    masked,
    with_env_refs,
)
from headwater.config.resources import KINDS, Kind
from headwater.config.workspace import parse_workspace

PAGE_DEFAULT = 50
PAGE_MAX = 200
OWN_READS = frozenset({"sources", "destinations", "tracking-plans", "warehouses"})
"""Kinds whose list and one-item reads are routes of their own (same paths, richer
documents: delivery counters, write-key prefixes, syncs); their one-item reads carry the
ETag too (:func:`set_etag`)."""

JsonObject = Annotated[
    dict[str, Any],
    Body(description="The resource as the workspace file writes it (docs/configuration.md)"),
]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description="The ETag you read: the change is refused (412) if the resource changed since",
    ),
]
Cursor = Annotated[str | None, Query(alias="pagination.cursor", description="From `next`.")]
Count = Annotated[int, Query(alias="pagination.count", ge=1, le=PAGE_MAX)]

CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "A resource of that name exists already."},
    412: {"description": "The resource changed since the ETag in If-Match."},
}


def camel(plural: str) -> str:
    head, *rest = plural.split("-")
    return head + "".join(p.title() for p in rest)


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"i:{index}".encode()).decode()


def _index(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith("i:"):
            raise ValueError(text)
        return max(0, int(text[2:]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ChangeError(
            400,
            [
                fault(
                    "invalid_cursor",
                    "pagination.cursor is not a cursor this API gave; use the `next` of a page",
                    "pagination.cursor",
                )
            ],
        ) from None


def paginate(
    items: Sequence[Any], cursor: str | None, count: int
) -> tuple[list[Any], dict[str, Any]]:
    """A page as Segment's Public API cuts one: ``pagination.current``, ``next`` (absent on
    the last page) and ``totalEntries``."""
    start = _index(cursor)
    page = list(items[start : start + count])
    info: dict[str, Any] = {"current": _cursor(start), "totalEntries": len(items)}
    if start + count < len(items):
        info["next"] = _cursor(start + count)
    return page, info


def parse_if_match(value: str | None) -> int | None:
    if value is None or value.strip() == "*":
        return None
    found = re.fullmatch(r'\s*(?:W/)?"?(\d{1,18})"?\s*', value)
    if found is None:
        raise ChangeError(
            400,
            [
                fault(
                    "invalid_if_match",
                    f"If-Match {value!r} is not an ETag "
                    'of this API (e.g. "12"); send the ETag you read',
                    "If-Match",
                )
            ],
        )
    return int(found.group(1))


def etag(response: Response, version: int) -> None:
    response.headers["etag"] = f'"{version}"'


def set_etag(service: ConfigService | None, response: Response, kind: str, name: str) -> None:
    """The ETag of a resource served by an older read route (none if it is not stored)."""
    if service is None:
        return
    version = service.snapshot().versions.get((kind, name))
    if version is not None:
        etag(response, version)


def change_error(exc: ChangeError) -> JSONResponse:
    return error_response(exc.status, exc.faults or [fault("error", str(exc))], **exc.extra)


def register(app: FastAPI, service: ConfigService) -> None:
    app.add_exception_handler(ChangeError, lambda _r, e: change_error(e))
    for kind in list(KINDS.values()):
        if kind.plural not in OWN_READS:
            _reads(app, service, kind)
        _writes(app, service, kind)
        if kind.toggles:
            _toggles(app, service, kind)
    _sources(app, service)
    _filters(app, service)
    _workspace(app, service)


def _reads(app: FastAPI, service: ConfigService, kind: Kind) -> None:
    tag, key = kind.plural.replace("-", " "), camel(kind.plural)

    @app.get(
        f"/api/v1/{kind.plural}",
        tags=[tag],
        summary=f"List the {tag}",
        name=f"list_{key}",
        dependencies=[requires(kind.read)],
    )
    async def list_all(cursor: Cursor = None, count: Count = PAGE_DEFAULT) -> dict[str, Any]:
        snap = service.snapshot()
        items = [masked(k, d) for (k, _), d in snap.resources.items() if k == kind.plural]
        page, info = paginate(items, cursor, count)
        return {key: page, "pagination": info}

    @app.get(
        f"/api/v1/{kind.plural}/{{name}}",
        tags=[tag],
        summary=f"One {kind.singular}",
        name=f"get_{key}",
        dependencies=[requires(kind.read)],
    )
    async def get_one(name: str, response: Response) -> dict[str, Any]:
        doc, version = service.get(kind.plural, name)
        etag(response, version)
        return {
            camel(kind.singular.replace(" ", "-")): masked(kind.plural, doc),
            "version": version,
        }


def _writes(app: FastAPI, service: ConfigService, kind: Kind) -> None:
    tag, key = kind.plural.replace("-", " "), camel(kind.plural)
    one = [requires(kind.write, source_param="name" if kind.plural == "sources" else None)]

    @app.post(
        f"/api/v1/{kind.plural}",
        tags=[tag],
        status_code=201,
        name=f"create_{key}",
        summary=f"Create a {kind.singular} (applied at once)",
        responses=CHANGE_RESPONSES,
        dependencies=[requires(kind.write)],
    )
    async def create(body: JsonObject, request: Request, response: Response) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            if kind.plural != "alert-rules":
                raise ChangeError(400, [fault("invalid", "required field is missing", "name")])
            name = kind.key({}, sum(1 for k, _ in service.snapshot().resources if k == kind.plural))
        result = await service.put(kind.plural, name, body, None, create=True, **_who(request))
        etag(response, result["version"])
        return result

    if kind.plural != "tracking-plans":  # its PUT is the processor's (api/processing.py)

        @app.put(
            f"/api/v1/{kind.plural}/{{name}}",
            tags=[tag],
            name=f"replace_{key}",
            summary=f"Replace a {kind.singular} (applied at once)",
            responses=CHANGE_RESPONSES,
            dependencies=one,
        )
        async def replace(
            name: str,
            body: JsonObject,
            request: Request,
            response: Response,
            if_match: IfMatch = None,
        ) -> dict[str, Any]:
            if body.get("name", name) != name:
                raise ChangeError(
                    400,
                    [
                        fault(
                            "invalid",
                            f"the body names {body.get('name')!r}, "
                            f"the path {name!r}; renaming is a create and a "
                            "delete",
                            "name",
                        )
                    ],
                )
            version = parse_if_match(if_match)
            result = await service.put(kind.plural, name, body, version, **_who(request))
            etag(response, result["version"])
            return result

    @app.delete(
        f"/api/v1/{kind.plural}/{{name}}",
        tags=[tag],
        name=f"delete_{key}",
        summary=f"Delete a {kind.singular} (applied at once; a destination's backlog "
        "and dead letters are kept until purged)",
        responses=CHANGE_RESPONSES,
        dependencies=one,
    )
    async def delete(name: str, request: Request, if_match: IfMatch = None) -> dict[str, Any]:
        return await service.put(kind.plural, name, None, parse_if_match(if_match), **_who(request))


def _toggles(app: FastAPI, service: ConfigService, kind: Kind) -> None:
    tag, key = kind.plural.replace("-", " "), camel(kind.plural)
    for enabled in (True, False):
        verb = "enable" if enabled else "disable"

        async def toggle(
            name: str, request: Request, if_match: IfMatch = None, enabled: bool = enabled
        ) -> dict[str, Any]:
            version = parse_if_match(if_match)
            return await service.put(kind.plural, name, None, version, **_who(request),
                                     change=lambda doc: {**doc, "enabled": enabled})  # fmt: skip

        app.post(
            f"/api/v1/{kind.plural}/{{name}}/{verb}",
            tags=[tag],
            name=f"{verb}_{key}",
            summary=f"{verb.title()} a {kind.singular}",
            responses=CHANGE_RESPONSES,
            dependencies=[
                requires(kind.write, source_param="name" if kind.plural == "sources" else None)
            ],
        )(toggle)


def _sources(app: FastAPI, service: ConfigService) -> None:
    @app.post(
        "/api/v1/sources/{name}/rotate-write-key",
        tags=["sources"],
        summary="A new write key; the old one stays valid for graceSecs (default a day)",
        dependencies=[requires("sources:write", source_param="name")],
    )
    async def rotate(
        name: str,
        request: Request,
        grace_secs: Annotated[
            float, Query(alias="graceSecs", ge=0, le=90 * 86400)
        ] = DEFAULT_GRACE_SECS,
        if_match: IfMatch = None,
    ) -> dict[str, Any]:
        return await service.rotate(name, grace_secs, parse_if_match(if_match), **_who(request))


def _filters(app: FastAPI, service: ConfigService) -> None:
    @app.put(
        "/api/v1/destinations/{name}/filters",
        tags=["destinations"],
        summary="Replace a destination's filters (in order; applied at once)",
        responses=CHANGE_RESPONSES,
        dependencies=[requires("destinations:write")],
    )
    async def put_filters(
        name: str,
        request: Request,
        filters: Annotated[list[dict[str, Any]], Body(description="docs/fql.md")],
        if_match: IfMatch = None,
    ) -> dict[str, Any]:
        version = parse_if_match(if_match)
        return await service.put("destinations", name, None, version, **_who(request),
                                 change=lambda doc: {**doc, "filters": filters})  # fmt: skip


def _workspace(app: FastAPI, service: ConfigService) -> None:
    @app.get(
        "/api/v1/workspace",
        tags=["workspace"],
        summary="The running configuration as a workspace file (secrets as ${ENV} "
        "references); `ETag` is its revision",
        dependencies=[requires("workspace:read")],
    )
    async def export(response: Response) -> dict[str, Any]:
        snap = service.snapshot()
        workspace = parse_workspace(snap.document())
        doc = workspace.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        doc, names = with_env_refs(doc)
        etag(response, snap.revision)
        return {"revision": snap.revision, "workspace": doc, "secrets": names}

    @app.post(
        "/api/v1/workspace/plan",
        tags=["workspace"],
        summary="What applying this workspace would create, change and delete",
        dependencies=[requires("workspace:read")],
    )
    async def plan(body: JsonObject, request: Request) -> dict[str, Any]:
        may_write = current_principal(request).has("workspace:write")
        return service.plan_for(body, compare_secrets=may_write)

    @app.put(
        "/api/v1/workspace",
        tags=["workspace"],
        responses=CHANGE_RESPONSES,
        summary="Apply a whole workspace in one change (If-Match: the revision planned)",
        dependencies=[requires("workspace:write")],
    )
    async def apply(body: JsonObject, request: Request, if_match: IfMatch = None) -> dict[str, Any]:
        return await service.replace_all(body, parse_if_match(if_match), **_who(request))


class Who(TypedDict):
    actor: str
    origin: str


def _who(request: Request) -> Who:
    """Who makes a change, for the audit trail: the token's name, and from where."""
    return {
        "actor": current_principal(request).name,
        "origin": getattr(request.state, "origin", "api"),
    }
