"""What the vendor fakes share: a FakeDestination whose script is a vendor's rules, and the
modes a test switches on (throttle, reject the key, refuse some items)."""

from __future__ import annotations

import threading
from typing import Any

import orjson

from tests.fakes import FakeDestination, Received, Reply


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(body) if body is not None else b"", headers or {})


class VendorFake(FakeDestination):
    """A fake that answers as a vendor documents. Subclasses write :meth:`answer`; tests set
    ``throttle`` (answer 429 that many times), ``reject_key`` (answer the vendor's invalid
    credentials error) and ``refuse`` (values that make an item fail: the fake refuses the
    items of a batch that hold one of them, in the vendor's partial-error format).
    ``accepted`` keeps what the fake took, in the vendor's own shape."""

    def __init__(self) -> None:
        super().__init__(self._script)
        self.throttle = 0
        self.reject_key = False
        self.refuse: set[str] = set()
        self.accepted: list[dict[str, Any]] = []
        self._mutex = threading.Lock()

    def _script(self, request: Received, _index: int) -> Reply:
        with self._mutex:
            if self.throttle > 0:
                self.throttle -= 1
                return self.throttled()
        if self.reject_key or not self.authorized(request):
            return self.unauthorized()
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return self.bad_json()
        return self.answer(request, body)

    def refused(self, item: Any) -> bool:
        text = orjson.dumps(item).decode()
        return any(value in text for value in self.refuse)

    # -- what a vendor defines

    def authorized(self, request: Received) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> Reply:
        raise NotImplementedError

    def throttled(self) -> Reply:
        raise NotImplementedError

    def bad_json(self) -> Reply:
        return json_reply(400, {"error": "invalid JSON"})

    def answer(self, request: Received, body: Any) -> Reply:
        raise NotImplementedError
