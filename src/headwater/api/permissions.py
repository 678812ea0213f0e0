"""Roles, the permissions they hold, and how a route declares the one it needs.

Every route of the management API, the console and the web app declares exactly one
permission — :func:`requires` for FastAPI routes, :func:`declare` for Starlette endpoints
(``public`` for health checks, metrics and the status page, which need no token). A test
walks every route registered on the app with every role (tests/api/test_permissions.py),
so a route added without a declaration fails it; at run time such a route is owner-only.

A ``source_admin`` token holds its permissions for one source only: a route that names a
source in its path declares which parameter it is (``source_param``), and a list of sources
declares ``lists_sources`` and shows that token its own source alone. Anywhere else the
token is refused.

The table of roles × permissions is in docs/access.md; :data:`ROLES` is its source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

PUBLIC = "public"

PERMISSIONS: dict[str, str] = {
    "sources:read": "see sources, their Delivery Overview",
    "sources:write": "create, change, enable/disable, delete sources; rotate write keys",
    "debugger:read": "the live debugger of a source (events as they arrive)",
    "destinations:read": "see destinations, Event Delivery, filters, devsink contents",
    "destinations:write": "create, change, enable/disable, delete destinations and filters",
    "tracking-plans:read": "see tracking plans and violations",
    "tracking-plans:write": "create and replace tracking plans",
    "delivery:write": "resend blocked events, retry/purge dead letters, replays",
    "events:read": "trace one event",
    "diagnose:read": "diagnose missing events",
    "tester:run": "test a destination and the event tester (may send one event for real)",
    "workspace:read": "export the running configuration",
    "workspace:write": "apply a workspace file, alert rules, maintenance windows",
    "audit:read": "read the audit trail",
    "warehouses:read": "see warehouses: syncs, rows per table, lag, errors, discards",
    "warehouses:write": "start a warehouse sync or backfill",
    "functions:read": "see functions: invocations, errors, durations, logs, failures",
    "functions:write": "a source function's URL (it holds its secret); reload functions",
    "tokens:read": "list tokens (names and roles; never the tokens)",
    "tokens:write": "create and revoke tokens",
    "profiles:read": "the Profile API (/v1/spaces/...)",
    "profiles:write": "delete a profile (DELETE /v1/spaces/.../profiles/...)",
}

_READS = frozenset(p for p in PERMISSIONS if p.endswith(":read") and p != "tokens:read")
_ALL = frozenset(PERMISSIONS)

ROLES: dict[str, frozenset[str]] = {
    "owner": _ALL,
    "admin": _ALL,  # but cannot create owner tokens (creatable_by)
    "editor": _ALL - {"tokens:read", "tokens:write"},
    "read_only": _READS,
    "source_admin": frozenset(
        {"sources:read", "sources:write", "debugger:read", "tracking-plans:read", "delivery:write"}
    ),
    "profiles_read": frozenset({"profiles:read"}),
}
SOURCE_ROLES = frozenset({"source_admin"})
ROLE_HELP = {
    "owner": "everything, including owner tokens",
    "admin": "everything but creating owner tokens",
    "editor": "read and change the configuration; no tokens",
    "read_only": "read everything but the token list",
    "source_admin": "one source: its settings, debugger, violations, blocked events",
    "profiles_read": "the Profile API only",
}


class PermissionDenied(Exception):
    """A principal lacks the permission a route needs (answered 403, naming it)."""

    def __init__(self, principal: Principal, permission: str, detail: str = "") -> None:
        self.permission = permission
        who = f"token {principal.name!r} (role {principal.role}"
        who += f", source {principal.source})" if principal.source else ")"
        self.message = (
            f"this needs the permission {permission!r}, which {who} does not have{detail}; "
            "ask an owner or admin for a token with a role that has it (docs/access.md)"
        )
        super().__init__(self.message)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token's name (the audit trail's actor), its role and, for
    ``source_admin``, its source."""

    name: str
    role: str
    source: str | None = None

    def has(self, permission: str) -> bool:
        return permission == PUBLIC or permission in ROLES.get(self.role, frozenset())

    def allows(
        self, permission: str, source: str | None = None, *, lists_sources: bool = False
    ) -> bool:
        """Whether this principal may use a route that needs ``permission`` (about
        ``source`` when the route names one)."""
        if not self.has(permission):
            return False
        if self.source is None or permission == PUBLIC:
            return True
        return lists_sources or source == self.source

    def check(
        self, permission: str, source: str | None = None, *, lists_sources: bool = False
    ) -> None:
        if self.allows(permission, source, lists_sources=lists_sources):
            return
        detail = ""
        if self.has(permission):
            detail = f" for source {source!r}" if source else " outside its source"
        raise PermissionDenied(self, permission, detail)

    def sees_source(self, name: str) -> bool:
        return self.source is None or name == self.source


