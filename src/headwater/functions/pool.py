"""The parent side: a pool of worker processes for one function, never user code here.

Each worker is ``python -I -m headwater.functions.runtime`` (:mod:`.runtime`) started with
an empty environment, in a private working directory outside the data directory, with only
its two pipes open; when Headwater runs as root, the worker gives up root for an
unprivileged user (``nobody`` by default) once the function's file is loaded, so its
handlers can neither read a data directory of mode 0700 nor signal Headwater.
Each call has a wall-clock deadline: the worker stops its own handler at the limit
(SIGALRM), and a worker that does not answer in time (stuck in C code), dies (``os._exit``,
a signal, the CPU or memory limit) or breaks the protocol is killed and replaced; the call
comes back as :class:`Lost`, which the caller treats as retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import pwd
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from headwater.functions.protocol import HEADER, MAX_FRAME, OVERRAN_EXIT, frame
from headwater.functions.stats import FunctionStats, now_ms

logger = logging.getLogger(__name__)

GRACE_SECS = 2.0  # beyond the function's own limit, before the worker is killed
LOAD_SECS = 30.0
RESPAWN_PAUSE_SECS = 1.0
UNPRIVILEGED_USER = "nobody"


class LoadFailed(Exception):
    """The function's code cannot be loaded; the message is ``file:line: what``."""


