"""The child processes of ``headwater serve``: started, watched, restarted, stopped.

``headwater serve`` (role ``all``) is the gateway process; it supervises

- the **log writer** (:class:`~headwater.log.sqlite_process.ProcessLog` starts and restarts
  it itself: it owns the pipes the appends go through), and
- the **delivery worker** (role ``worker``, :mod:`headwater.worker_role`), a :class:`Child`
  here: it follows the log as a WAL reader and delivers.

A child that dies is started again after a backoff (``RESTART_FIRST_SECS``, doubling up to
``RESTART_MAX_SECS``, back to the first after ``HEALTHY_SECS`` of running); each restart is
logged and counted, and :func:`process_infos` feeds the status components
(``process:writer``, ``process:worker``) and ``/readyz``. Children die with the gateway
(``PR_SET_PDEATHSIG``; the worker also stops when its stdin closes), so a gateway killed
with ``kill -9`` leaves no orphan delivering beside its successor.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from headwater.log.sqlite_process import ProcessLog, describe_exit

logger = logging.getLogger(__name__)

RESTART_FIRST_SECS = 0.5
RESTART_MAX_SECS = 30.0
HEALTHY_SECS = 60.0
STOP_GRACE_SECS = 15.0
SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; keep room


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One child process as status shows it."""

    name: str  # writer | worker
    role: str
    pid: int | None
    state: str  # running | restarting | stopped
    restarts: int
    last_exit: str | None  # how the last one ended ("killed by SIGKILL"), None if never
    last_restart_ms: int | None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role, "pid": self.pid, "state": self.state,
                "restarts": self.restarts, "lastExit": self.last_exit,
                "lastRestartMs": self.last_restart_ms}  # fmt: skip


def writer_info(log: ProcessLog) -> ProcessInfo:
    """The log writer process, which :class:`ProcessLog` supervises itself."""
    state = "restarting" if log.restarting else "running"
    return ProcessInfo("writer", "gateway", log.pid, state, log.restarts, log.last_exit,
                       log.last_restart_ms)  # fmt: skip


def run_dir(data_dir: Path) -> Path:
    """Where the processes of one data directory keep their sockets: ``<data>/run``, or, when
    that path is too long for a Unix socket's name, a private directory under the system's
    temporary directory named after the data directory (both processes compute the same)."""
    wanted = data_dir.resolve() / "run"
    if len(str(wanted / "control.sock")) > SUN_PATH_MAX:
        digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:16]
        wanted = Path(tempfile.gettempdir()) / f"headwater-{os.getuid()}-{digest}"
    wanted.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(wanted, 0o700)
    return wanted


def control_socket(data_dir: Path) -> Path:
    return run_dir(data_dir) / "control.sock"


def wake_socket(data_dir: Path) -> Path:
    return run_dir(data_dir) / "wake.sock"


def die_with_parent() -> None:
    """In a child: be killed when the parent dies (Linux), or exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)


def _feed(process: subprocess.Popen[bytes], data: bytes) -> None:
    assert process.stdin is not None
    with contextlib.suppress(OSError, ValueError):  # it died at once: the watch sees it
        process.stdin.write(data)
        process.stdin.flush()


class Child:
    """A supervised child process. ``stdin`` is written to it at each start and the pipe is
    kept open: the child stops when it closes (its parent is gone)."""

    def __init__(self, name: str, role: str, command: list[str], stdin: bytes = b"") -> None:
        self.name = name
        self.role = role
        self._command = command
        self.stdin = stdin
        self._process: subprocess.Popen[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.last_exit: str | None = None
        self.last_restart_ms: int | None = None
        self.state = "stopped"

    def start(self) -> None:
        """Start the process and watch it (call on the event loop's thread, which lives as
        long as the server: the death signal follows the thread that started the child)."""
        self._spawn()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._watch(), name=f"child:{self.name}")

    def _spawn(self) -> None:
        process = subprocess.Popen(self._command, stdin=subprocess.PIPE)
        # on a thread: a workspace larger than the pipe would block the event loop until
        # the child, still importing, reads it
        threading.Thread(target=_feed, args=(process, self.stdin), daemon=True).start()
        self._process = process
        self.state = "running"
        logger.info("started the %s process (pid %d)", self.name, process.pid)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def info(self) -> ProcessInfo:
        return ProcessInfo(self.name, self.role, self.pid, self.state, self.restarts,
                           self.last_exit, self.last_restart_ms)  # fmt: skip

    async def _watch(self) -> None:
        delay = RESTART_FIRST_SECS
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = await asyncio.to_thread(process.wait)
            if self._stopping:
                return
            self.last_exit = describe_exit(code)
            self.state = "restarting"
            if time.monotonic() - started > HEALTHY_SECS:
                delay = RESTART_FIRST_SECS
            logger.error("the %s process (pid %d) died: %s; restarting it in %.1f s",
                         self.name, process.pid, self.last_exit, delay)  # fmt: skip
            self._close_stdin(process)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_SECS)
            if self._stopping:
                return
            self._spawn()
            self.restarts += 1
            self.last_restart_ms = int(time.time() * 1000)
            logger.warning("restarted the %s process (pid %d, restart %d)",
                           self.name, self.pid, self.restarts)  # fmt: skip

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_GRACE_SECS``."""
        self._stopping = True
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, STOP_GRACE_SECS)
            except subprocess.TimeoutExpired:
                logger.error("the %s process did not stop in %.0f s; killing it",
                             self.name, STOP_GRACE_SECS)  # fmt: skip
                process.kill()
                await asyncio.to_thread(process.wait)
        if process is not None:
            self._close_stdin(process)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.state = "stopped"

    @staticmethod
    def _close_stdin(process: subprocess.Popen[bytes]) -> None:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
