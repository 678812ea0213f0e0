"""The one shape of every error the management API answers (docs/api.md)::

    {"code": "invalid", "message": "the first fault, in words",
     "errors": [{"type": "invalid", "message": "...", "field": "settings.url"}, ...]}

``code`` and ``message`` say the first fault (what a human or a simple client reads);
``errors`` lists every fault with its ``field``: where in the request it is (a path
parameter, a query parameter such as ``pagination.count``, a header such as ``If-Match``,
or a place in the body such as ``filters[0].actions``), or null when the fault is the
request as a whole. A refused change lists all the faults validation found, so a client
can fix them in one go.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from headwater.config.changes import fault

__all__ = ["ErrorBody", "Fault", "error_response", "fault", "one"]


class Fault(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    errors: list[Fault]


def error_response(
    status: int,
    faults: list[dict[str, Any]],
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The error answer for ``faults`` (at least one); ``extra`` adds fields (``permission``)."""
    first = faults[0]
    body = {"code": first["type"], "message": first["message"], "errors": faults, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def one(
    status: int, code: str, message: str, where: str | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> JSONResponse:  # fmt: skip
    """The error answer for one fault."""
    return error_response(status, [fault(code, message, where)], headers, **extra)
