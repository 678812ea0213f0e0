"""Test doubles shared by the suites: a scriptable fake destination server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Received:
    """One request the fake destination got."""

    at: float  # time.monotonic()
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the fake answered (or is about to answer)
    query: dict[str, str] = field(default_factory=dict)  # the query string's parameters

    def json(self) -> Any:
        return orjson.loads(self.body)

    def events(self) -> list[dict[str, Any]]:
        """The events a request carried: one event, a JSON array, or a Segment batch."""
        data = self.json()
        if isinstance(data, list):
            return data
        if isinstance(data, dict) and isinstance(data.get("batch"), list):
            return list(data["batch"])
        return [data]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay_secs: float = 0.0  # wait this long before answering (timeouts)
    hold: bool = False  # answer only once the fake's gate opens (FakeDestination.release)


_RESERVED: list[socket.socket] = []


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening on it: connections are refused until a
    server of the test listens on it.

    The port stays reserved for this test process by a bound socket that never listens (so
    connections are refused, not answered by a stranger), opened with ``SO_REUSEADDR`` so
    that a server of this test (aiohttp, uvicorn, asyncio, which all set it) can still bind
    it. Without the reservation, a test of another xdist worker could be given the same port
    between this call and its use.
    """
    sock = _reserve(0)
    assert sock is not None
    return int(sock.getsockname()[1])


def _reserve(port: int) -> socket.socket | None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    _RESERVED.append(sock)
    return sock


def free_port_block(*offsets: int) -> int:
    """A base port such that ``base + offset`` is free for every offset (a command that
    derives ports from one, as ``headwater dev cluster`` does: clients, routes on +100,
    monitoring on +200), each reserved as :func:`free_port` reserves one.

    The block lies below the kernel's ephemeral range, where outgoing connections take their
    local ports: a port there can be free when checked and taken by a connection a moment
    later, before the command listens on it.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = low - max(offsets) - 1
    for _ in range(200):
        base = random.randrange(10000, top)
        held = [_reserve(base + offset) for offset in offsets]
        if all(held):
            return base
        for sock in held:
            if sock is not None:
                _RESERVED.remove(sock)
                sock.close()
    raise RuntimeError(f"no block of free ports for offsets {offsets} below {low}")


Script = Callable[[Received, int], Reply]  # (request, its index) -> the reply


def always(status: int = 200, **kwargs: Any) -> Script:
    return lambda _req, _i: Reply(status, **kwargs)


class FakeDestination:
    """An HTTP server on 127.0.0.1 in a background thread, answering as ``script`` says.

    ``requests`` lists what it received (answered or not), in arrival order. Change
    ``script`` at any time to make it fail or recover.
    """

    def __init__(self, script: Script | None = None, port: int = 0) -> None:
        self.script: Script = script or always(200)
        self.requests: list[Received] = []
        self.port = port  # 0: any free port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._lock = threading.Lock()
        self._gate: asyncio.Event | None = None  # created on the fake's own loop
        self.answered = 0  # requests answered so far

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeDestination:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._gate = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(
            time.monotonic(), request.method, request.path, dict(request.headers),
            await request.read(), query=dict(request.query),
        )  # fmt: skip
        with self._lock:
            index = len(self.requests)
            reply = self.script(received, index)
            self.requests.append(dataclasses.replace(received, status=reply.status))
        if reply.delay_secs:
            await asyncio.sleep(reply.delay_secs)
        if reply.hold and self._gate is not None:
            await self._gate.wait()
        with self._lock:
            self.answered += 1
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers,
                            content_type="application/json")  # fmt: skip

    def release(self) -> None:
        """Answer the requests held by ``Reply(hold=True)``, and every later one at once."""
        if self._gate is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._gate.set)

    def stop(self) -> None:
        self.release()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FakeDestination:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what arrived

    def events(self, status: int | None = 200) -> list[dict[str, Any]]:
        """Events of the requests answered with ``status`` (None: all requests), in order."""
        with self._lock:
            requests = list(self.requests)
        return [e for r in requests if status in (None, r.status) for e in r.events()]

    def wait_for(self, predicate: Callable[[FakeDestination], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s; {len(self.requests)} requests arrived")
