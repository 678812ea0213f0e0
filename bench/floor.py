"""The floor: the least an ingestion endpoint on Headwater's server stack can do.

A bare ASGI app that reads the whole request body, parses it with ``orjson`` and
answers ``200 {"success":true}`` — no auth, no validation, no storage. It runs on
the same stack as ``headwater serve`` (uvicorn, httptools, uvloop, one worker,
access log off), so ``bench/ingest.py`` can report Headwater as a ratio of it.

GET requests (the harness polls ``/healthz``) skip the parse and answer 200.
A body that is not JSON gets a 400, so a broken load script shows up as errors.

Run: ``python bench/floor.py --port 8081``
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OK_BODY = b'{"success":true}'
BAD_BODY = b'{"success":false,"error":"invalid JSON"}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point: lifespan handshake, then one JSON parse per request."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    status, payload = 200, OK_BODY
    if scope["method"] == "POST":
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            status, payload = 400, BAD_BODY
    await respond(send, status, payload)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, payload: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def serve(asgi_app: Any, description: str) -> None:
    """Run ``asgi_app`` on the floor's stack, on ``--host``/``--port`` from the command line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        asgi_app,
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
    )


def main() -> None:
    serve(app, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
