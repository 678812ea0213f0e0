"""``/api/v1/tokens``: scoped tokens through the API, as ``headwater tokens`` makes them.

A token is shown once, in the answer that creates it; only its SHA-256 is kept. Only an
owner makes owner tokens (:func:`~headwater.api.permissions.creatable_by`). Each creation
and revocation is in the audit trail with the token that made it (never the new token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from pydantic import BaseModel, Field

from headwater.api.auth import current_principal, requires
from headwater.api.permissions import PermissionDenied, creatable_by, validate_role
from headwater.api.processing import record
from headwater.config.changes import ChangeError, fault
from headwater.state.audit import AuditLog
from headwater.state.tokens import TokenError, TokenRecord, TokenStore


class NewToken(BaseModel):
    name: str = Field(description="Its name: the audit trail's 'who' (a-z, 0-9, '-', '_', '.')")
    role: str = Field(description="owner, admin, editor, read_only, source_admin or profiles_read")
    source: str | None = Field(default=None, description="For source_admin: its one source")


def token_doc(r: TokenRecord) -> dict[str, Any]:
    return {"name": r.name, "role": r.role, "source": r.source, "createdMs": r.created_ms,
            "createdBy": r.created_by, "revokedMs": r.revoked_ms}  # fmt: skip


def register(
    app: FastAPI, tokens: TokenStore, audit: AuditLog | None, sources: Callable[[], list[str]]
) -> None:
    @app.get("/api/v1/tokens", tags=["tokens"], summary="The tokens (never the tokens themselves)",
             dependencies=[requires("tokens:read")])  # fmt: skip
    async def list_tokens(include_revoked: bool = False) -> dict[str, Any]:
        found = await asyncio.to_thread(tokens.list, include_revoked)
        return {"tokens": [token_doc(r) for r in found]}

    @app.post("/api/v1/tokens", tags=["tokens"], status_code=201,
              summary="Create a token (shown once, in this answer)",
              dependencies=[requires("tokens:write")])  # fmt: skip
    async def create_token(request: Request, body: Annotated[NewToken, Body()]) -> dict[str, Any]:
        who = current_principal(request)
        try:
            validate_role(body.role, body.source, sources())
        except ValueError as exc:
            raise ChangeError(400, [fault("invalid", str(exc), "role")]) from None
        if not creatable_by(who, body.role):
            raise PermissionDenied(who, "owner", " (only an owner makes owner tokens)")
        try:
            made, token = await asyncio.to_thread(tokens.create, body.name, body.role,
                                                  body.source, who.name)  # fmt: skip
        except TokenError as exc:
            taken = "exists already" in str(exc)
            kind = "conflict" if taken else "invalid"
            raise ChangeError(409 if taken else 400, [fault(kind, str(exc), "name")]) from None
        await record(audit, request, "create", f"tokens/{made.name}",
                     {"role": made.role, "source": made.source})  # fmt: skip
        return {**token_doc(made), "token": token}

    @app.delete("/api/v1/tokens/{name}", tags=["tokens"],
                summary="Revoke a token: refused from its next request on",
                dependencies=[requires("tokens:write")])  # fmt: skip
    async def revoke_token(request: Request, name: str) -> dict[str, Any]:
        who = current_principal(request)
        found = await asyncio.to_thread(tokens.get, name)
        if found is not None and not creatable_by(who, found.role):
            raise PermissionDenied(who, "owner", " (only an owner revokes owner tokens)")
        try:
            revoked = await asyncio.to_thread(tokens.revoke, name)
        except TokenError as exc:
            status = 404 if "no token is named" in str(exc) else 409
            raise ChangeError(status, [fault("not_found" if status == 404 else "conflict",
                                             str(exc))]) from None  # fmt: skip
        await record(audit, request, "revoke", f"tokens/{name}", {})
        return token_doc(revoked)
