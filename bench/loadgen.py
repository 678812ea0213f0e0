"""Python load generator (asyncio, keep-alive sockets): wrk's fallback, and the open loop.

Closed loop (default): each of ``--connections`` connections sends one POST, waits
for the whole response, and sends the next, for ``--duration`` seconds (the same
closed loop as wrk). It is far slower than wrk: on a small machine it can become
the bottleneck, which is why the harness says when it is used.

Open loop (``--rate R``): request *i* is due at ``start + i / R``, for ``--duration``
seconds, whatever the server does. It goes out on any idle connection of the pool
(up to ``--connections``, opened before the clock starts); when none is idle it
waits, and its latency still counts from the time it was due, so a slow server
cannot hide its queueing (no coordinated omission). Requests that go out more than
1 ms behind schedule are counted as ``late``. The generator times its own CPU and
warns on stderr when it used more than 80% of a core (then it, not the server, may
have been the limit).

Send times (``bench/delivery.py``): every ``"__SENT_US__"`` in the body is replaced by
the request's send time in µs since the epoch (``time.time()``): in the open loop its due
time, in the closed loop the time it is built, just before it goes out. Bodies without the
placeholder are sent as they are, at no cost.

Either mode prints one ``WRK_JSON {...}`` line in wrk_post.lua's format (the open
loop adds fields), so the harness reads both the same way.

Run: ``python bench/loadgen.py URL BODY_FILE AUTH_HEADER [--message-ids] [--rate R]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson

MESSAGE_ID_PLACEHOLDER = b"__MSGID__"
SENT_PLACEHOLDER = b"__SENT_US__"
RequestBuilder = Callable[[float], bytes]  # send time (epoch seconds) -> raw request


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    status_errors: int = 0
    read_errors: int = 0
    connect_errors: int = 0
    bytes_read: int = 0


def request_factory(url: str, body: bytes, auth: str, message_ids: bool) -> RequestBuilder:
    """Build a function returning the next raw HTTP/1.1 request, given its send time."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nAuthorization: {auth}\r\n"
    ).encode()
    stamped = SENT_PLACEHOLDER in body
    if not message_ids and not stamped:
        fixed = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        return lambda sent_s: fixed
    prefix = uuid.uuid4().hex[:12]
    counter = itertools.count(1)
    pieces = body.split(MESSAGE_ID_PLACEHOLDER) if message_ids else [body]

    def build(sent_s: float) -> bytes:
        ids = [f"{prefix}-{next(counter)}".encode() for _ in pieces[1:]]
        filled = pieces[0] + b"".join(i + p for i, p in zip(ids, pieces[1:], strict=True))
        if stamped:
            filled = filled.replace(SENT_PLACEHOLDER, b"%d" % round(sent_s * 1e6))
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
    host: str, port: int, next_request: RequestBuilder, deadline: float, tally: Tally
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.connect_errors += 1
        return
    try:
        while time.perf_counter() < deadline:
            request = next_request(time.time())
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
    url: str, next_request: RequestBuilder, connections: int, duration_s: float
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


# --- open loop (fixed rate) ---------------------------------------------------------

LATE_S = 0.001  # a request that goes out this far behind schedule counts as late
EARLY_OK_S = 0.0005  # a request this close to its due time goes out at once
REQUEST_TIMEOUT_S = 10.0  # as wrk --timeout in the harness
CPU_WARN_PCT = 80.0
LEAD_S = 0.05  # between the clock start and the first due time, so request 0 is not late


@dataclass
class OpenTally(Tally):
    late: int = 0
    late_max_s: float = 0.0
    timeouts: int = 0


class Schedule:
    """Request ``i`` is due at ``start + i / rate``; idle connections take them in order."""

    def __init__(self, rate: float, duration_s: float, drain_s: float) -> None:
        self.interval_s = 1.0 / rate
        self.count = max(1, round(rate * duration_s))
        self.start = time.perf_counter() + LEAD_S
        # Past this, requests not yet sent are given up (counted as "unsent").
        self.give_up_at = self.start + duration_s + drain_s
        self.taken = 0
        self.wall_offset_s = time.time() - time.perf_counter()  # perf_counter -> epoch

    def take(self) -> float | None:
        """The due time of the next request, or None when none is left (or it is too late)."""
        if self.taken >= self.count or time.perf_counter() > self.give_up_at:
            return None
        due = self.start + self.taken * self.interval_s
        self.taken += 1
        return due


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_stream(host: str, port: int, tally: Tally) -> Stream | None:
    try:
        return await asyncio.open_connection(host, port)
    except OSError:
        tally.connect_errors += 1
        return None


