"""Request bodies: read within the endpoint's limit, and refused without a connection reset.

A refusal must reach the client. When the server answers before reading the whole body and
then closes the connection, the kernel resets it (unread data on a closed socket), and a
client still sending — Python's urllib, requests, most SDKs send everything before they
read — gets a broken pipe instead of the answer and retries the same payload. So before a
refusal is answered the rest of the body is read and thrown away (:meth:`RequestBody.discard`),
up to :data:`HARD_BOUND_BYTES`; past that, or when the client waits for ``100 Continue``,
the answer goes out at once with ``Connection: close`` and the server keeps reading for up
to :data:`LINGER_SECS` before it closes (a *lingering close*, as nginx does), so that what
the client still sends lands in a socket that is open.

The body's overall time limit is enforced by the HTTP protocol (``gateway/protocol.py``):
it disconnects the request, marks the scope (:data:`BODY_TIMEOUT_KEY`) and answers 408.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from headwater.errors import IngestError

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HARD_BOUND_BYTES = 32 * 1024 * 1024
"""Refused bodies up to this size are read to the end and answered 400 (connection kept);
larger ones are answered 413 at once, with ``Connection: close`` and a lingering close."""

LINGER_SECS = 10.0
"""How long the server goes on reading (and discarding) after an answer it sent before the
body ended; then it closes whatever the client still sends."""

BODY_TIMEOUT_KEY = "headwater.body_timeout_secs"
"""Scope key the protocol sets (to the timeout) when it cut a request whose body was late."""

_CLOSE = (b"connection", b"close")
_JSON = (b"content-type", b"application/json")


class RequestBody:
    """One request's body as the app reads it: knows whether the body has ended, so a
    refusal can finish reading it first."""

    __slots__ = ("_receive", "_scope", "declared", "done", "expects_continue", "received_bytes")

    def __init__(self, scope: Mapping[str, Any], receive: Receive, headers: Mapping[str, str]):
        self._scope = scope
        self._receive = receive
        self.done = False
        self.received_bytes = 0
        length = headers.get("content-length")
        self.declared: int | None = int(length) if length and length.isdigit() else None
        self.expects_continue = headers.get("expect", "").lower() == "100-continue"

    async def _next(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.done = True
            timeout = self._scope.get("extensions", {}).get(BODY_TIMEOUT_KEY)
            if timeout is not None:
                raise IngestError(
                    "request_timeout",
                    f"the request body did not arrive within {timeout:g} s; send it whole, "
                    "without pauses",
                    408,
                )
            raise IngestError("client_disconnected", "the client went away", 400)
        chunk: bytes = message.get("body", b"")
        self.received_bytes += len(chunk)
        if not message.get("more_body", False):
            self.done = True
        return chunk

    async def read(self, limit: int, too_large: Callable[[], IngestError]) -> bytes:
        """The whole body, or ``too_large()`` as soon as it is known to be over ``limit``."""
        if self.declared is not None and self.declared > limit:
            raise over_hard_bound() if self.declared > HARD_BOUND_BYTES else too_large()
        chunks: list[bytes] = []
        while not self.done:
            chunks.append(await self._next())
            if self.received_bytes > limit:
                raise too_large()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def discard(self, max_bytes: int) -> bool:
        """Read and drop the rest of the body; False when it goes on past ``max_bytes``."""
        while not self.done:
            if self.received_bytes > max_bytes:
                return False
            try:
                await self._next()
            except IngestError:
                return True  # gone or cut: nothing more will come
        return True

    async def linger(self, secs: float) -> None:
        """Read and drop what the client still sends, for at most ``secs``."""
        try:
            async with asyncio.timeout(secs):
                while not self.done:
                    await self._next()
        except (TimeoutError, IngestError):
            pass


def over_hard_bound() -> IngestError:
    return IngestError(
        "payload_too_large",
        f"the request body is over {HARD_BOUND_BYTES // (1024 * 1024)} MiB, the most Headwater "
        "reads, far over the limits (32 KB per event, 500 KB per batch); split the events "
        "into smaller requests",
        413,
    )


async def refuse(
    send: Send,
    body: RequestBody | None,
    error: IngestError,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """Answer ``error`` so that the client can read it: after the rest of the body when it
    is small enough, else at once with ``Connection: close`` and a lingering close."""
    if body is None or body.done:
        await respond_error(send, error, extra)
        return
    if not body.expects_continue and (body.declared is None or body.declared <= HARD_BOUND_BYTES):
        if await body.discard(HARD_BOUND_BYTES):
            await respond_error(send, error, extra)
            return
        if error.code == "payload_too_large":
            error = over_hard_bound()
    payload = orjson.dumps({"code": error.code, "message": error.message})
    headers = [_JSON, (b"content-length", str(len(payload)).encode()), *extra, _CLOSE]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    # the whole answer, but the response left open: the server reads on until it ends it
    await send({"type": "http.response.body", "body": payload, "more_body": True})
    await body.linger(LINGER_SECS)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def respond_error(send: Send, error: IngestError, extra: list[tuple[bytes, bytes]]) -> None:
    payload = orjson.dumps({"code": error.code, "message": error.message})
    headers = [_JSON, (b"content-length", str(len(payload)).encode()), *extra]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def gunzip(body: bytes, limit: int, too_large: Callable[[], IngestError]) -> bytes:
    """The decompressed body; stops as soon as it passes ``limit``."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise IngestError(
            "invalid_gzip", f"the body is not valid gzip ({exc}); compress it again", 400
        ) from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large()
    if not inflater.eof:
        raise IngestError("invalid_gzip", "the gzip body is truncated; send it again whole", 400)
    return out
