"""How a refusal treats the body still unread (gateway/bodies.py), with a scripted client."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from headwater.errors import IngestError
from headwater.gateway.bodies import BODY_TIMEOUT_KEY, HARD_BOUND_BYTES, RequestBody, refuse

CHUNK = b"x" * 65536


class Client:
    """Gives the app ``chunks`` one receive() at a time, then the end; records what the app
    sends."""

    def __init__(self, chunks: int) -> None:
        self.left = chunks
        self.sent: list[dict[str, Any]] = []
        self.reads = 0

    async def receive(self) -> dict[str, Any]:
        self.reads += 1
        if self.left > 0:
            self.left -= 1
            return {"type": "http.request", "body": CHUNK, "more_body": self.left > 0}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def answer(self) -> dict[str, Any]:
        return orjson.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))  # type: ignore[no-any-return]


def too_large() -> IngestError:
    return IngestError("payload_too_large", "over the limit", 400)


async def test_the_rest_of_the_body_is_read_before_the_400() -> None:
    client = Client(chunks=10)
    body = RequestBody({}, client.receive, {})
    with pytest.raises(IngestError) as caught:
        await body.read(100_000, too_large)
    await refuse(client.send, body, caught.value, [])
    assert client.left == 0, "the body was not read to its end"
    assert client.status == 400
    assert client.answer["code"] == "payload_too_large"
    assert b"connection" not in client.headers  # the connection stays usable


async def test_a_declared_oversize_body_is_refused_before_reading_then_drained() -> None:
    client = Client(chunks=20)
    headers = {"content-length": str(20 * len(CHUNK))}
    body = RequestBody({}, client.receive, headers)
    with pytest.raises(IngestError) as caught:
        await body.read(32_000, too_large)
    assert client.reads == 0
    await refuse(client.send, body, caught.value, [])
    assert client.left == 0
    assert client.status == 400


async def test_over_the_hard_bound_is_413_sent_at_once_with_connection_close() -> None:
    client = Client(chunks=3)
    body = RequestBody({}, client.receive, {"content-length": str(HARD_BOUND_BYTES + 1)})
    with pytest.raises(IngestError) as caught:
        await body.read(500_000, too_large)
    await refuse(client.send, body, caught.value, [])
    assert client.status == 413
    assert client.headers[b"connection"] == b"close"
    assert client.sent[1]["more_body"] is True  # the answer first, whole...
    assert client.left == 0  # ...then what the client still sends is read (lingering)
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_chunked_body_past_the_hard_bound_becomes_413() -> None:
    chunks = HARD_BOUND_BYTES // len(CHUNK) + 4
    client = Client(chunks=chunks)
    body = RequestBody({}, client.receive, {})
    with pytest.raises(IngestError) as caught:
        await body.read(500_000, too_large)
    await refuse(client.send, body, caught.value, [])
    assert client.status == 413
    assert client.headers[b"connection"] == b"close"
    assert client.left == 0


async def test_a_client_waiting_for_100_continue_is_answered_without_reading() -> None:
    client = Client(chunks=5)
    headers = {"content-length": "3000000", "expect": "100-continue"}
    body = RequestBody({}, client.receive, headers)
    with pytest.raises(IngestError) as caught:
        await body.read(500_000, too_large)
    await refuse(client.send, body, caught.value, [])
    assert client.status == 400
    assert client.headers[b"connection"] == b"close"


async def test_other_refusals_also_drain_the_body() -> None:
    client = Client(chunks=4)
    body = RequestBody({}, client.receive, {})
    await refuse(client.send, body, IngestError("method_not_allowed", "use POST", 405), [])
    assert client.left == 0
    assert client.status == 405


async def test_a_disconnect_marked_by_the_protocol_is_a_timeout() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    body = RequestBody({"extensions": {BODY_TIMEOUT_KEY: 30.0}}, receive, {})
    with pytest.raises(IngestError) as caught:
        await body.read(500_000, too_large)
    assert (caught.value.status, caught.value.code) == (408, "request_timeout")
    assert "30 s" in caught.value.message