ADMIN = Principal("admin", "owner")
"""The admin token's principal: an owner named ``admin``."""


def validate_role(role: str, source: str | None, known_sources: Iterable[str] | None) -> None:
    """Refuse a role that does not exist, a source_admin without (or with an unknown)
    source, and a source on a role that is not scoped to one."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} does not exist; use one of {', '.join(ROLES)}")
    if role in SOURCE_ROLES and not source:
        raise ValueError(f"role {role} is for one source: add --source NAME")
    if role not in SOURCE_ROLES and source:
        raise ValueError(f"role {role} is not scoped to a source; drop --source")
    known = None if known_sources is None else set(known_sources)
    if source and known is not None and source not in known:
        raise ValueError(
            f"source {source!r} is not in the workspace; the sources are: "
            f"{', '.join(sorted(known)) or 'none'}"
        )


def creatable_by(creator: Principal, role: str) -> bool:
    """Only an owner makes owner tokens; anyone with ``tokens:write`` makes the rest."""
    return creator.has("tokens:write") and (role != "owner" or creator.role == "owner")


# ------------------------------------------------------------------ declarations


@dataclass(frozen=True, slots=True)
class Need:
    """What a route declared: the permission, and how it names a source."""

    permission: str
    source_param: str | None = None
    lists_sources: bool = False


PERMISSION_ATTR = "__headwater_need__"


def declare(
    permission: str, *, source_param: str | None = None, lists_sources: bool = False
) -> Callable[[Any], Any]:
    """Mark a Starlette endpoint (or any callable) with the permission it needs."""
    if permission != PUBLIC and permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    need = Need(permission, source_param, lists_sources)

    def mark(endpoint: Any) -> Any:
        setattr(endpoint, PERMISSION_ATTR, need)
        return endpoint

    return mark


def declare_routes(permission: str, routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """Mark routes themselves (their endpoints may be bound methods, which take no marks)."""
    mark = declare(permission)
    return [mark(route) for route in routes]


def need_of(call: Any) -> Need | None:
    found = getattr(call, PERMISSION_ATTR, None)
    return found if isinstance(found, Need) else None


def route_need(route: BaseRoute) -> Need | None:
    """The permission a route declared, read from the route object (FastAPI's dependency
    tree, or the Starlette endpoint's mark)."""
    own = need_of(route)
    if own is not None:
        return own
    dependant = getattr(route, "dependant", None)
    if dependant is not None:
        for dep in _walk_dependants(dependant):
            found = need_of(dep.call)
            if found is not None:
                return found
    return need_of(getattr(route, "endpoint", None))


def _walk_dependants(dependant: Any) -> Iterator[Any]:
    for dep in dependant.dependencies:
        yield dep
        yield from _walk_dependants(dep)


def walk_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every endpoint route with its full path, mounts followed."""
    for route in routes:
        if isinstance(route, Mount):
            yield from walk_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route) or hasattr(route, "path"):
            yield prefix + getattr(route, "path", ""), route
