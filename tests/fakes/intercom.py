"""A fake Intercom REST API: ``POST /contacts`` (409 on a duplicate), ``POST
/contacts/search``, ``PUT /contacts/{id}``, ``POST /events`` (202); error lists."""

from __future__ import annotations

import itertools
from typing import Any

from tests.fakes import Received, Reply
from tests.fakes.vendor import VendorFake, json_reply


def errors(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"type": "error.list", "request_id": "req-1",
            "errors": [{"code": code, "message": message}]}  # fmt: skip
    return json_reply(status, body, headers)


class FakeIntercom(VendorFake):
    """Contacts by ``external_id`` (and email); events need ``event_name``, ``created_at``
    (an integer) and ``user_id``/``email``/``id``, at most 10 metadata keys. ``refuse``:
    events or contacts holding one of those values get 422 ``parameter_invalid``."""

    def __init__(self, token: str = "intercom-tok-s3cret") -> None:
        super().__init__()
        self.token = token
        self.contacts: dict[str, dict[str, Any]] = {}  # id -> contact
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def authorized(self, request: Received) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def unauthorized(self) -> Reply:
        return errors(401, "unauthorized", "Access Token Invalid")

    def throttled(self) -> Reply:
        return errors(429, "rate_limit_exceeded", "Exceeded rate limit",
                      {"X-RateLimit-Limit": "10000", "X-RateLimit-Remaining": "0",
                       "Retry-After": "3"})  # fmt: skip

    def answer(self, request: Received, body: Any) -> Reply:
        route = (request.method, request.path)
        if not isinstance(body, dict):
            return errors(400, "parameter_invalid", "body must be a JSON object")
        if self.refused(body):
            return errors(422, "parameter_invalid", "refused by the test")
        if route == ("POST", "/events"):
            return self._event(body)
        if route == ("POST", "/contacts"):
            return self._create(body)
        if route == ("POST", "/contacts/search"):
            return self._search(body)
        if request.method == "PUT" and request.path.startswith("/contacts/"):
            return self._update(request.path.rsplit("/", 1)[1], body)
        return errors(404, "not_found", f"no route {request.method} {request.path}")

    def _event(self, body: dict[str, Any]) -> Reply:
        if not body.get("event_name"):
            return errors(400, "parameter_not_found", "event_name is required")
        if not isinstance(body.get("created_at"), int):
            return errors(400, "parameter_invalid", "created_at must be a unix timestamp")
        if not any(body.get(k) for k in ("user_id", "email", "id")):
            return errors(400, "parameter_not_found", "user_id, id or email is required")
        if len(body.get("metadata", {})) > 10:
            return errors(400, "parameter_invalid", "metadata has more than 10 keys")
        self.events.append(body)
        self.accepted.append(body)
        return Reply(202, b"")

    def _find(self, field: str, value: Any) -> str | None:
        return next((i for i, c in self.contacts.items() if c.get(field) == value), None)

    def _create(self, body: dict[str, Any]) -> Reply:
        if not body.get("external_id") and not body.get("email"):
            return errors(400, "parameter_not_found", "external_id or email is required")
        for field in ("external_id", "email"):
            if body.get(field) and self._find(field, body[field]):
                return errors(409, "conflict", "A contact matching those details already exists")
        contact_id = f"c{next(self._ids)}"
        self.contacts[contact_id] = {"type": "contact", "id": contact_id, **body}
        self.accepted.append(body)
        return json_reply(200, self.contacts[contact_id])

    def _search(self, body: dict[str, Any]) -> Reply:
        query = body.get("query", {})
        found = self._find(query.get("field", ""), query.get("value"))
        data = [self.contacts[found]] if found else []
        return json_reply(200, {"type": "list", "data": data, "total_count": len(data)})

    def _update(self, contact_id: str, body: dict[str, Any]) -> Reply:
        if contact_id not in self.contacts:
            return errors(404, "not_found", "User Not Found")
        self.contacts[contact_id].update(body)
        self.accepted.append(body)
        return json_reply(200, self.contacts[contact_id])
