"""The delivery worker's control channel: a Unix socket, one JSON object per line each way.

The worker process serves it; the gateway's :class:`~headwater.delivery.remote.RemoteEngine`
asks. Everything durable (cursors, ledger, retries, dead letters, replay jobs) is read from
the stores on disk by whoever needs it; only what lives in the worker's memory crosses
here, and only for readers (nothing on the delivery path waits for it):

    → {"op": "snapshot"}
    ← {"pid": 123, "workers": {name: worker snapshot}}   (headwater.delivery.snapshot)
    → {"op": "devsink", "name": "sink", "limit": 100}
    ← {"total": 5, "events": [...]}  or  {"error": "not_found"}
    → {"op": "configure", "workspace": {...}, "end": 1234, "revision": 7}
    ← {"revision": 7, "destinations": {name: "created, running" | "removed" | ...}}

``configure`` is the one request that changes something: a workspace changed through the
API (``end`` is the log's last offset when the change was accepted: where a new destination
starts). Each snapshot carries the ``revision`` the worker runs, so the gateway sends the
workspace again to a worker that restarted with an older one.

Any other request gets ``{"error": "unknown_op"}``. The socket file is made with mode 0600
under a directory only its owner can enter (devsink events are customer data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from headwater.delivery.engine import DeliveryEngine

if TYPE_CHECKING:
    from headwater.unify.consumer import Unify
    from headwater.warehouses.loader import Warehouses
from headwater.delivery.snapshot import worker_snapshot

logger = logging.getLogger(__name__)

LINE_LIMIT_BYTES = 64 * 1024 * 1024  # a devsink page of large events fits


class ControlServer:
    """Answers the gateway's questions about the engine running in this process."""

    def __init__(
        self, engine: DeliveryEngine, path: Path, warehouses: Warehouses | None = None,
        unify: Unify | None = None,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.warehouses = warehouses
        self.unify = unify
        self.revision = 0  # the configuration revision that ran whole (delivery, syncs, spaces)
        self._configuring = asyncio.Lock()
        self.path = path
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a killed worker's: nobody listens on it any more
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=LINE_LIMIT_BYTES
            )
        finally:
            os.umask(old)

    async def stop(self) -> None:
        for client in list(self._clients):
            client.close()  # their handlers read the end of the stream and return
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while line := await reader.readline():
                try:
                    request = orjson.loads(line)
                    if isinstance(request, dict) and request.get("op") == "configure":
                        answer = await self.configure(request)
                    else:
                        answer = self.answer(request)
                except (ValueError, TypeError, KeyError) as exc:
                    answer = {"error": "bad_request", "message": str(exc)}
                writer.write(orjson.dumps(answer) + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            return  # the server stops; the gateway reconnects to the next worker
        finally:
            self._clients.discard(writer)
            writer.close()

    async def configure(self, request: dict[str, Any]) -> dict[str, Any]:
        from headwater.config.workspace import Workspace
        from headwater.engage.activation import with_engage
        from headwater.status.service import with_canary

        user = Workspace.model_validate(request["workspace"])
        workspace, _ = with_canary(user)
        workspace = with_engage(workspace, lambda source: None)  # as worker_role.run does
        revision = int(request["revision"])
        async with self._configuring:
            try:
                done = await self.engine.reconfigure(workspace, int(request["end"]), revision)
                synced = (await self.warehouses.reconfigure(user)
                          if self.warehouses is not None else {})  # fmt: skip
                spaces = await self.unify.reconfigure(user.spaces) if self.unify else {}
            except Exception as exc:
                logger.exception("configuration revision %d did not run whole", revision)
                return {"error": "configure_failed", "message": str(exc) or type(exc).__name__}
            self.revision = revision
        return {"revision": revision, "destinations": done, "warehouses": synced,
                "spaces": spaces}  # fmt: skip

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "snapshot":
            workers = {n: worker_snapshot(w) for n, w in self.engine.workers.items()}
            return {"pid": os.getpid(), "workers": workers, "revision": self.revision,
                    "held": sorted(self.engine.held)}  # fmt: skip
        if op == "devsink":
            sink = self.engine.devsink(str(request["name"]))
            if sink is None:
                return {"error": "not_found"}
            return {"total": sink.delivered_total, "events": sink.recent(int(request["limit"]))}
        return {"error": "unknown_op", "message": f"unknown op {op!r}"}
