"""A fake HubSpot API: contacts batch upsert by email, custom behavioral events in batches;
HubSpot's error bodies, 207 multi-status for partial failures, ``X-HubSpot-RateLimit-*``."""

from __future__ import annotations

import re
from typing import Any

from tests.fakes import Received, Reply
from tests.fakes.vendor import VendorFake, json_reply

EVENT_NAME = re.compile(r"^pe\d+_[a-z0-9_]+$")


def error(status: int, category: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"status": "error", "message": message, "correlationId": "c0ffee", "category": category}
    return json_reply(status, body, headers)


class FakeHubspot(VendorFake):
    """``refuse``: inputs holding one of those values fail with ``VALIDATION_ERROR``; the
    others are taken and the answer is 207 naming the failed ones (contacts by email in
    ``context.ids``, events by position in ``context.index``)."""

    def __init__(self, token: str = "hubspot-tok-s3cret") -> None:
        super().__init__()
        self.token = token
        self.contacts: dict[str, dict[str, Any]] = {}  # email -> properties
        self.events: list[dict[str, Any]] = []

    def authorized(self, request: Received) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def unauthorized(self) -> Reply:
        return error(
            401,
            "EXPIRED_AUTHENTICATION",
            "The OAuth token used to make this call expired 2 hour(s) ago.",
        )

    def throttled(self) -> Reply:
        return error(429, "RATE_LIMITS", "You have reached your secondly limit.",
                     {"X-HubSpot-RateLimit-Max": "110", "X-HubSpot-RateLimit-Remaining": "0",
                      "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"})  # fmt: skip

    def answer(self, request: Received, body: Any) -> Reply:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return error(400, "VALIDATION_ERROR", "inputs: must not be empty")
        if request.path == "/crm/v3/objects/contacts/batch/upsert" and request.method == "POST":
            return self._contacts(inputs)
        if request.path == "/events/v3/send/batch" and request.method == "POST":
            return self._events(inputs)
        return error(404, "OBJECT_NOT_FOUND", f"no route {request.method} {request.path}")

    def _contacts(self, inputs: list[Any]) -> Reply:
        if len(inputs) > 100:
            return error(400, "VALIDATION_ERROR", "Batch input must have 100 or fewer inputs")
        ids = [i.get("id") for i in inputs]
        if len({str(i).lower() for i in ids}) != len(ids):
            return error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input")
        errors, results = [], []
        for item in inputs:
            if item.get("idProperty") != "email" or not item.get("id"):
                return error(400, "VALIDATION_ERROR", "idProperty email and id required")
            if self.refused(item):
                errors.append({"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Property values were not valid",
                               "context": {"ids": [item["id"]]}})  # fmt: skip
                continue
            self.contacts.setdefault(item["id"].lower(), {}).update(item.get("properties", {}))
            self.accepted.append(item)
            results.append(
                {"id": str(len(self.contacts)), "properties": item.get("properties", {})}
            )
        return self._result(results, errors)

    def _events(self, inputs: list[Any]) -> Reply:
        errors = []
        for index, item in enumerate(inputs):
            problem = self._event_problem(item)
            if problem is None and not self.refused(item):
                self.events.append(item)
                self.accepted.append(item)
                continue
            errors.append({"status": "error", "category": "VALIDATION_ERROR",
                           "message": problem or "refused by the test",
                           "context": {"index": [str(index)]}})  # fmt: skip
        if not errors:
            return Reply(204, b"")
        return self._result([], errors)

    @staticmethod
    def _event_problem(item: Any) -> str | None:
        if not isinstance(item, dict) or not EVENT_NAME.match(str(item.get("eventName"))):
            return f"Event name {item.get('eventName')!r} is not a fully qualified name"
        if not any(item.get(k) for k in ("email", "utk", "objectId")):
            return "one of email, utk or objectId is required"
        return None

    @staticmethod
    def _result(results: list[Any], errors: list[Any]) -> Reply:
        body = {
            "status": "COMPLETE",
            "results": results,
            "numErrors": len(errors),
            "errors": errors,
        }
        return json_reply(207 if errors else 200, body)
