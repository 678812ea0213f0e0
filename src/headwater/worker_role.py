"""The ``worker`` role: delivery in a process of its own, beside the gateway.

``python -m headwater.worker_role DATA_DIR LOG_LEVEL`` reads the workspace (as JSON, one
line) from stdin, follows the log in ``DATA_DIR`` as a WAL reader
(:class:`~headwater.log.follow.FollowerLog`, woken by the gateway's datagrams) or the
workspace's JetStream stream (:class:`~headwater.log.jetstream.JetStreamLog`), runs the
:class:`~headwater.delivery.engine.DeliveryEngine` on it with the delivery store, and answers
the gateway on the control channel (:mod:`headwater.delivery.control`). It stops on SIGTERM
or SIGINT, when its stdin closes (the gateway is gone), and dies with its parent.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from headwater.config.workspace import Workspace
from headwater.delivery.control import ControlServer
from headwater.delivery.engine import DeliveryEngine
from headwater.engage.activation import with_engage
from headwater.errors import LogError
from headwater.log.follow import FollowerLog
from headwater.state.config import open_config
from headwater.status.service import with_canary
from headwater.supervisor import control_socket, die_with_parent, wake_socket
from headwater.unify.consumer import Unify
from headwater.warehouses.loader import Warehouses

if TYPE_CHECKING:
    from headwater.log.jetstream import JetStreamLog

logger = logging.getLogger("headwater.worker")

LOG_DIR = "log"
DELIVERY_DIR = "delivery"
LOG_WAIT_SECS = 60.0


async def run(workspace: Workspace, data_dir: Path, watch_stdin: bool = True) -> None:
    running, _ = with_canary(workspace)
    running = with_engage(running, lambda source: None)  # routes only: the gateway takes them
    log: FollowerLog | JetStreamLog
    if workspace.log.backend == "jetstream":  # the stream itself tells followers: no wake-ups
        from headwater.log.jetstream import JetStreamLog  # nats-py (~28 MB): only when used

        log = JetStreamLog(workspace.log)
    else:
        log = await _follow(data_dir)
    await log.open()
    config = open_config(data_dir)  # pauses of destinations disabled through the API
    engine = DeliveryEngine(running, log, data_dir / DELIVERY_DIR, pauses=config.pauses)
    # syncs beside delivery, never on the gateway's loop (docs/warehouses.md)
    warehouses = Warehouses(workspace, log, data_dir, engine.node)
    # identity processing, beside delivery
    unify = Unify(workspace.spaces, log, data_dir, state=workspace.state)
    control = ControlServer(engine, control_socket(data_dir), warehouses, unify)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if watch_stdin:
        loop.add_reader(sys.stdin.fileno(), lambda: _stdin_readable(stop))
    try:
        await engine.start()
        await control.start()
        warehouses.start()
        await unify.start()
        logger.info("delivery worker running (%d destinations, %d warehouses, %d spaces)",
                    len(engine.workers), len(warehouses.loaders), len(unify.consumers))  # fmt: skip
        await stop.wait()
    finally:
        if watch_stdin:
            loop.remove_reader(sys.stdin.fileno())
        await control.stop()
        await warehouses.stop()
        await unify.stop()
        await engine.stop()
        await log.close()
        config.close()


async def _follow(data_dir: Path) -> FollowerLog:
    """The log, once the gateway has created it (a worker may be started first)."""
    deadline = time.monotonic() + LOG_WAIT_SECS
    while True:
        try:
            return FollowerLog(data_dir / LOG_DIR, wake_socket(data_dir))
        except LogError:
            if time.monotonic() > deadline:
                raise
            logger.info("waiting for the gateway to create the log in %s", data_dir / LOG_DIR)
            await asyncio.sleep(0.5)


def _stdin_readable(stop: asyncio.Event) -> None:
    """The gateway keeps our stdin open; end of file means it is gone."""
    try:
        data = os.read(sys.stdin.fileno(), 4096)
    except OSError:
        data = b""
    if not data:
        stop.set()


def main() -> None:
    die_with_parent()
    data_dir = Path(sys.argv[1])
    level = sys.argv[2] if len(sys.argv) > 2 else "info"
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s"
    )
    workspace = Workspace.model_validate_json(sys.stdin.buffer.readline())
    gc.freeze()
    try:
        import uvloop

        uvloop.run(run(workspace, data_dir))
    except ImportError:
        asyncio.run(run(workspace, data_dir))


if __name__ == "__main__":
    main()
