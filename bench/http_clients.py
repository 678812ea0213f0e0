"""Async HTTP clients for delivery: httpx against aiohttp, POSTing events to a local receiver.

The delivery engine will POST events to destinations from the server's event loop, on a
machine whose 2 cores it shares with ingestion, so what matters most is the client's CPU
per request; throughput and latency come next. This script measures both clients the way
the engine would use them:

- **the receiver**: this file run with ``--receiver PORT`` in a subprocess (its own
  session, 127.0.0.1 only): uvicorn with httptools and uvloop, one worker, access log off,
  serving a bare ASGI app that reads the whole body and answers ``200 {"ok":true}``.
  It is stopped (SIGTERM, then SIGKILL to its process group) when the benchmark ends,
  whatever happens; it also dies with the benchmark (``PR_SET_PDEATHSIG``).
- **the clients**, in this process on a uvloop event loop, each built for the run and
  closed after it: ``httpx.AsyncClient`` with a pool of ``--concurrency`` keep-alive
  connections, and ``aiohttp.ClientSession`` with a ``TCPConnector`` of the same size
  (neither takes a proxy from the environment; aiohttp gets a ``DummyCookieJar``, httpx
  cannot turn its cookie jar off). ``--library-defaults`` builds both with no options.

Each run: ``--concurrency`` tasks (default 16) each POST, wait for the whole answer, and
POST again (a closed loop), for a 1 s warm-up and then ``--duration`` s (default 5)
that are measured. Two modes: ``single`` (one ~600-byte Segment track event per request)
and ``batch`` (a JSON array of 100 such events per request). Bodies are serialized once
with orjson and sent as bytes, as the engine would, so neither client's JSON encoder is
timed. ``--rounds N`` repeats everything, alternating which client goes first; the table
shows medians over the rounds and the aiohttp/httpx ratios (the median of per-round
ratios, with their range).

httpcore 1.0.x tries ``import sniffio`` every time it sets up a lock or an event (several
times per request) and falls back to asyncio when it fails; anyio >= 4.12 no longer
installs sniffio and Python does not cache failed imports, so without sniffio each request
pays for a few searches of ``sys.path`` (encode/httpcore#1103). The script says when that
is the case; ``--patch-httpcore`` measures httpx as it would be with sniffio installed or
that fix released (httpcore then assumes asyncio).

Columns: requests/s and events/s (200 answers only), client CPU seconds per 1000 requests
(``time.process_time`` of this process over the measured window, so the clients' own
work plus the event loop), client and receiver CPU in % of one core (a receiver near
100% means it, not the client, capped the rate), the CPU the rest of the machine used
(other processes, VM steal; above 10% the run is flagged), p50/p99 latency, errors.

Run: ``.venv/bin/python bench/http_clients.py [--rounds 3] [--json]``
(needs aiohttp: ``.venv/bin/pip install aiohttp``)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import importlib.metadata
import importlib.util
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx
import orjson
import uvloop

try:
    import aiohttp
except ImportError:  # not a project dependency (yet)
    sys.exit("bench/http_clients.py needs aiohttp: .venv/bin/pip install aiohttp")

HOST = "127.0.0.1"
PATH = "/v1/deliver"
OK_BODY = b'{"ok":true}'
BATCH_SIZE = 100
CLIENTS = ("httpx", "aiohttp", "headwater")  # headwater: src/headwater/delivery/http1.py
MODES = ("single", "batch")
REQUEST_TIMEOUT_S = 10.0
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
OTHER_BUSY_PCT = 10.0  # CPU of the rest of the machine above which the run is flagged as noisy
RECEIVER_BUSY_PCT = 90.0  # receiver CPU (of one core) above which it may have capped the rate
# Talk to the receiver directly, whatever http_proxy says.
LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
HEADERS = {"Content-Type": "application/json"}


class BenchError(RuntimeError):
    """Something the benchmark needs failed to run; the message says what."""


# --- the receiver (runs in the subprocess) ---------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RESPONSE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(OK_BODY)).encode()),
]


async def receiver_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Bare ASGI app: read the whole body, answer 200 ``{"ok":true}``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:
        message = await receive()
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": RESPONSE_HEADERS})
    await send({"type": "http.response.body", "body": OK_BODY})


def die_with_parent() -> None:
    """Linux: get SIGKILL when the benchmark process dies, even by SIGKILL."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def serve_receiver(port: int) -> None:
    import uvicorn

    die_with_parent()
    uvicorn.run(
        receiver_app,
        host=HOST,
        port=port,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


# --- receiver process plumbing (benchmark side) ----------------------------------------


@dataclass(frozen=True)
class Receiver:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"receiver exited with {self.process.returncode}\n{self.log_tail()}")

    def cpu_s(self) -> float:
        """utime + stime of the receiver process (all its threads), from /proc."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text)


def machine_busy_cpu_s() -> float:
    """CPU time used by everything on the machine (all CPUs, incl. VM steal), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_S


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_receiver(log_dir: Path, cpu: int | None) -> Iterator[Receiver]:
    """Start the receiver and yield once it answers; always kill it (and its group) after."""
    port = free_port()
    log_path = log_dir / "receiver.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--receiver", str(port)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    receiver = Receiver(process=process, port=port, log_path=log_path)
    try:
        wait_ready(receiver, timeout_s=15.0)
        yield receiver
    finally:
        stop_process(process)


