"""Fallback load generator for when wrk is not installed: asyncio, keep-alive sockets.

Each of ``--connections`` connections sends one POST, waits for the whole response,
and sends the next, for ``--duration`` seconds (the same closed loop as wrk). It
prints one ``WRK_JSON {...}`` line in wrk_post.lua's format, so the harness reads
either the same way. It is far slower than wrk: on a small machine it can become
the bottleneck, which is why the harness says when it is used.

Run: ``python bench/loadgen.py URL BODY_FILE AUTH_HEADER [--message-ids]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson

MESSAGE_ID_PLACEHOLDER = b"__MSGID__"


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    status_errors: int = 0
    read_errors: int = 0
    connect_errors: int = 0
    bytes_read: int = 0


def request_factory(url: str, body: bytes, auth: str, message_ids: bool) -> Callable[[], bytes]:
    """Build a function returning the next raw HTTP/1.1 request."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nAuthorization: {auth}\r\n"
    ).encode()
    if not message_ids:
        fixed = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        return lambda: fixed
    prefix = uuid.uuid4().hex[:12]
    counter = itertools.count(1)
    pieces = body.split(MESSAGE_ID_PLACEHOLDER)

    def build() -> bytes:
        ids = [f"{prefix}-{next(counter)}".encode() for _ in pieces[1:]]
        filled = pieces[0] + b"".join(i + p for i, p in zip(ids, pieces[1:], strict=True))
        return head + f"Content-Length: {len(filled)}\r\n\r\n".encode() + filled

    return build


async def read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Read one response; return (status, bytes read). Handles Content-Length and chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await reader.readuntil(b"0\r\n\r\n")
    else:
        body = b""
    return status, len(head) + len(body)


async def connection(
    host: str, port: int, next_request: Callable[[], bytes], deadline: float, tally: Tally
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.connect_errors += 1
        return
    try:
        while time.perf_counter() < deadline:
            request = next_request()
            started = time.perf_counter()
            writer.write(request)
            status, size = await read_response(reader)
            tally.latencies_s.append(time.perf_counter() - started)
            tally.bytes_read += size
            if not 200 <= status < 400:
                tally.status_errors += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        tally.read_errors += 1
    finally:
        writer.close()


async def run(
    url: str, next_request: Callable[[], bytes], connections: int, duration_s: float
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    tally = Tally()
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(
        *(connection(host, port, next_request, deadline, tally) for _ in range(connections))
    )
    return summarize(tally, time.perf_counter() - started)


def summarize(tally: Tally, elapsed_s: float) -> dict[str, object]:
    latencies_us = sorted(x * 1e6 for x in tally.latencies_s) or [0.0]

    def pct(p: float) -> int:
        return int(latencies_us[round(p / 100 * (len(latencies_us) - 1))])

    return {
        "requests": len(tally.latencies_s),
        "duration_us": int(elapsed_s * 1e6),
        "bytes": tally.bytes_read,
        "errors": {
            "connect": tally.connect_errors,
            "read": tally.read_errors,
            "write": 0,
            "status": tally.status_errors,
            "timeout": 0,
        },
        "latency_us": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "p999": pct(99.9),
            "max": int(latencies_us[-1]),
            "mean": sum(latencies_us) / len(latencies_us),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body_file", type=Path)
    parser.add_argument("auth_header")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--message-ids", action="store_true", help="fill __MSGID__ per event")
    args = parser.parse_args()
    next_request = request_factory(
        args.url, args.body_file.read_bytes(), args.auth_header, args.message_ids
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, next_request, args.connections, args.duration))
    print("WRK_JSON " + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
