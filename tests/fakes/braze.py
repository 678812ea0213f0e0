"""A fake Braze REST API (``POST /users/track``), answering as Braze documents it.

- ``Authorization: Bearer <key>`` checked: a wrong key is 401 ``{"message": "Invalid API
  key: ..."}``; :attr:`FakeBraze.forbidden` makes it 403 (the key lacks ``users.track``).
- Body: ``{attributes, events, purchases}``, each at most 75 objects (else 400); every object
  needs ``external_id``, ``braze_id``, ``user_alias`` or ``email``; events need ``name`` and
  ``time``; purchases ``product_id``, ``currency``, ``price``.
- Objects it refuses (the rules above, or :attr:`FakeBraze.refuse` saying so) come back in
  the same 201 answer as ``errors: [{type, input_array, index}]`` and the others are kept;
  when every object is refused the answer is 400 with those errors.
- :meth:`FakeBraze.throttle` answers the next N requests 429 with ``X-RateLimit-Limit``,
  ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset`` (epoch seconds).

What it kept is in :attr:`FakeBraze.accepted` by array: ``fake.accepted["events"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from tests.fakes import FakeDestination, Received, Reply

ARRAYS = ("attributes", "events", "purchases")
IDENTIFIERS = ("external_id", "braze_id", "user_alias", "email")
REQUIRED = {"events": ("name", "time"), "purchases": ("product_id", "currency", "price")}
RATE_LIMIT = 3000  # /users/track: 3,000 requests per 3 seconds

Refuse = Callable[[str, dict[str, Any]], str | None]  # (array, object) -> error type or None


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(data), headers or {})


class FakeBraze(FakeDestination):
    def __init__(self, api_key: str = "braze-key", refuse: Refuse | None = None) -> None:
        super().__init__(self._answer)
        self.api_key = api_key
        self.refuse: Refuse = refuse or (lambda _a, _o: None)
        self.forbidden = False
        self.accepted: dict[str, list[dict[str, Any]]] = {a: [] for a in ARRAYS}
        self._throttled = 0
        self.reset_in_secs = 2.0

    def throttle(self, requests: int, reset_in_secs: float = 2.0) -> None:
        """Answer the next ``requests`` requests 429, resetting ``reset_in_secs`` from then."""
        self._throttled = requests
        self.reset_in_secs = reset_in_secs

    def _answer(self, request: Received, _index: int) -> Reply:
        if request.method != "POST" or request.path != "/users/track":
            return _json(404, {"message": "Not found"})
        auth = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            return _json(401, {"message": "Invalid API key: the key is not valid"})
        if self.forbidden:
            return _json(403, {"message": "This API key does not have permission users.track"})
        if self._throttled > 0:
            self._throttled -= 1
            reset = int(time.time() + self.reset_in_secs)
            headers = {"X-RateLimit-Limit": str(RATE_LIMIT), "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset": str(reset)}  # fmt: skip
            return _json(429, {"message": "API rate limit exceeded"}, headers)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return _json(400, {"message": "Invalid JSON in request body"})
        if not isinstance(body, dict) or not any(body.get(a) for a in ARRAYS):
            return _json(400, {"message": "Valid data must be provided in the 'attributes', "
                                          "'events', or 'purchases' fields."})  # fmt: skip
        for array in ARRAYS:
            if len(body.get(array) or []) > 75:
                return _json(400, {"message": f"'{array}' may have at most 75 objects"})
        return self._track(body)

    def _track(self, body: dict[str, Any]) -> Reply:
        errors: list[dict[str, Any]] = []
        kept: dict[str, list[dict[str, Any]]] = {a: [] for a in ARRAYS}
        for array in ARRAYS:
            for index, obj in enumerate(body.get(array) or []):
                problem = self._problem(array, obj)
                if problem is None:
                    kept[array].append(obj)
                else:
                    errors.append({"type": problem, "input_array": array, "index": index})
        if not any(kept.values()):
            message = ("Valid data must be provided in the 'attributes', 'events', or "
                       "'purchases' fields.")  # fmt: skip
            return _json(400, {"message": message, "errors": errors})
        for array, objs in kept.items():
            self.accepted[array].extend(objs)
        answer: dict[str, Any] = {"message": "success"}
        for array in ARRAYS:
            if body.get(array):
                answer[f"{array}_processed"] = len(kept[array])
        if errors:
            answer["errors"] = errors
        return _json(201, answer)

    def _problem(self, array: str, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return f"'{array}' objects must be objects"
        if not any(obj.get(k) is not None for k in IDENTIFIERS):
            return "Missing identifier: external_id, braze_id, user_alias or email"
        for field in REQUIRED.get(array, ()):
            if obj.get(field) is None:
                return f"'{field}' is required"
        if array == "purchases" and not isinstance(obj.get("price"), int | float):
            return "'price' is not valid"
        return self.refuse(array, obj)
