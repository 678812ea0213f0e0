"""uvicorn's httptools protocol with time limits for slow clients.

uvicorn cuts an idle keep-alive connection (``timeout_keep_alive``) but has no limit for a
client that opens a connection and trickles its request line and headers, nor for one that
trickles a body: such a connection stays open for as long as the client likes (slowloris).
This subclass adds both limits:

- **headers**: the request line and headers must be complete within
  ``headers_timeout_secs`` of the connection opening or of the request's first byte. A
  request that began is answered 408 and closed; a connection that never sent a byte is
  closed without a word (an answer nobody asked for would be read as the answer to the next
  request).
- **body**: the body must be complete within ``body_timeout_secs`` of the headers. The app's
  pending ``receive()`` then gets ``http.disconnect`` (the scope says why, under
  :data:`~headwater.gateway.bodies.BODY_TIMEOUT_KEY`), the client gets a 408 when no answer
  was started, and the connection is closed.

One sweep a fraction of a second apart checks every connection, instead of a timer per
request: arming and cancelling a timer costs a few microseconds on a path that answers in
tens, and these limits need no finer resolution. The sweep runs only while there are
connections.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from headwater.gateway.bodies import BODY_TIMEOUT_KEY

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def _answer_408(message: str) -> bytes:
    body = b'{"code":"request_timeout","message":"%s"}' % message.encode()
    return _REQUEST_TIMEOUT % (len(body), body)


class _Sweep:
    """The periodic check of every connection of one server."""

    def __init__(self, interval_secs: float) -> None:
        self.interval_secs = interval_secs
        self.handle: asyncio.TimerHandle | None = None

    def ensure(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        if self.handle is None:
            self.handle = loop.call_later(self.interval_secs, self.run, loop, connections)

    def run(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.handle = None
        now = time.monotonic()
        for protocol in list(connections):
            if isinstance(protocol, TimedHttpProtocol):
                protocol.check(now)
        if connections:
            self.ensure(loop, connections)


class TimedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header and body time limits (see the module docstring).
    Use :func:`timed_protocol` to make a class with the limits set."""

    headers_timeout_secs = 10.0
    body_timeout_secs = 30.0
    sweep: _Sweep = _Sweep(1.0)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._headers_since: float | None = None  # waiting for a request line and headers
        self._request_begun = False  # ... of which at least a byte came
        self._body_since: float | None = None  # waiting for the body of a request

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_since = time.monotonic()
        self.sweep.ensure(self.loop, self.connections)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._headers_since is None:
            self._headers_since = time.monotonic()

    def on_headers_complete(self) -> None:
        self._headers_since = None
        self._request_begun = False
        self._body_since = time.monotonic()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_since = None
        super().on_message_complete()

    def check(self, now: float) -> None:
        """Cut this connection if a limit has passed (called by the sweep)."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._headers_since is not None and now - self._headers_since > (
            self.headers_timeout_secs
        ):
            self._headers_late()
        elif self._body_since is not None and now - self._body_since > self.body_timeout_secs:
            self._body_late()

    def _headers_late(self) -> None:
        self._headers_since = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # a pipelined request trickles: close after this answer
            return
        if self._request_begun:
            secs = f"{self.headers_timeout_secs:g}"
            self.transport.write(_answer_408(f"the request headers did not arrive within {secs} s"))
        self.transport.close()

    def _body_late(self) -> None:
        self._body_since = None
        cycle = self.cycle
        if cycle is None:
            return
        answered = cycle.response_started
        if not cycle.response_complete:
            scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
            scope.setdefault("extensions", {})[BODY_TIMEOUT_KEY] = self.body_timeout_secs
            cycle.disconnected = True  # the app's receive() answers http.disconnect
            cycle.message_event.set()
        if not answered:
            secs = f"{self.body_timeout_secs:g}"
            self.transport.write(_answer_408(f"the request body did not arrive within {secs} s"))
        self.transport.close()


def timed_protocol(
    headers_timeout_secs: float, body_timeout_secs: float
) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` with these limits."""
    interval = min(1.0, headers_timeout_secs / 4, body_timeout_secs / 4)
    attributes = {
        "headers_timeout_secs": headers_timeout_secs,
        "body_timeout_secs": body_timeout_secs,
        "sweep": _Sweep(interval),
    }
    return type("HeadwaterHttpProtocol", (TimedHttpProtocol,), attributes)
