"""A fake Amplitude that answers as Amplitude documents (HTTP V2, Batch, Identify, Group
Identify APIs; https://amplitude.com/docs/apis/analytics/http-v2).

It checks the API key, the body's shape and each event's required fields, answers
Amplitude's own error bodies (400 ``invalid_api_key`` / ``missing_field`` /
``events_with_invalid_fields`` / ``events_with_missing_fields`` /
``events_with_invalid_id_lengths``, 413, 429 with ``throttled_devices``) and, like Amplitude,
takes nothing of a request it refuses. What it took is in ``accepted``, ``identifies`` and
``groups``; events with an ``insert_id`` seen before are dropped (Amplitude's 7-day
dedupe) and counted in ``duplicates``.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import orjson

from tests.fakes import FakeDestination, Received, Reply

Json = dict[str, Any]


def _reply(status: int, body: Any) -> Reply:
    return Reply(status, orjson.dumps(body) if not isinstance(body, bytes) else body)


class FakeAmplitude(FakeDestination):
    """Tell it to ``reject_key``, to ``throttle`` the next n event requests, to refuse
    events (``invalid[insert_id] = field``), or to take at most ``max_bytes`` a request."""

    def __init__(self, api_key: str = "amp-key-0001") -> None:
        super().__init__(self.answer)
        self.api_key = api_key
        self.reject_key = False
        self.throttle = 0  # event requests still to answer 429
        self.throttle_daily = False  # 429 says exceeded_daily_quota_devices instead
        self.invalid: dict[str, str] = {}  # insert_id -> the field Amplitude finds invalid
        self.max_bytes = 1_000_000
        self.accepted: list[Json] = []
        self.identifies: list[Json] = []
        self.groups: list[Json] = []
        self.duplicates = 0
        self.paths: list[str] = []  # of the requests it took
        self._seen: set[str] = set()

    # -- answering

    def answer(self, request: Received, _index: int) -> Reply:
        if request.method != "POST":
            return _reply(404, {"code": 404, "error": "Not found"})
        if request.path in ("/2/httpapi", "/batch"):
            return self._events(request)
        if request.path in ("/identify", "/groupidentify"):
            return self._form(request)
        return _reply(404, {"code": 404, "error": "Not found"})

    def _key_error(self, key: Any) -> Reply | None:
        if key is None or key == "":
            return _reply(400, {"code": 400, "error": "Request missing required field",
                                "missing_field": "api_key"})  # fmt: skip
        if self.reject_key or key != self.api_key:
            return _reply(400, {"code": 400, "error": f"Invalid API key: {key}"})
        return None

    def _events(self, request: Received) -> Reply:
        limit = 20_000_000 if request.path == "/batch" else self.max_bytes
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            return _reply(400, {"code": 400, "error": "Invalid Content-Type"})
        if len(request.body) > limit:
            return _reply(413, {"code": 413, "error": "Payload too large"})
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return _reply(400, {"code": 400, "error": "Invalid JSON request body"})
        if not isinstance(body, dict):
            return _reply(400, {"code": 400, "error": "Invalid JSON request body"})
        refused = self._key_error(body.get("api_key"))
        if refused is not None:
            return refused
        events = body.get("events")
        if not isinstance(events, list):
            return _reply(400, {"code": 400, "error": "Request missing required field",
                                "missing_field": "events"})  # fmt: skip
        if len(events) > 2000:
            return _reply(413, {"code": 413, "error": "Payload too large"})
        if self.throttle > 0:
            self.throttle -= 1
            return _reply(429, self._throttled(events))
        min_id = (body.get("options") or {}).get("min_id_length") or 5
        problems = self._validate(events, min_id)
        if problems:
            return _reply(400, {"code": 400, "error": "Invalid field values on some events",
                                **problems})  # fmt: skip
        self._take(request.path, events)
        return _reply(200, {"code": 200, "events_ingested": len(events),
                            "payload_size_bytes": len(request.body),
                            "server_upload_time": int(time.time() * 1000)})  # fmt: skip

    def _throttled(self, events: list[Any]) -> Json:
        devices = {str(e.get("device_id")): 31 for e in events if isinstance(e, dict)}
        answer: Json = {"code": 429, "error": "Too many requests for some devices and users",
                        "eps_threshold": 30, "throttled_devices": devices,
                        "throttled_users": {}, "throttled_events": list(range(len(events)))}  # fmt: skip
        if self.throttle_daily:
            answer["exceeded_daily_quota_devices"] = devices
        return answer

    def _validate(self, events: list[Any], min_id: int) -> Json:
        maps: dict[str, dict[str, list[int]]] = {}

        def add(kind: str, field: str, i: int) -> None:
            maps.setdefault(kind, {}).setdefault(field, []).append(i)

        for i, event in enumerate(events):
            if not isinstance(event, dict):
                add("events_with_invalid_fields", "event", i)
                continue
            if not event.get("event_type"):
                add("events_with_missing_fields", "event_type", i)
            if not event.get("user_id") and not event.get("device_id"):
                add("events_with_missing_fields", "user_id", i)
            for name in ("user_id", "device_id"):
                value = event.get(name)
                if isinstance(value, str) and value and len(value) < min_id:
                    add("events_with_invalid_id_lengths", name, i)
            if "time" in event and type(event["time"]) is not int:
                add("events_with_invalid_fields", "time", i)
            field = self.invalid.get(str(event.get("insert_id")))
            if field is not None:
                add("events_with_invalid_fields", field, i)
        return maps

    def _take(self, path: str, events: list[Json]) -> None:
        self.paths.append(path)
        for event in events:
            insert_id = event.get("insert_id")
            if isinstance(insert_id, str) and insert_id in self._seen:
                self.duplicates += 1
                continue
            if isinstance(insert_id, str):
                self._seen.add(insert_id)
            self.accepted.append(event)

    def _form(self, request: Received) -> Reply:
        if not request.headers.get("Content-Type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return _reply(400, b"missing_identification")
        fields = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        refused = self._key_error(fields.get("api_key"))
        if refused is not None:
            return refused
        try:
            identification = orjson.loads(fields.get("identification", ""))
        except orjson.JSONDecodeError:
            return _reply(400, b"invalid_identification")
        items = identification if isinstance(identification, list) else [identification]
        if request.path == "/groupidentify":
            if not all(isinstance(g, dict) and g.get("group_type") and "group_value" in g
                       for g in items):  # fmt: skip
                return _reply(400, b"missing_group_type_or_value")
            self.paths.append(request.path)
            self.groups.extend(items)
        else:
            if not all(isinstance(u, dict) and (u.get("user_id") or u.get("device_id"))
                       for u in items):  # fmt: skip
                return _reply(400, b"missing_user_id_or_device_id")
            self.paths.append(request.path)
            self.identifies.extend(items)
        return Reply(200, b"success")

    # -- what arrived, as Segment events (for the compliance suite)

    def as_segment(self) -> list[Json]:
        return [{"messageId": e.get("insert_id"), "properties": e.get("event_properties")}
                for e in self.accepted]  # fmt: skip