def wait_ready(receiver: Receiver, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(receiver.url, data=b"{}", method="POST", headers=HEADERS)
    while time.monotonic() < deadline:
        receiver.check_alive()
        try:
            with LOCAL_HTTP.open(request, timeout=1) as response:
                if response.status == 200 and response.read() == OK_BODY:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise BenchError(f"receiver not ready after {timeout_s:.0f} s\n{receiver.log_tail()}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    # The receiver leads its own session, so its group holds only it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# --- request bodies ----------------------------------------------------------------------


def track_event(n: int) -> dict[str, object]:
    """A Segment track event as the engine would forward it (about 600 bytes serialized)."""
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": f"user-{n:06d}",
        "event": "Order Completed",
        "properties": {
            "order_id": f"ord_{n:08x}",
            "product_id": "sku-12345",
            "name": "Trail Running Shoe",
            "category": "footwear",
            "price": 129.99,
            "quantity": 2,
            "currency": "USD",
            "coupon": None,
        },
        "context": {
            "library": {"name": "analytics-node", "version": "2.1.0"},
            "ip": "203.0.113.42",
            "locale": "en-US",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
            "page": {"path": "/checkout", "url": "https://shop.example.com/checkout"},
        },
        "timestamp": "2026-11-26T12:00:00.000Z",
        "receivedAt": "2026-11-26T12:00:00.061Z",
    }


def request_body(mode: str) -> bytes:
    if mode == "single":
        return orjson.dumps(track_event(0))
    return orjson.dumps([track_event(n) for n in range(BATCH_SIZE)])


def events_per_request(mode: str) -> int:
    return 1 if mode == "single" else BATCH_SIZE


# --- the clients -------------------------------------------------------------------------


class Poster(Protocol):
    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body``, read the whole answer, return (status, body)."""
        ...

    async def aclose(self) -> None: ...


class HttpxPoster:
    def __init__(self, url: str, connections: int, library_defaults: bool) -> None:
        self._url = url
        if library_defaults:
            self._client = httpx.AsyncClient()
        else:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=connections,
                    max_keepalive_connections=connections,
                    keepalive_expiry=4.0,  # below uvicorn's 5 s keep-alive timeout
                ),
                timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
                trust_env=False,
            )

    async def post(self, body: bytes) -> tuple[int, bytes]:
        response = await self._client.post(self._url, content=body, headers=HEADERS)
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


class AiohttpPoster:
    def __init__(self, url: str, connections: int, library_defaults: bool) -> None:
        self._url = url
        if library_defaults:
            self._session = aiohttp.ClientSession()
        else:
            connector = aiohttp.TCPConnector(
                limit=connections,
                limit_per_host=connections,
                keepalive_timeout=4.0,  # default 15 s outlives uvicorn's 5 s keep-alive
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def post(self, body: bytes) -> tuple[int, bytes]:
        async with self._session.post(self._url, data=body, headers=HEADERS) as response:
            return response.status, await response.read()

    async def aclose(self) -> None:
        await self._session.close()


class HeadwaterPoster:
    """Headwater's own HTTP/1.1 client, the one its destinations use."""

    def __init__(self, url: str) -> None:
        from headwater.delivery.http1 import Http1Client

        self._url = url
        self._client = Http1Client()

    async def post(self, body: bytes) -> tuple[int, bytes]:
        status, _, answer = await self._client.request(
            "POST", self._url, HEADERS, body, REQUEST_TIMEOUT_S
        )
        return status, answer

    async def aclose(self) -> None:
        await self._client.close()


def sniffio_installed() -> bool:
    return importlib.util.find_spec("sniffio") is not None


def patch_httpcore() -> None:
    """Make httpcore skip its per-lock ``import sniffio`` (encode/httpcore#1103): asyncio only."""
    from httpcore import _synchronization

    def asyncio_only() -> str:
        return "asyncio"

    # The pool's backend asks once per client, through its own import of the name: left alone.
    _synchronization.current_async_library = asyncio_only


def make_poster(client: str, url: str, connections: int, library_defaults: bool) -> Poster:
    """Build a client; call inside the running loop (aiohttp binds its session to it)."""
    if client == "httpx":
        return HttpxPoster(url, connections, library_defaults)
    if client == "headwater":
        return HeadwaterPoster(url)
    return AiohttpPoster(url, connections, library_defaults)


# --- one measured run --------------------------------------------------------------------


@dataclass
class Tally:
    recording: bool = False
    stopping: bool = False
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class RunResult:
    round: int
    client: str
    mode: str
    duration_s: float
    requests: int  # 200 answers in the measured window
    errors: dict[str, int]
    req_per_s: float
    events_per_s: float
    client_cpu_s: float
    client_cpu_s_per_1k_req: float
    client_cpu_us_per_event: float
    client_cpu_pct: float  # of one core
    receiver_cpu_pct: float  # of one core
    other_cpu_pct: float  # of one core: the rest of the machine (other processes, steal)
    p50_ms: float
    p99_ms: float
    max_ms: float


async def worker(poster: Poster, body: bytes, tally: Tally) -> None:
    while not tally.stopping:
        started = time.perf_counter()
        try:
            status, _ = await poster.post(body)
        except (httpx.HTTPError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            if tally.recording:
                tally.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.01)  # a dead receiver must not turn this into a busy loop
            continue
        elapsed = time.perf_counter() - started
        if not tally.recording:
            continue
        if status == 200:
            tally.latencies_s.append(elapsed)
        else:
            tally.errors[f"HTTP {status}"] += 1


def percentile_ms(sorted_s: Sequence[float], q: float) -> float:
    if not sorted_s:
        return 0.0
    index = min(len(sorted_s) - 1, max(0, round(q * len(sorted_s) + 0.5) - 1))
    return sorted_s[index] * 1000


async def measure(
    options: Options, receiver: Receiver, round_no: int, client: str, mode: str
) -> RunResult:
    body = request_body(mode)
    poster = make_poster(client, receiver.url, options.concurrency, options.library_defaults)
    try:
        status, answer = await poster.post(body)
        if status != 200 or answer != OK_BODY:
            raise BenchError(f"{client}: preflight POST answered {status} {answer[:200]!r}")
        tally = Tally()
        tasks = [
            asyncio.create_task(worker(poster, body, tally)) for _ in range(options.concurrency)
        ]
        try:
            await asyncio.sleep(options.warmup_s)
            receiver_cpu_0 = receiver.cpu_s()
            machine_cpu_0 = machine_busy_cpu_s()
            cpu_0 = time.process_time()
            wall_0 = time.perf_counter()
            tally.recording = True
            await asyncio.sleep(options.duration_s)
            tally.recording = False
            wall = time.perf_counter() - wall_0
            cpu = time.process_time() - cpu_0
            receiver_cpu = receiver.cpu_s() - receiver_cpu_0
            machine_cpu = machine_busy_cpu_s() - machine_cpu_0
            tally.stopping = True
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=REQUEST_TIMEOUT_S + 5)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await poster.aclose()
    receiver.check_alive()

    latencies = sorted(tally.latencies_s)
    requests = len(latencies)
    completed = requests + sum(tally.errors.values())
    events = requests * events_per_request(mode)
    return RunResult(
        round=round_no,
        client=client,
        mode=mode,
        duration_s=wall,
        requests=requests,
        errors=dict(tally.errors),
        req_per_s=requests / wall,
        events_per_s=events / wall,
        client_cpu_s=cpu,
        client_cpu_s_per_1k_req=cpu / completed * 1000 if completed else 0.0,
        client_cpu_us_per_event=cpu / events * 1e6 if events else 0.0,
        client_cpu_pct=cpu / wall * 100,
        receiver_cpu_pct=receiver_cpu / wall * 100,
        other_cpu_pct=max(0.0, machine_cpu - cpu - receiver_cpu) / wall * 100,
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
        max_ms=latencies[-1] * 1000 if latencies else 0.0,
    )