async def sleep_until(due: float) -> None:
    """Sleep until about ``due`` (perf_counter time): up to 1 ms early, rarely late.

    The event loop's timers tick in whole milliseconds, so a sleep ends up to about a
    millisecond off; aiming EARLY_OK_S before the due time keeps wake-ups from being
    late. A request that goes out early has its latency timed from its actual send.
    """
    for _ in range(4):
        delay = due - time.perf_counter()
        if delay <= EARLY_OK_S:
            return
        await asyncio.sleep(delay - EARLY_OK_S)


async def open_loop_worker(
    host: str,
    port: int,
    stream: Stream | None,
    next_request: RequestBuilder,
    schedule: Schedule,
    tally: OpenTally,
) -> None:
    """One connection of the pool: take the next due request whenever idle."""
    perf_counter = time.perf_counter
    while (due := schedule.take()) is not None:
        request = next_request(due + schedule.wall_offset_s)  # built while idle, before due
        await sleep_until(due)
        sent = perf_counter()
        behind_s = sent - due
        if behind_s > LATE_S:
            tally.late += 1
        tally.late_max_s = max(tally.late_max_s, behind_s)
        if stream is None or stream[0].at_eof():  # never opened, or closed by the server
            if stream is not None:
                stream[1].close()
            if (stream := await open_stream(host, port, tally)) is None:
                continue
        reader, writer = stream
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                writer.write(request)
                await writer.drain()
                status, size = await read_response(reader)
        except TimeoutError:
            tally.timeouts += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.read_errors += 1
        else:
            # From the due time (coordinated omission), or from the send if it went early.
            tally.latencies_s.append(perf_counter() - min(due, sent))
            tally.bytes_read += size
            if not 200 <= status < 400:
                tally.status_errors += 1
            continue
        writer.close()  # the connection is in an unknown state: a fresh one next time
        stream = None
    if stream is not None:
        stream[1].close()


async def run_open_loop(
    url: str, next_request: RequestBuilder, connections: int, duration_s: float, rate: float
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    tally = OpenTally()
    streams = await asyncio.gather(*(open_stream(host, port, tally) for _ in range(connections)))
    schedule = Schedule(rate, duration_s, drain_s=REQUEST_TIMEOUT_S)
    cpu_before = time.process_time()
    await asyncio.gather(
        *(open_loop_worker(host, port, s, next_request, schedule, tally) for s in streams)
    )
    # The run lasts the scheduled duration, or longer if the last answers came late.
    elapsed_s = max(time.perf_counter() - schedule.start, duration_s)
    cpu_pct = (time.process_time() - cpu_before) / elapsed_s * 100
    result = summarize(tally, elapsed_s)
    errors = result["errors"]
    assert isinstance(errors, dict)
    errors["timeout"] = tally.timeouts
    errors["unsent"] = schedule.count - schedule.taken
    ok = len(tally.latencies_s) - tally.status_errors
    result["open_loop"] = {
        "rate": rate,
        "scheduled": schedule.count,
        "achieved_rate": ok / elapsed_s,
        "late": tally.late,
        "late_max_us": int(max(tally.late_max_s, 0.0) * 1e6),
        "connections": connections,
        "cpu_pct": cpu_pct,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body_file", type=Path)
    parser.add_argument("auth_header")
    parser.add_argument("--connections", type=int, default=32, help="(pool size with --rate)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--message-ids", action="store_true", help="fill __MSGID__ per event")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    args = parser.parse_args()
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    next_request = request_factory(
        args.url, args.body_file.read_bytes(), args.auth_header, args.message_ids
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.rate is None:
        result = asyncio.run(run(args.url, next_request, args.connections, args.duration))
    else:
        load = run_open_loop(args.url, next_request, args.connections, args.duration, args.rate)
        result = asyncio.run(load)
        cpu_pct = result["open_loop"]["cpu_pct"]  # type: ignore[index]
        if cpu_pct > CPU_WARN_PCT:
            print(
                f"loadgen.py: warning: the generator used {cpu_pct:.0f}% of a core;"
                " it may have been the bottleneck",
                file=sys.stderr,
                flush=True,
            )
    print("WRK_JSON " + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
