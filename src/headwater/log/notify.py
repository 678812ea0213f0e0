"""Wakes readers when records are committed, so a follower of the log need not poll it.

In the appending process :class:`AppendSignal` wakes readers on its own event loop. Readers
in another process (the delivery worker, docs/architecture.md) bind a :class:`WakeListener`
to a Unix datagram socket; the appending process's :class:`WakeSender` sends it the newest
committed offset, at most once per turn of its event loop. A datagram lost (the worker is
restarting, its buffer is full) costs only latency: followers also poll the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

from headwater.log.base import AppendResult

_OFFSET = struct.Struct("<q")


class AppendSignal:
    """The newest committed offset, and a wait for a newer one. Lives on the event loop of
    the process that appends; ``on_commit`` (if set) hears of each newer offset too."""

    def __init__(self, last_offset: int = 0) -> None:
        self.last_offset = last_offset
        self._event = asyncio.Event()
        self.on_commit: Callable[[int], None] | None = None

    def committed(self, results: Sequence[AppendResult]) -> None:
        newest = max((r.offset for r in results if not r.duplicate), default=0)
        self.advance(newest)

    def advance(self, newest: int) -> None:
        if newest > self.last_offset:
            self.last_offset = newest
            event, self._event = self._event, asyncio.Event()
            event.set()
            if self.on_commit is not None:
                self.on_commit(newest)

    async def wait(self, after: int, timeout_secs: float) -> bool:
        if self.last_offset > after:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_secs)
        return self.last_offset > after


class WakeSender:
    """Tells a listener in another process of newly committed offsets (coalesced per turn
    of the event loop; never blocks, never raises)."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._pending = 0

    def __call__(self, offset: int) -> None:
        if self._pending == 0:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending = max(self._pending, offset)

    def _flush(self) -> None:
        offset, self._pending = self._pending, 0
        with contextlib.suppress(OSError):  # no listener (yet), or its buffer is full
            self._sock.sendto(_OFFSET.pack(offset), self._path)

    def close(self) -> None:
        self._sock.close()


class WakeListener:
    """Receives committed offsets from :class:`WakeSender` into an :class:`AppendSignal`."""

    def __init__(self, path: Path, signal: AppendSignal) -> None:
        self._path = path
        self._signal = signal
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a killed process: binding again needs the name free
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        newest = 0
        while True:
            try:
                data = self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if len(data) == _OFFSET.size:
                newest = max(newest, _OFFSET.unpack(data)[0])
        self._signal.advance(newest)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
