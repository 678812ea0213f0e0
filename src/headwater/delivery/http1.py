"""A small HTTP/1.1 client for destinations: keep-alive connections, httptools' parser.

Delivery sends one POST per batch — per event, for webhooks without batching — and
``bench/http_clients.py`` shows a general-purpose client's own work is most of the CPU such
a request costs (docs/decisions.md). This client does only what delivery needs: a request
with a ``Content-Length`` body over a kept-alive connection (TLS when the URL is https), the
response's status, headers and body (``Content-Length``, chunked, or until close — the parser
is httptools, the one uvicorn uses), a deadline for the whole exchange, no redirects, no
cookies, no proxies, no content decoding (it asks for none).

A connection is reused only after a complete response that allows keep-alive, and only
while it has been idle for less than ``KEEPALIVE_SECS`` (below the 5 s idle timeout of common
servers). A request on a reused connection that the server closed before answering is sent
once more on a new connection: the server closed it idle, so it never saw the request.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

KEEPALIVE_SECS = 4.0
MAX_IDLE_PER_ORIGIN = 64
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a destination's answer is read up to this, then cut


class ConnectError(OSError):
    """The connection could not be made (refused, DNS, TLS)."""


class ProtocolError(Exception):
    """The server broke HTTP: a malformed response, or the connection closed mid-answer."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> tuple[Origin, str]:
        """The origin of ``url`` and the request target (path and query)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port), target

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = False
        self._parser: httptools.HttpResponseParser | None = None
        self._response: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._got_bytes = False
        self._head_done = False
        self._closed = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._response is None or self._response.done():
            self._close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.reusable = False
        if self._response is not None and not self._response.done():
            if self._parser is not None and self._delimited_by_close():
                status = self._parser.get_status_code()
                self._response.set_result((status, self._headers, b"".join(self._body)))
            if not self._response.done():
                self._fail(_Closed(self._got_bytes))

    def _delimited_by_close(self) -> bool:
        """A response without Content-Length or chunking ends when the connection does."""
        if not self._head_done:
            return False
        names = {k.lower(): v.lower() for k, v in self._headers.items()}
        return "content-length" not in names and "chunked" not in names.get("transfer-encoding", "")

    # -- httptools callbacks

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if self._size < MAX_RESPONSE_BYTES:
            self._body.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        assert parser is not None and self._response is not None  # set by request()
        status = parser.get_status_code()
        if status < 200:  # 1xx: an interim answer; the parser reads the real one next
            self._headers, self._body, self._size = {}, [], 0
            self._head_done = False
            return
        self.reusable = parser.should_keep_alive() and not self._closed
        if not self._response.done():
            self._response.set_result((status, self._headers, b"".join(self._body)))

    # -- use

    async def request(self, head: bytes, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.transport is not None  # connected before use
        self._parser = httptools.HttpResponseParser(self)
        self._response = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._size, self._got_bytes = {}, [], 0, False
        self._head_done = False
        self.reusable = False
        if len(body) < 65536:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return await self._response

    def _fail(self, exc: Exception) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_exception(exc)

    def _close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self._close()


class _Closed(ProtocolError):
    def __init__(self, got_bytes: bool) -> None:
        super().__init__(
            "the server closed the connection mid-answer"
            if got_bytes
            else "the server closed the connection without answering"
        )
        self.before_answer = not got_bytes


class Http1Client:
    """Keep-alive connections per origin, shared by every destination of the process."""

    def __init__(self) -> None:
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes, timeout_secs: float
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request and return (status, headers, body); raises TimeoutError,
        ConnectError, ProtocolError. Header names are given as the caller wants them sent."""
        origin, target = Origin.of(url)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}",
                 f"Content-Length: {len(body)}"]  # fmt: skip
        lines += [f"{k}: {v}" for k, v in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        async with asyncio.timeout(timeout_secs):
            conn, reused = await self._connection(origin)
            try:
                answer = await conn.request(head, body)
            except _Closed as exc:
                if not (reused and exc.before_answer):
                    raise
                conn, _ = await self._connection(origin, fresh=True)
                answer = await conn.request(head, body)
            except BaseException:
                conn.close()
                raise
        if conn.reusable:
            self._release(origin, conn)
        else:
            conn.close()
        return answer

    async def _connection(self, origin: Origin, fresh: bool = False) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle and not fresh:
            conn = idle.pop()
            if conn.reusable and now - conn.idle_since < KEEPALIVE_SECS:
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.scheme == "https" else None
        try:
            _, protocol = await loop.create_connection(
                _Connection, origin.host, origin.port, ssl=tls,
                server_hostname=origin.host if tls else None,
            )  # fmt: skip
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS with {origin.host}:{origin.port} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectError(
                f"cannot connect to {origin.host}:{origin.port}: {exc.strerror or exc}"
            ) from exc
        return protocol, False

    def _release(self, origin: Origin, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin, deque())
        idle.append(conn)
        while len(idle) > MAX_IDLE_PER_ORIGIN:
            idle.popleft().close()

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports close
