"""What a function's code sees: the errors it raises, the request of a source function, the
``analytics`` object a source function emits events with, and ``fetch`` for HTTP.

This module is imported in the function's worker process (never loaded with user code in
the server); it imports nothing of Headwater's server side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_FETCH_TIMEOUT_SECS = 4.0


class FunctionError(Exception):
    """Base of the errors a handler raises to say what happens to the event."""

    retry = False


class EventNotSupported(FunctionError):
    """The function does not take this kind of event: discarded, with the message."""


class InvalidEventPayload(FunctionError):
    """The event lacks what the function needs: discarded, with the message."""


class ValidationError(FunctionError):
    """The event (or a setting) is not valid for the function: discarded, with the message."""


class RetryError(FunctionError):
    """A failure worth trying again (the API was down, 429, 5xx): retried on the delivery
    engine's schedule, as timeouts are."""

    retry = True


ERRORS: dict[str, type[FunctionError]] = {
    cls.__name__: cls
    for cls in (EventNotSupported, InvalidEventPayload, ValidationError, RetryError)
}


class Headers(Mapping[str, str]):
    """Request headers, case-insensitive (``request.headers.get("Stripe-Signature")``)."""

    def __init__(self, pairs: Mapping[str, str]) -> None:
        self._items = {k.lower(): v for k, v in pairs.items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items


class Url(str):
    """The request's URL (a string) with its parts: ``.path``, ``.query`` (``{name: [values]}``)."""

    @property
    def path(self) -> str:
        return urlsplit(self).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self).query)


class Request:
    """The HTTP request a source function answers (``on_request(request, settings)``)."""

    def __init__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> None:
        self.method = method
        self.url = Url(url)
        self.headers = Headers(headers)
        self.body = body

    def json(self) -> Any:
        """The body parsed as JSON; :class:`InvalidEventPayload` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise InvalidEventPayload(f"the request body is not JSON: {exc}") from None

    def form(self) -> dict[str, list[str]]:
        """The body as ``application/x-www-form-urlencoded`` fields."""
        return parse_qs(self.body.decode("utf-8", "replace"))

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


_WIRE_NAMES = {"user_id": "userId", "anonymous_id": "anonymousId", "message_id": "messageId",
               "group_id": "groupId", "previous_id": "previousId"}  # fmt: skip


class Analytics:
    """Segment's ``Segment.track({...})`` and friends for source functions: each call adds
    an event to what the request emits (they are stored once the handler returns). Fields
    come as a dict (Segment's form), as keywords, or both; ``user_id``, ``anonymous_id``,
    ``message_id``, ``group_id`` and ``previous_id`` are written as the wire's camelCase:
    ``analytics.track(event="Order Completed", user_id="u-42", properties={...})``."""

    def __init__(self) -> None:
        self.emitted: list[dict[str, Any]] = []

    def _emit(self, kind: str, payload: dict[str, Any] | None, fields: dict[str, Any]) -> None:
        event = {"type": kind, **(payload or {})}
        for key, value in fields.items():
            event[_WIRE_NAMES.get(key, key)] = value
        self.emitted.append(event)

    def track(self, payload: dict[str, Any] | None = None, /, **fields: Any) -> None:
        self._emit("track", payload, fields)

    def identify(self, payload: dict[str, Any] | None = None, /, **fields: Any) -> None:
        self._emit("identify", payload, fields)

    def page(self, payload: dict[str, Any] | None = None, /, **fields: Any) -> None:
        self._emit("page", payload, fields)

    def screen(self, payload: dict[str, Any] | None = None, /, **fields: Any) -> None:
        self._emit("screen", payload, fields)

    def group(self, payload: dict[str, Any] | None = None, /, **fields: Any) -> None:
        self._emit("group", payload, fields)

    def alias(self, payload: dict[str, Any] | None = None, /, **fields: Any) -> None:
        self._emit("alias", payload, fields)

    def take(self) -> list[dict[str, Any]]:
        emitted, self.emitted = self.emitted, []
        return emitted


analytics = Analytics()

_client: Any = None


def fetch(url: str, method: str = "GET", **kwargs: Any) -> Any:
    """An HTTP request (an ``httpx.Response``), with a timeout (4 s unless ``timeout=`` says
    otherwise) so that a slow API fails the call instead of eating the wall-clock limit.
    Keyword arguments are httpx's: ``json=``, ``headers=``, ``content=``, ``params=``."""
    return fetch_client().request(method, url, **kwargs)


def fetch_client() -> Any:
    """The one httpx client of this worker, made on first use."""
    global _client
    if _client is None:
        import httpx  # only functions that fetch pay for the import

        _client = httpx.Client(timeout=DEFAULT_FETCH_TIMEOUT_SECS)
    return _client