@dataclass(frozen=True)
class FunctionSpec:
    """One function as a worker needs it."""

    name: str
    kind: str
    file: str
    settings: dict[str, Any]
    timeout_secs: float = 5.0
    cpu_secs: float | None = None
    memory_bytes: int | None = 512 * 1024**2
    workers: int = 1

    def read_code(self) -> str:
        try:
            with open(self.file, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise LoadFailed(f"{self.file}: cannot read it: {exc.strerror}") from exc


@dataclass
class CallResult:
    """What a call answered: one result per event (``{"s": "ok"|"err"|"skip", ...}``), the
    events a source function emitted, and its log lines.

    An insert function's results are compact (``runtime.Returned``): ``0`` for an event
    returned unchanged, ``k`` ≥ 1 for a changed one — its JSON the next ``lens`` bytes of
    ``tail``, what changed ``changes[k - 1]``; :meth:`returned` reads them in order."""

    results: list[Any]
    logs: list[str] = field(default_factory=list)
    emitted: list[dict[str, Any]] = field(default_factory=list)
    ms: float = 0.0
    lost: str | None = None  # the worker died or hung: every event is retryable
    tail: bytes = b""
    lens: list[int] = field(default_factory=list)
    changes: list[list[str]] = field(default_factory=list)

    def returned(self) -> Iterator[bytes]:
        """The changed events' JSON, in the order of their results."""
        start = 0
        for size in self.lens:
            yield self.tail[start : start + size]
            start += size


def run_as() -> tuple[int, int] | None:
    """The (uid, gid) workers run as: ``nobody`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(os.environ.get("HEADWATER_FUNCTIONS_USER", UNPRIVILEGED_USER))
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process, workdir: str, generation: int) -> None:
        self.process = process
        self.workdir = workdir
        self.generation = generation
        self.batch = False  # the code has on_batch: a batch is one call, under one limit

    @classmethod
    async def spawn(cls, spec: FunctionSpec, code: str, generation: int) -> _Worker:
        owner = run_as()
        workdir = tempfile.mkdtemp(prefix=f"headwater-fn-{spec.name}-")
        if owner is not None:
            os.chown(workdir, *owner)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-m", "headwater.functions.runtime",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env={}, cwd=workdir, start_new_session=True,
            limit=MAX_FRAME,
        )  # fmt: skip
        worker = cls(process, workdir, generation)
        load = {"op": "load", "name": spec.name, "kind": spec.kind, "file": spec.file,
                "code": code, "settings": spec.settings, "timeout_secs": spec.timeout_secs,
                "cpu_secs": spec.cpu_secs, "memory_bytes": spec.memory_bytes,
                "run_as": owner}  # fmt: skip
        try:
            answer = await worker.ask(load, LOAD_SECS + spec.timeout_secs)
        except _Gone as exc:
            await worker.close()  # waited for, so no process is left to the garbage collector
            raise LoadFailed(f"{spec.file}: the worker could not load it ({exc})") from None
        except asyncio.CancelledError:  # the pool closes while this one loads
            worker.kill()
            await worker.close()
            raise
        if not answer.get("ok"):
            await worker.close()
            raise LoadFailed(str(answer.get("error")))
        worker.batch = bool(answer.get("batch"))
        return worker

    async def ask(self, message: dict[str, Any], deadline_secs: float) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(frame(message))
            await stdin.drain()
            async with asyncio.timeout(deadline_secs):
                size = HEADER.unpack(await stdout.readexactly(HEADER.size))[0]
                if size > MAX_FRAME:
                    raise _Gone(f"it sent a frame of {size} bytes")
                answer = orjson.loads(await stdout.readexactly(size))
                tail = answer.get("tail") if isinstance(answer, dict) else None
                if tail:
                    if not isinstance(tail, int) or not 0 < tail <= MAX_FRAME:
                        raise _Gone(f"it sent a tail of {tail!r} bytes")
                    answer["tail"] = await stdout.readexactly(tail)
        except TimeoutError:
            raise _Gone(f"no answer within {deadline_secs:g} s; the worker was killed") from None
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
            raise _Gone(await self._exit_reason()) from None
        except orjson.JSONDecodeError as exc:
            raise _Gone(f"it broke the protocol ({exc})") from None
        if not isinstance(answer, dict):
            raise _Gone("it broke the protocol")
        return answer

    async def _exit_reason(self) -> str:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.process.wait()
        code = self.process.returncode
        if code is None:
            return "the worker closed its pipe"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = {"SIGXCPU": " (its CPU limit)", "SIGKILL": ""}.get(name, "")
            return f"the worker died of {name}{hint}"
        if code == OVERRAN_EXIT:
            return ("the call ran past its limit and went on (the handler caught the "
                    "timeout); the worker was stopped")  # fmt: skip
        return f"the worker exited with status {code}"

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def close(self) -> None:
        stdin = self.process.stdin
        if stdin is not None:
            stdin.close()
        try:
            async with asyncio.timeout(2):
                await self.process.wait()
        except TimeoutError:
            pass
        self.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.process.wait()


def inconsistent(result: CallResult) -> str | None:
    """What is wrong with the compact part of an answer, if anything."""
    changed = [r for r in result.results if type(r) is int and r]
    if len(changed) != len(result.lens) or sum(result.lens) != len(result.tail):
        return "does not match its tail"
    if any(not 0 < r <= len(result.changes) for r in changed):
        return "names a change it does not hold"
    return None


class _Gone(Exception):
    """The worker is no longer usable; the message says why."""


class FunctionPool:
    """The workers of one function and what it did (:attr:`stats`)."""

    def __init__(self, spec: FunctionSpec, stats: FunctionStats | None = None) -> None:
        self.spec = spec
        self.stats = stats or FunctionStats(spec.name, spec.kind)
        self._code = ""
        self._generation = 0
        self._batch = False
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the workers; LoadFailed (the file and line) when the code cannot load."""
        await self._install(self.spec, self.spec.read_code())

    async def reload(self, spec: FunctionSpec | None = None) -> bool:
        """Load the code (and settings) anew; False when nothing changed. On LoadFailed the
        previous version keeps running (and the failure is in :attr:`stats`)."""
        spec = spec or self.spec
        code = spec.read_code()
        if code == self._code and spec == self.spec:
            return False
        try:
            await self._install(spec, code)
        except LoadFailed as exc:
            self.stats.load_error = str(exc)
            raise
        return True

    async def _install(self, spec: FunctionSpec, code: str) -> None:
        generation = self._generation + 1
        fresh: list[_Worker] = []
        try:
            for _ in range(spec.workers):
                fresh.append(await _Worker.spawn(spec, code, generation))
        except BaseException:
            for worker in fresh:
                await worker.close()
            raise
        old = list(self._all)
        self.spec, self._code, self._generation = spec, code, generation
        self._batch = all(w.batch for w in fresh)
        while not self._idle.empty():
            self._idle.get_nowait()
        self._all = set(fresh)
        for worker in fresh:
            self._idle.put_nowait(worker)
        for worker in old:  # busy ones finish their call and are closed on return
            if worker not in self._all:
                self._closing(worker)
        self.stats.loaded_ms = now_ms()
        self.stats.version = hashlib.sha256(code.encode()).hexdigest()[:12]
        self.stats.load_error = None

    async def call_events(self, events: list[Any]) -> CallResult:
        """Run the function on ``events`` (one round trip): dicts, or ``orjson.Fragment``
        of their JSON."""
        # on_batch is one call under the limit; per-event handlers each get it. The worker
        # stops a call that goes on past it; this deadline is for one stuck in C code
        calls = 1 if self._batch else max(1, len(events))
        deadline = self.spec.timeout_secs * calls + GRACE_SECS
        result = await self._call({"op": "events", "events": events}, deadline, len(events))
        for r in [] if result.lost else result.results:
            if type(r) is dict and r.get("s") == "err":
                self.stats.failed(str(r.get("k")), str(r.get("m")), r.get("tb"))
        return result

    async def call_request(self, request: dict[str, Any]) -> CallResult:
        result = await self._call({"op": "request", "request": request},
                                  self.spec.timeout_secs + GRACE_SECS, 1)  # fmt: skip
        for r in [] if result.lost else result.results:
            if r.get("s") == "err":
                self.stats.failed(str(r.get("k")), str(r.get("m")), r.get("tb"))
        return result

    async def _call(self, message: dict[str, Any], deadline: float, n: int) -> CallResult:
        worker = await self._idle.get()
        try:
            answer = await worker.ask(message, deadline)
        except _Gone as exc:
            reason = f"function {self.spec.name}: {exc}"
            logger.warning("%s; replacing the worker", reason)
            self.stats.restarts += 1
            self.stats.failed("WorkerLost", reason)
            self.stats.called(n, deadline * 1000 if "no answer" in str(exc) else 0.0, [])
            worker.kill()
            self._all.discard(worker)
            self._closing(worker)  # waited for, so no process is left to the garbage collector
            self._later(self._replace(worker.generation))
            return CallResult([{"s": "err", "k": "WorkerLost", "m": reason}] * n, lost=reason)
        logs = answer.get("logs") or []
        self.stats.called(n, float(answer.get("ms") or 0.0), logs)
        self._give_back(worker)
        result = CallResult(list(answer.get("results") or []), logs,
                            list(answer.get("emitted") or []), float(answer.get("ms") or 0.0),
                            tail=answer.get("tail") or b"", lens=list(answer.get("lens") or []),
                            changes=list(answer.get("changes") or []))  # fmt: skip
        problem = inconsistent(result)
        if problem:  # our runtime never answers so: treated as a lost answer, retryable
            reason = f"function {self.spec.name}: the worker's answer {problem}"
            self.stats.failed("WorkerLost", reason)
            return CallResult([{"s": "err", "k": "WorkerLost", "m": reason}] * n, logs, lost=reason)
        return result

    def _give_back(self, worker: _Worker) -> None:
        if worker.generation == self._generation and not self._closed:
            self._idle.put_nowait(worker)
        else:
            self._all.discard(worker)
            self._closing(worker)

    async def _replace(self, generation: int) -> None:
        """A worker for the one that was lost, once one can be started."""
        while not self._closed and generation == self._generation:
            try:
                worker = await _Worker.spawn(self.spec, self._code, generation)
            except LoadFailed as exc:
                logger.warning("function %s: cannot start a worker: %s", self.spec.name, exc)
                await asyncio.sleep(RESPAWN_PAUSE_SECS)
                continue
            if self._closed or generation != self._generation:
                await worker.close()
                return
            self._all.add(worker)
            self._idle.put_nowait(worker)
            return

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _closing(self, worker: _Worker) -> None:
        """Close ``worker`` in the background; :meth:`close` waits for it, never cancels it
        (a process whose close is cancelled would be left running)."""
        task = asyncio.get_running_loop().create_task(worker.close())
        self._closes.add(task)
        task.add_done_callback(self._closes.discard)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._closes, *(w.close() for w in self._all),
                             return_exceptions=True)  # fmt: skip
        self._all.clear()
