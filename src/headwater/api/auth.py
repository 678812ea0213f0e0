"""Who may use the management API and the console: the admin token, and scoped tokens.

A request's token resolves to a :class:`~headwater.api.permissions.Principal` (name, role,
source) through :class:`Authenticator`: the admin token is the owner named ``admin``; a
scoped token (``headwater tokens create``, :mod:`headwater.state.tokens`) is itself. Each
route then checks the permission it declared (:func:`requires`); refusals are 403 naming the
missing permission. The Profile API calls :func:`check_profiles_read` with its Basic header.

The admin token:

The token is generated at first start (``headwater serve`` prints it once) and only its
SHA-256 is kept, in ``<data-dir>/auth/admin_token.sha256``; or it is set by the operator
through ``HEADWATER_ADMIN_TOKEN``, which then wins (nothing is written). Requests send it
as ``Authorization: Bearer <token>``; the console exchanges it for a session cookie at its
login page (:mod:`headwater.console.sessions`). Comparisons take constant time.

The Tracking API (``/v1/*``) is not covered: SDKs authenticate with write keys.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import Depends, Request

from headwater.api.permissions import ADMIN, PUBLIC, Need, PermissionDenied, Principal, declare
from headwater.state.admin_token import AdminToken
from headwater.state.tokens import TokenStore


class Authenticator:
    """Resolves a presented token to its principal: the admin token, or a scoped token
    looked up in the data directory's token store at each call (so tokens the CLI creates
    or revokes beside the running server count at once)."""

    def __init__(self, admin: AdminToken, tokens: TokenStore | None = None) -> None:
        self.admin = admin
        self.tokens = tokens

    def principal(self, token: str | None) -> Principal | None:
        if not token:
            return None
        if self.admin.check(token):
            return ADMIN
        if self.tokens is None:
            return None
        record = self.tokens.lookup(token)
        return Principal(record.name, record.role, record.source) if record else None

    def active(self, principal: Principal) -> bool:
        """Whether a principal resolved earlier (a console session's) still holds: its
        token not revoked since."""
        if principal == ADMIN:
            return True
        record = self.tokens.get(principal.name) if self.tokens is not None else None
        return record is not None and record.active and record.role == principal.role

    def from_bearer(self, authorization: str | None) -> Principal | None:
        """``Authorization: Bearer <token>`` (the scheme is case-insensitive)."""
        scheme, _, value = (authorization or "").partition(" ")
        return self.principal(value.strip()) if scheme.lower() == "bearer" else None

    def from_basic(self, authorization: str | None) -> Principal | None:
        """``Authorization: Basic base64(<token>:)`` — how Segment's Profile API is called
        (the token as the user name, no password)."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return self.principal(decoded.partition(":")[0])


def check_profiles_read(auth: Authenticator, authorization: str | None) -> Principal | None:
    """For the Profile API: the principal of a Basic (or Bearer) header when it may read
    profiles; None when no valid token was sent (answer 401); raises
    :class:`~headwater.api.permissions.PermissionDenied` when the token is valid but lacks
    ``profiles:read`` (answer 403 with its message)."""
    principal = auth.from_basic(authorization) or auth.from_bearer(authorization)
    if principal is None:
        return None
    principal.check("profiles:read")
    return principal


def current_principal(request: Request) -> Principal:
    """The principal the app-level dependency resolved (``request.state.principal``)."""
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):
        raise RuntimeError("no principal: the route runs outside the authenticating app")
    return found


def requires(
    permission: str, *, source_param: str | None = None, lists_sources: bool = False
) -> Any:
    """A FastAPI dependency: the route needs ``permission`` (for the source named by the
    path parameter ``source_param``, when the route is about one source). Use it in the
    route's ``dependencies=[...]``; the route walk test reads it back from the route."""

    @declare(permission, source_param=source_param, lists_sources=lists_sources)
    async def check(request: Request) -> None:
        if permission == PUBLIC:
            return
        source = request.path_params.get(source_param) if source_param else None
        current_principal(request).check(permission, source, lists_sources=lists_sources)

    return Depends(check)


__all__ = [
    "AdminToken",
    "Authenticator",
    "Need",
    "PermissionDenied",
    "Principal",
    "check_profiles_read",
    "current_principal",
    "requires",
]