async def run_all(options: Options, receiver: Receiver) -> list[RunResult]:
    results: list[RunResult] = []
    for round_no in range(1, options.rounds + 1):
        # Alternate who goes first, so drift on a noisy machine hits both clients alike.
        order = CLIENTS if round_no % 2 else CLIENTS[::-1]
        for mode in options.modes:
            for client in order:
                gc.collect()
                result = await measure(options, receiver, round_no, client, mode)
                results.append(result)
                print(
                    f"round {round_no}/{options.rounds} {client:7} {mode:6} "
                    f"{result.req_per_s:9,.0f} req/s  "
                    f"{result.client_cpu_s_per_1k_req:.3f} CPU s/1k req  "
                    f"p99 {result.p99_ms:.2f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    return results


# --- summary -----------------------------------------------------------------------------

SUMMARY_FIELDS = (
    "req_per_s",
    "events_per_s",
    "client_cpu_s_per_1k_req",
    "client_cpu_us_per_event",
    "client_cpu_pct",
    "receiver_cpu_pct",
    "other_cpu_pct",
    "p50_ms",
    "p99_ms",
    "max_ms",
)
RATIO_FIELDS = ("req_per_s", "client_cpu_s_per_1k_req", "p50_ms", "p99_ms")


def summarize(results: Sequence[RunResult], modes: Sequence[str]) -> dict[str, Any]:
    """Medians per client and mode, and aiohttp/httpx ratios (median of per-round ratios)."""
    medians: dict[str, dict[str, dict[str, float | int]]] = {}
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    own: dict[str, dict[str, dict[str, float]]] = {}
    for mode in modes:
        medians[mode] = {}
        for client in CLIENTS:
            runs = [r for r in results if r.client == client and r.mode == mode]
            row: dict[str, float | int] = {
                name: statistics.median(getattr(r, name) for r in runs) for name in SUMMARY_FIELDS
            }
            row["errors"] = sum(sum(r.errors.values()) for r in runs)
            medians[mode][client] = row
        ratios[mode] = _ratios(results, mode, "aiohttp", "httpx")
        own[mode] = _ratios(results, mode, "headwater", "aiohttp")
    return {
        "medians": medians,
        "ratios_aiohttp_over_httpx": ratios,
        "ratios_headwater_over_aiohttp": own,
    }


def _ratios(
    results: Sequence[RunResult], mode: str, client: str, base_client: str
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in RATIO_FIELDS:
        per_round = []
        for round_no in sorted({r.round for r in results}):
            pair = {r.client: r for r in results if r.mode == mode and r.round == round_no}
            base = getattr(pair[base_client], name)
            if base:
                per_round.append(getattr(pair[client], name) / base)
        if per_round:
            out[name] = {
                "median": statistics.median(per_round),
                "min": min(per_round),
                "max": max(per_round),
            }
    return out


def print_table(summary: dict[str, Any], options: Options, out: TextIO) -> None:
    medians = summary["medians"]
    ratios = summary["ratios_aiohttp_over_httpx"]
    header = (
        f"{'client':8} {'mode':6} {'req/s':>9} {'events/s':>10} {'CPU s/1k req':>12} "
        f"{'client CPU':>10} {'recv CPU':>8} {'other':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6}"
    )
    print(
        f"\n{options.concurrency} concurrent tasks, {options.duration_s:g} s per run after "
        f"{options.warmup_s:g} s warm-up, median of {options.rounds} round(s)"
        + (", library defaults" if options.library_defaults else "")
        + (", httpcore patched (no per-lock sniffio import)" if options.patch_httpcore else ""),
        file=out,
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    busy_receiver = busy_machine = False
    for mode in options.modes:
        for client in CLIENTS:
            row = medians[mode][client]
            busy_receiver |= row["receiver_cpu_pct"] > RECEIVER_BUSY_PCT
            busy_machine |= row["other_cpu_pct"] > OTHER_BUSY_PCT
            print(
                f"{client:8} {mode:6} {row['req_per_s']:9,.0f} {row['events_per_s']:10,.0f} "
                f"{row['client_cpu_s_per_1k_req']:12.3f} {row['client_cpu_pct']:9.0f}% "
                f"{row['receiver_cpu_pct']:7.0f}% {row['other_cpu_pct']:5.0f}% "
                f"{row['p50_ms']:7.2f} {row['p99_ms']:7.2f} "
                f"{row['errors']:6d}",
                file=out,
            )
    print("\naiohttp / httpx (median of per-round ratios, [min-max]):", file=out)
    for mode in options.modes:
        parts = []
        for name, label in (
            ("req_per_s", "req/s"),
            ("client_cpu_s_per_1k_req", "CPU/req"),
            ("p50_ms", "p50"),
            ("p99_ms", "p99"),
        ):
            ratio = ratios[mode].get(name)
            if ratio:
                parts.append(
                    f"{label} {ratio['median']:.2f} [{ratio['min']:.2f}-{ratio['max']:.2f}]"
                )
        print(f"  {mode:6} " + "  ".join(parts), file=out)
        cpu_ratio = ratios[mode].get("client_cpu_s_per_1k_req")
        if cpu_ratio and cpu_ratio["median"]:
            print(
                f"         httpx spends {1 / cpu_ratio['median']:.1f}x the client CPU per request",
                file=out,
            )
    own = summary["ratios_headwater_over_aiohttp"]
    for mode in options.modes:
        cpu_ratio = own[mode].get("client_cpu_s_per_1k_req")
        if cpu_ratio and cpu_ratio["median"]:
            print(
                f"  {mode:6} headwater's client spends {cpu_ratio['median']:.2f}x aiohttp's CPU "
                f"per request [{cpu_ratio['min']:.2f}-{cpu_ratio['max']:.2f}]",
                file=out,
            )
    if not options.patch_httpcore and not sniffio_installed():
        print(
            "\nnote: sniffio is not installed, so httpcore attempts 'import sniffio' on every "
            "lock/event setup (encode/httpcore#1103); --patch-httpcore shows httpx without it.",
            file=out,
        )
    if busy_machine:
        print(
            f"\nnote: the rest of the machine used > {OTHER_BUSY_PCT:.0f}% of a core in some runs "
            "('other'): req/s and latency are suspect; CPU per request holds up better.",
            file=out,
        )
    if busy_receiver:
        print(
            f"\nnote: the receiver used > {RECEIVER_BUSY_PCT:.0f}% of a core in some runs, so it "
            "may have capped req/s there; CPU per request still compares the clients.",
            file=out,
        )


# --- command line ------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    concurrency: int
    duration_s: float
    warmup_s: float
    rounds: int
    modes: tuple[str, ...]
    json: bool
    pin: bool
    library_defaults: bool
    patch_httpcore: bool


def parse_args(argv: Sequence[str] | None) -> Options | int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", "-c", type=int, default=16, help="tasks (default 16)")
    parser.add_argument("--duration", type=float, default=5.0, help="s per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="s before each run (1)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat, alternating clients")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    parser.add_argument(
        "--json", action="store_true", help="print JSON results to stdout (the table to stderr)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the benchmark to CPU 0 and the receiver to CPU 1 (needs 2 CPUs)",
    )
    parser.add_argument(
        "--library-defaults",
        action="store_true",
        help="build both clients with no options (pool sizes, timeouts, keep-alive as shipped)",
    )
    parser.add_argument(
        "--patch-httpcore",
        action="store_true",
        help="skip httpcore's failed 'import sniffio' per lock (as with sniffio installed)",
    )
    parser.add_argument("--receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver is not None:
        return int(args.receiver)
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--concurrency and --rounds must be >= 1, --duration > 0, --warmup >= 0")
    return Options(
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        rounds=args.rounds,
        modes=MODES if args.mode == "both" else (args.mode,),
        json=args.json,
        pin=args.pin,
        library_defaults=args.library_defaults,
        patch_httpcore=args.patch_httpcore,
    )


def environment() -> dict[str, object]:
    from aiohttp import http_parser

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "httpx": httpx.__version__,
        "aiohttp": aiohttp.__version__,
        # aiohttp's C (llhttp) parser, unless AIOHTTP_NO_EXTENSIONS or a pure-Python wheel
        "aiohttp_c_parser": http_parser.HttpResponseParser.__module__.endswith("_http_parser"),
        "httpcore": importlib.metadata.version("httpcore"),
        "anyio": importlib.metadata.version("anyio"),
        "sniffio_installed": sniffio_installed(),
        "uvloop": importlib.metadata.version("uvloop"),
        "single_body_bytes": len(request_body("single")),
        "batch_body_bytes": len(request_body("batch")),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse_args(argv)
    if isinstance(parsed, int):
        serve_receiver(parsed)
        return 0
    options = parsed
    # SIGTERM unwinds like Ctrl-C, so the receiver is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if options.patch_httpcore:
        patch_httpcore()
    pin = options.pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {0})
    env = environment()
    print(
        f"httpx {env['httpx']}, aiohttp {env['aiohttp']} (C parser: {env['aiohttp_c_parser']}), "
        f"httpcore {env['httpcore']}, anyio {env['anyio']}, sniffio installed: "
        f"{env['sniffio_installed']}, bodies {env['single_body_bytes']} B single, "
        f"{env['batch_body_bytes']} B batch",
        file=sys.stderr,
    )
    try:
        with (
            tempfile.TemporaryDirectory(prefix="http-clients-bench-") as log_dir,
            running_receiver(Path(log_dir), cpu=1 if pin else None) as receiver,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            results = runner.run(run_all(options, receiver))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(results, options.modes)
    if options.json:
        document = {
            "settings": asdict(options) | {"batch_size": BATCH_SIZE},
            "environment": env,
            "runs": [asdict(r) for r in results],
            **summary,
        }
        print_table(summary, options, sys.stderr)  # stdout stays pure JSON
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(summary, options, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
