"""The SQLite log with its writer in a child process: no GIL shared with the HTTP event loop.

The child runs an ordinary :class:`~headwater.log.sqlite.SqliteLog` (writer thread, group
commit, dedupe, retention, back-pressure: all unchanged). The parent packs each append
(:mod:`headwater.log.frames`) and writes it as one frame to the child's stdin; the child
answers each frame on its stdout with the offsets and a snapshot of the log's stats, after
the commit. Reads never go through the child: the parent reads the same database file on a
connection of its own.

Why a process: with the writer as a thread of the HTTP process, every SQLite call of the
writer hands the GIL back and forth with the busy event loop; single ``/v1/track`` calls
were latency-bound on those hand-overs (docs/benchmarks.md).

Frames, both ways: ``<I total length> <c kind> <I request id> body``.

    parent → child   A  append: <q now_ms, I count, Q payload bytes, q first and q last
                        received_ms, I ids length> + ids JSON + packed records
                     R  retention: <q now_ms>
                     S  stop: finish what is queued, close the log, exit
    child → parent   Y  ready: stats            X  could not open the log: message
                     O  appended: [stats, offsets, duplicate flags]
                     E  refused: [stats, reason, retry_after_secs, message]
                     T  retention done: [stats, segments, records, bytes]

The child dies with its parent (``PR_SET_PDEATHSIG``, and it also stops when its stdin
closes), so a restarted server never shares the log with an old writer; its lock on the log
directory goes with it. PDEATHSIG fires when the *thread* that started the child ends: create
a ProcessLog on a thread that lives as long as the server (the app does it on the main one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import itertools
import logging
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from headwater.config.workspace import LogConfig
from headwater.errors import LogClosed, LogError, LogUnavailable
from headwater.log.base import AppendResult, LogStats, Record, RetentionReport, StoredRecord
from headwater.log.notify import AppendSignal
from headwater.log.sqlite import (
    DB_FILE,
    Packed,
    SqliteLog,
    unavailable,
    wall_clock_ms,
)
from headwater.log.sqlite_reads import Reader

logger = logging.getLogger(__name__)

RESTART_FIRST_SECS = 0.2
RESTART_MAX_SECS = 10.0
_HEAD = struct.Struct("<IcI")
_NOW = struct.Struct("<q")
_PACKED = struct.Struct("<qIQqqI")  # now, count, payload bytes, first/last received, ids length
_PIPE_BYTES = 1 << 20  # room for a whole group of batch requests (64 KB pipes cut groups to one)
_F_SETPIPE_SZ = 1031
_STATS_FIELDS = tuple(LogStats.__dataclass_fields__)
_REFUSING = _STATS_FIELDS.index("refusing")
_LAST_OFFSET = _STATS_FIELDS.index("last_offset")


def describe_exit(code: int) -> str:
    """A child's exit status in words (``killed by SIGKILL``, ``exit code 1``)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _frame(kind: bytes, request: int, body: bytes = b"") -> bytes:
    return _HEAD.pack(_HEAD.size + len(body), kind, request) + body


def _stats_list(stats: LogStats) -> list[Any]:
    return [getattr(stats, name) for name in _STATS_FIELDS]


def _enlarge(fd: int) -> None:
    with contextlib.suppress(OSError):  # an older kernel keeps 64 KB: slower, still correct
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)


