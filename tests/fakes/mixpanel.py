"""A fake Mixpanel that answers as Mixpanel documents (``/import`` in strict mode,
``/engage``, ``/groups``; https://docs.mixpanel.com/reference/import-events).

``/import`` checks HTTP Basic auth (API secret, project token, or service account with
``project_id``), the array of ``{event, properties}``, and each record's ``time``,
``distinct_id`` and ``$insert_id`` (≤ 36 of ``[A-Za-z0-9-]``). Like Mixpanel in strict mode,
it imports the valid records of a request and answers 400 with ``failed_records`` naming the
others. 401 for a bad credential, 413 beyond 2,000 records or ``max_bytes``, 429 when told to
throttle. ``/engage`` and ``/groups`` check ``$token`` and answer ``verbose=1``'s JSON. What
it took is in ``records``, ``profiles`` and ``group_profiles``.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qs

import orjson

from tests.fakes import FakeDestination, Received, Reply

Json = dict[str, Any]
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
BUILT = frozenset({"time", "distinct_id", "$insert_id", "$device_id", "$user_id", "ip",
                   "mp_lib", "$source", "$lib_version", "message_id"})  # fmt: skip


def _reply(status: int, body: Json) -> Reply:
    return Reply(status, orjson.dumps(body))


class FakeMixpanel(FakeDestination):
    """Tell it to ``reject_key``, to ``throttle`` the next n requests, to refuse records
    (``invalid[$insert_id] = field``), or to take at most ``max_bytes`` a request."""

    def __init__(self, token: str = "mp-token-0001", api_secret: str = "mp-secret-0002",
                 service_account: tuple[str, str, str] | None = None) -> None:  # fmt: skip
        super().__init__(self.answer)
        self.token = token
        self.api_secret = api_secret
        self.service_account = service_account  # (user, secret, project_id)
        self.reject_key = False
        self.throttle = 0
        self.invalid: dict[str, str] = {}
        self.max_bytes = 10_000_000
        self.records: list[Json] = []
        self.profiles: list[Json] = []
        self.group_profiles: list[Json] = []
        self.queries: list[dict[str, str]] = []

    def answer(self, request: Received, _index: int) -> Reply:
        if request.method != "POST":
            return _reply(404, {"error": "not found", "status": 0})
        if self.throttle > 0:
            self.throttle -= 1
            return _reply(429, {"code": 429, "status": "Too Many Requests", "error":
                                "Project exceeded rate limits. Please retry the request with"
                                " exponential backoff."})  # fmt: skip
        if request.path == "/import":
            return self._import(request)
        if request.path in ("/engage", "/groups"):
            return self._update(request)
        return _reply(404, {"error": "not found", "status": 0})

    def _authorized(self, request: Received, query: dict[str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if self.reject_key or not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if self.service_account is not None and (user, password) == self.service_account[:2]:
            return query.get("project_id") == self.service_account[2]
        return password == "" and user in (self.api_secret, self.token)

    def _import(self, request: Received) -> Reply:
        query = dict(request.query)
        self.queries.append(query)
        if not self._authorized(request, query):
            return _reply(401, {"code": 401, "error": "Invalid API secret",
                                "status": "Unauthorized"})  # fmt: skip
        if len(request.body) > self.max_bytes:
            return _reply(413, {"code": 413, "status": "Request Entity Too Large",
                                "error": f"request exceeds max limit of {self.max_bytes} bytes"})  # fmt: skip
        try:
            records = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return _reply(400, {"code": 400, "error": "unable to parse request body",
                                "status": "Bad Request"})  # fmt: skip
        if not isinstance(records, list):
            records = [records]
        if len(records) > 2000:
            return _reply(413, {"code": 413, "status": "Request Entity Too Large",
                                "error": "request exceeds max limit of 2000 records"})  # fmt: skip
        failed = [f for i, r in enumerate(records) if (f := self._check(i, r)) is not None]
        bad = {f["index"] for f in failed}
        taken = [r for i, r in enumerate(records) if i not in bad]
        self.records.extend(taken)
        if failed and query.get("strict") == "1":
            return _reply(400, {"code": 400, "status": "Bad Request",
                                "error": "some data points in the request failed validation",
                                "num_records_imported": len(taken), "failed_records": failed})  # fmt: skip
        return _reply(200, {"code": 200, "num_records_imported": len(taken), "status": "OK"})

    def _check(self, index: int, record: Any) -> Json | None:
        def fail(field: str, message: str) -> Json:
            insert_id = props.get("$insert_id") if isinstance(props, dict) else None
            return {"index": index, "insert_id": insert_id, "field": field, "message": message}

        props = record.get("properties") if isinstance(record, dict) else None
        if not isinstance(record, dict) or not isinstance(record.get("event"), str):
            return fail("event", "'event' must be a non-empty string")
        if not isinstance(props, dict):
            return fail("properties", "'properties' must be an object")
        if type(props.get("time")) is not int:
            return fail(
                "properties.time", "'properties.time' must be seconds or milliseconds since epoch"
            )
        if not isinstance(props.get("distinct_id"), str):
            return fail("properties.distinct_id", "'properties.distinct_id' is required")
        insert_id = props.get("$insert_id")
        if not isinstance(insert_id, str) or not INSERT_ID.fullmatch(insert_id):
            return fail(
                "properties.$insert_id", "'$insert_id' must be ≤ 36 characters of [A-Za-z0-9-]"
            )
        field = self.invalid.get(insert_id)
        if field is not None:
            return fail(field, f"'{field}' is invalid")
        return None

    def _update(self, request: Received) -> Reply:
        fields = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        try:
            updates = orjson.loads(fields.get("data", ""))
        except orjson.JSONDecodeError:
            return _reply(200, {"status": 0, "error": "data, missing or empty"})
        updates = updates if isinstance(updates, list) else [updates]
        for update in updates:
            if (
                not isinstance(update, dict)
                or update.get("$token") != self.token
                or self.reject_key
            ):
                return _reply(200, {"status": 0, "error": "$token, invalid or missing"})
        target = self.profiles if request.path == "/engage" else self.group_profiles
        target.extend(updates)
        return _reply(200, {"status": 1, "error": None})

    def as_segment(self) -> list[Json]:
        """The records as Segment events (for the compliance suite): messageId and the
        event's own properties."""
        out = []
        for record in self.records:
            props = record["properties"]
            message_id = props.get("message_id") or props.get("$insert_id")
            own = {k: v for k, v in props.items() if k not in BUILT}
            out.append({"messageId": message_id, "properties": own})
        return out
