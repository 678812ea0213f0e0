"""A fake Customer.io Track API v2: ``POST /api/v2/batch`` with Basic auth
(site_id:api_key); 207 with ``errors[{batch_index, reason, field, message}]`` for refused
entries, 401 for bad credentials, 429 when throttling."""

from __future__ import annotations

import base64
from typing import Any

from tests.fakes import Received, Reply
from tests.fakes.vendor import VendorFake, json_reply

ACTIONS = {"person": {"identify", "event", "page", "screen"}, "object": {"identify"}}


class FakeCustomerio(VendorFake):
    """``refuse``: entries holding one of those values are refused (``reason: invalid``)."""

    def __init__(self, site_id: str = "site-1", api_key: str = "cio-key-s3cret") -> None:
        super().__init__()
        self.site_id, self.api_key = site_id, api_key
        self.people: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, Any]] = {}

    def authorized(self, request: Received) -> bool:
        expected = base64.b64encode(f"{self.site_id}:{self.api_key}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def unauthorized(self) -> Reply:
        return json_reply(401, {"meta": {"error": "Unauthorized request"}})

    def throttled(self) -> Reply:
        return json_reply(429, {"meta": {"error": "rate limit exceeded"}}, {"Retry-After": "1"})

    def answer(self, request: Received, body: Any) -> Reply:
        if (request.method, request.path) != ("POST", "/api/v2/batch"):
            return json_reply(404, {"meta": {"error": "not found"}})
        batch = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(batch, list) or not batch:
            return json_reply(400, {"errors": [{"reason": "required", "field": "batch",
                                                "message": "batch cannot be empty"}]})  # fmt: skip
        errors = []
        for index, entry in enumerate(batch):
            problem = self._problem(entry)
            if problem is None and self.refused(entry):
                problem = ("invalid", "attributes", "refused by the test")
            if problem is not None:
                reason, field, message = problem
                errors.append(
                    {"batch_index": index, "reason": reason, "field": field, "message": message}
                )
                continue
            self._take(entry)
        if errors:
            return json_reply(207, {"errors": errors})
        return json_reply(200, {})

    @staticmethod
    def _problem(entry: Any) -> tuple[str, str, str] | None:
        if not isinstance(entry, dict) or entry.get("action") not in ACTIONS.get(
            entry.get("type"), ()
        ):
            return ("invalid", "action", "unknown type or action")
        ids = entry.get("identifiers")
        if not isinstance(ids, dict) or not ids:
            return ("required", "identifiers", "identifiers must be present")
        if entry["action"] in ("event", "page", "screen") and not entry.get("name"):
            return ("required", "name", "name cannot be blank")
        if "timestamp" in entry and not isinstance(entry["timestamp"], int):
            return ("invalid", "timestamp", "timestamp must be a unix timestamp")
        return None

    def _take(self, entry: dict[str, Any]) -> None:
        self.accepted.append(entry)
        who = str(sorted(entry["identifiers"].items()))
        if entry["type"] == "object":
            self.objects.setdefault(who, {}).update(entry.get("attributes", {}))
        elif entry["action"] == "identify":
            self.people.setdefault(who, {}).update(entry.get("attributes", {}))
        elif not any(e.get("id") == entry.get("id") for e in self.events if "id" in entry):
            self.events.append(entry)  # deduplicated by the event's id