class _Frames:
    """Splits a byte stream into frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, int, bytes]]:
        buf = self._buffer
        buf.extend(data)
        frames: list[tuple[bytes, int, bytes]] = []
        pos = 0
        while len(buf) - pos >= _HEAD.size:
            total, kind, request = _HEAD.unpack_from(buf, pos)
            if len(buf) - pos < total:
                break
            frames.append((kind, request, bytes(buf[pos + _HEAD.size : pos + total])))
            pos += total
        del buf[:pos]
        return frames


class ProcessLog:
    """An :class:`~headwater.log.base.EventLog` whose writer is a child process."""

    def __init__(
        self, directory: Path, config: LogConfig, *, clock_ms: Callable[[], int] = wall_clock_ms
    ) -> None:
        self._dir = directory
        self._clock_ms = clock_ms
        self._command = [sys.executable, "-m", "headwater.log.sqlite_process", str(directory),
                         config.model_dump_json()]  # fmt: skip
        if clock_ms is not wall_clock_ms:
            self._command.append("--clock-from-parent")
        self._child = self._spawn()
        self._stats = self._handshake(self._child)
        self.restarts = 0
        """How many times the writer process died and was started again."""
        self.last_exit: str | None = None
        self.last_restart_ms: int | None = None
        self.restarting = False
        self._generation = 0
        self._restart_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[bytes, bytes]]] = {}
        self._writer: asyncio.WriteTransport | None = None
        self._answers: asyncio.ReadTransport | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._refusing: str | None = None
        self._closed = False
        self._reader = Reader(directory / DB_FILE)
        self._signal = AppendSignal(self._stats[_LAST_OFFSET] or 0)

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start a writer process (on the thread that lives as long as the server: its
        death signal follows that thread)."""
        child = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.stdin is not None and child.stdout is not None
        _enlarge(child.stdin.fileno())
        return child

    @staticmethod
    def _handshake(child: subprocess.Popen[bytes]) -> list[Any]:
        assert child.stdin is not None and child.stdout is not None
        try:
            return ProcessLog._await_ready(child)
        except LogError:
            child.stdin.close()
            child.stdout.close()
            raise

    @staticmethod
    def _await_ready(child: subprocess.Popen[bytes]) -> list[Any]:
        assert child.stdout is not None
        frames = _Frames()
        while True:
            data = os.read(child.stdout.fileno(), 65536)
            if not data:
                child.wait()
                raise LogError("the event log's writer process exited at start; see its log")
            for kind, _, body in frames.feed(data):
                if kind == b"X":
                    child.wait()
                    raise LogError(body.decode())
                if kind == b"Y":
                    stats: list[Any] = orjson.loads(body)
                    return stats

    @property
    def signal(self) -> AppendSignal:
        """Wakes readers of this process when records are committed."""
        return self._signal

    @property
    def pid(self) -> int:
        return self._child.pid

    # ------------------------------------------------------------------ the EventLog API

    async def append(self, records: Sequence[Record]) -> list[AppendResult]:
        if self._closed:
            raise LogClosed("the event log is closed")
        if not records:
            return []
        refusing = self._refusing or self._stats[_REFUSING]
        if refusing in ("disk_budget", "disk_full", "writer_failed"):
            raise unavailable(refusing)
        packed = Packed.of(records)
        head = _PACKED.pack(
            self._clock_ms(), packed.count, packed.payload_bytes,
            packed.first_received_ms, packed.last_received_ms, len(packed.ids),
        )  # fmt: skip
        body = head + packed.ids + packed.blob
        kind, answer = await self._ask(b"A", body)
        if kind == b"O":
            stats, offsets, duplicates = orjson.loads(answer)
            self._stats = stats
            results = [AppendResult(o, bool(d)) for o, d in zip(offsets, duplicates, strict=True)]
            self._signal.committed(results)
            return results
        stats, reason, retry, message = orjson.loads(answer)
        self._stats = stats
        if reason == "closed":
            raise LogClosed(message)
        raise LogUnavailable(message, reason=reason, retry_after_secs=retry)

    async def read(self, after: int, limit: int = 500) -> list[StoredRecord]:
        return await self._reader.read(after, limit)

    async def get(self, message_id: str) -> StoredRecord | None:
        return await self._reader.find(message_id)

    async def wait(self, after: int, timeout_secs: float) -> bool:
        return await self._signal.wait(after, timeout_secs)

    async def enforce_retention(self, now_ms: int | None = None) -> RetentionReport:
        if self._closed:
            raise LogClosed("the event log is closed")
        now = self._clock_ms() if now_ms is None else now_ms
        kind, answer = await self._ask(b"R", _NOW.pack(now))
        if kind != b"T":
            raise LogError(f"retention failed in the writer process: {answer.decode()}")
        stats, segments, records, size = orjson.loads(answer)
        self._stats = stats
        return RetentionReport(segments, records, size)

    def stats(self) -> LogStats:
        stats = LogStats(*self._stats)
        return stats if self._refusing is None else replace(stats, refusing=self._refusing)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart_task
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(_frame(b"S", 0))
            self._writer.close()
        elif self._writer is None and self._child.stdin is not None:
            with contextlib.suppress(OSError, ValueError):  # closed: the writer is gone
                self._child.stdin.write(_frame(b"S", 0))
                self._child.stdin.close()
        await asyncio.to_thread(self._child.wait)
        if self._answers is not None:
            self._answers.close()
        elif self._child.stdout is not None:
            self._child.stdout.close()
        await self._reader.close()

    # ------------------------------------------------------------------ talking to the child

    async def _ask(self, kind: bytes, body: bytes) -> tuple[bytes, bytes]:
        if self._writer is None:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            await asyncio.shield(self._connecting)
        assert self._writer is not None
        if self._refusing == "writer_failed":
            raise unavailable("writer_failed")
        request = next(self._ids)
        future: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        self._writer.write(_frame(kind, request, body))
        return await future

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._child.stdin is not None and self._child.stdout is not None
        owner, generation = self, self._generation

        class Answers(asyncio.Protocol):
            def __init__(self) -> None:
                self.frames = _Frames()

            def data_received(self, data: bytes) -> None:
                for kind, request, body in self.frames.feed(data):
                    future = owner._waiting.pop(request, None)
                    if future is not None and not future.done():
                        future.set_result((kind, body))

            def connection_lost(self, exc: Exception | None) -> None:
                if generation == owner._generation:  # not the pipe of a replaced writer
                    owner._writer_gone()

        self._answers, _ = await loop.connect_read_pipe(Answers, self._child.stdout)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, self._child.stdin)
        self._writer = transport

    def _writer_gone(self) -> None:
        if not self._closed:
            self._refusing = "writer_failed"
            if self._restart_task is None:
                self._restart_task = asyncio.ensure_future(self._restart())
        error = unavailable("writer_failed")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()

    async def _restart(self) -> None:
        """Start a new writer after the old one died; appends meanwhile get 503 +
        Retry-After (nothing acknowledged is lost: an answer comes only after the commit)."""
        self.restarting = True
        code = await asyncio.to_thread(self._child.wait)
        self.last_exit = describe_exit(code)
        logger.error("the event log's writer process (pid %d) died: %s; restarting it",
                     self._child.pid, self.last_exit)  # fmt: skip
        delay = RESTART_FIRST_SECS
        try:
            while not self._closed:
                await asyncio.sleep(delay)
                self._drop_pipes()
                try:
                    child = self._spawn()
                    stats = await asyncio.to_thread(self._handshake, child)
                except (LogError, OSError) as exc:
                    logger.error("the event log's writer did not restart: %s", exc)
                    delay = min(delay * 2, RESTART_MAX_SECS)
                    continue
                self._child, self._stats = child, stats
                self._generation += 1
                self.restarts += 1
                self.last_restart_ms = wall_clock_ms()
                self._refusing = None
                self._signal.advance(stats[_LAST_OFFSET] or 0)
                logger.warning("the event log's writer process was restarted (pid %d, restart "
                               "%d)", child.pid, self.restarts)  # fmt: skip
                return
        finally:
            self.restarting = False
            self._restart_task = None

    def _drop_pipes(self) -> None:
        self._generation += 1  # the old pipes' closing is not news
        for transport in (self._writer, self._answers):
            if transport is not None:
                transport.close()
        self._writer = self._answers = None
        self._connecting = None
        for pipe in (self._child.stdin, self._child.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


# ---------------------------------------------------------------------- the child process


class _ParentClock:
    """The parent's clock, as of its last frame (tests run the log on a fake clock)."""

    now = 0

    def __call__(self) -> int:
        return self.now


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(1)


async def _serve(directory: Path, config: LogConfig, clock: _ParentClock | None) -> None:
    try:
        log = SqliteLog(directory, config, clock_ms=clock or wall_clock_ms)
    except LogError as exc:
        os.write(1, _frame(b"X", 0, str(exc).encode()))
        return
    os.write(1, _frame(b"Y", 0, orjson.dumps(_stats_list(log.stats()))))
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    class Flushed(asyncio.Protocol):
        def __init__(self) -> None:
            self.done: asyncio.Future[None] = loop.create_future()

        def connection_lost(self, exc: Exception | None) -> None:  # after the buffer is out
            if not self.done.done():
                self.done.set_result(None)

    answers, flushed = await loop.connect_write_pipe(Flushed, os.fdopen(1, "wb"))

    async def append(request: int, body: bytes) -> None:
        _, count, payload_bytes, first_ms, last_ms, ids_len = _PACKED.unpack_from(body)
        start = _PACKED.size
        packed = Packed(
            count=count, blob=body[start + ids_len :], ids=body[start : start + ids_len],
            payload_bytes=payload_bytes, first_received_ms=first_ms, last_received_ms=last_ms,
        )  # fmt: skip
        try:
            results = await log.append_packed(packed)
        except (LogUnavailable, LogClosed) as exc:
            reason = exc.reason if isinstance(exc, LogUnavailable) else "closed"
            retry = exc.retry_after_secs if isinstance(exc, LogUnavailable) else 5
            answer = [_stats_list(log.stats()), reason, retry, str(exc)]
            answers.write(_frame(b"E", request, orjson.dumps(answer)))
            return
        answer = [_stats_list(log.stats()), [r.offset for r in results],
                  [1 if r.duplicate else 0 for r in results]]  # fmt: skip
        answers.write(_frame(b"O", request, orjson.dumps(answer)))

    async def retain(request: int, now_ms: int) -> None:
        report = await log.enforce_retention(None if now_ms < 0 else now_ms)
        answer = [_stats_list(log.stats()), report.segments_dropped, report.records_dropped,
                  report.bytes_dropped]  # fmt: skip
        answers.write(_frame(b"T", request, orjson.dumps(answer)))

    class Requests(asyncio.Protocol):
        def __init__(self) -> None:
            self.frames = _Frames()

        def data_received(self, data: bytes) -> None:
            for kind, request, body in self.frames.feed(data):
                if clock is not None and kind in (b"A", b"R") and body:
                    (now,) = _NOW.unpack_from(body)
                    if now >= 0:
                        clock.now = now
                if kind == b"A":
                    task = loop.create_task(append(request, body))
                elif kind == b"R":
                    task = loop.create_task(retain(request, _NOW.unpack_from(body)[0]))
                else:
                    if not stopped.done():
                        stopped.set_result(None)
                    continue
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        def connection_lost(self, exc: Exception | None) -> None:
            if not stopped.done():  # the parent is gone: finish what was asked and stop
                stopped.set_result(None)

    _enlarge(0)
    await loop.connect_read_pipe(Requests, os.fdopen(0, "rb"))
    await stopped
    while tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    await log.close()
    answers.close()
    await flushed.done  # every answer reaches the parent before the process exits


def main() -> None:
    _die_with_parent()
    directory = Path(sys.argv[1])
    config = LogConfig.model_validate_json(sys.argv[2])
    clock = _ParentClock() if "--clock-from-parent" in sys.argv[3:] else None
    if clock is not None:
        clock.now = wall_clock_ms()
    try:
        import uvloop

        uvloop.run(_serve(directory, config, clock))
    except ImportError:
        asyncio.run(_serve(directory, config, clock))


if __name__ == "__main__":
    main()
