"""Process plumbing for bench/ingest.py and bench/delivery.py: servers, load, /proc readings.

Every server is started directly (no shell) in its own session, on 127.0.0.1 and a
free port, with its output in a log file; it is stopped (SIGTERM, then SIGKILL to
its process group) when its ``with`` block ends, whatever happens inside.
"""

from __future__ import annotations

import base64
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "wrk_post.lua"
LOADGEN_SCRIPT = BENCH_DIR / "loadgen.py"
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# Talk to the local servers directly, whatever http_proxy says.
LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(RuntimeError):
    """Something the benchmark needs failed to run; the message says what and where to look."""


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"server exited with {self.process.returncode}\n{log_tail(self)}")


@dataclass(frozen=True)
class OpenLoopStats:
    """What a fixed-rate run (``loadgen.py --rate``) reports besides wrk's fields."""

    rate: float  # requests/s asked for
    scheduled: int  # requests due within the duration
    achieved_rate: float  # 2xx answers/s
    late: int  # requests sent > 1 ms behind schedule (no idle connection, or a lagging loop)
    late_max_ms: float
    loadgen_cpu_pct: float  # the generator's own CPU during the timed part, % of one core


@dataclass(frozen=True)
class LoadResult:
    requests: int
    ok_requests: int
    duration_s: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    loadgen_cpu_s: float
    p90_ms: float = 0.0
    max_ms: float = 0.0
    open_loop: OpenLoopStats | None = None  # only from loadgen.py --rate

    @property
    def ok_requests_per_s(self) -> float:
        return self.ok_requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class LoadSpec:
    """What to send: one body file (``__MSGID__`` filled per event when ``message_ids``)."""

    path: str
    body_file: Path
    auth_header: str
    message_ids: bool
    connections: int
    threads: int


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(
    command: Sequence[str], port: int, log_path: Path, startup_timeout_s: float
) -> Iterator[Server]:
    """Start ``command`` and yield once ``GET /healthz`` answers 200; always stop it after."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(process=process, port=port, log_path=log_path)
    try:
        _wait_healthy(process, server, startup_timeout_s)
        yield server
    finally:
        _stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(
                f"server exited with {process.returncode} before it was ready\n{log_tail(server)}"
            )
        try:
            with LOCAL_HTTP.open(server.base_url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise BenchError(
        f"server not healthy after {timeout_s:.0f} s (GET /healthz)\n{log_tail(server)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    # The server leads its own session, so its group holds only it and anything it spawned.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def log_tail(server: Server, lines: int = 20) -> str:
    text = server.log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last lines of {server.log_path} ---\n" + "\n".join(text)


def preflight(server: Server, spec: LoadSpec) -> None:
    """Send one request by hand so a wrong route, key or body fails loudly before the load."""
    body = spec.body_file.read_bytes().replace(b"__MSGID__", f"preflight-{time.time_ns()}".encode())
    request = urllib.request.Request(
        server.base_url + spec.path,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": spec.auth_header},
    )
    try:
        with LOCAL_HTTP.open(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise BenchError(
            f"POST {spec.path} answered {exc.code}: {detail}\n{log_tail(server)}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"POST {spec.path} failed: {exc}\n{log_tail(server)}") from exc


def get_json(url: str, timeout_s: float = 5.0) -> Any:
    """``GET url`` on a local server and its JSON answer, whatever the status."""
    try:
        with LOCAL_HTTP.open(url, timeout=timeout_s) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return orjson.loads(exc.read() or b"null")
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"GET {url} failed: {exc}") from exc


def post(url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """``POST body`` to a local server; its answer (an HTTPError for a non-2xx answer)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    with LOCAL_HTTP.open(request, timeout=10) as response:
        body_read: bytes = response.read()
        return body_read


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_load(
    server: Server,
    spec: LoadSpec,
    duration_s: int,
    python: str,
    use_wrk: bool,
    rate: float | None = None,
) -> LoadResult:
    """Load ``server`` for ``duration_s`` with wrk (or the Python fallback); parse its summary.

    With ``rate`` (requests/s) the load is open-loop instead: ``loadgen.py --rate``, as
    wrk has no fixed-rate mode (and wrk2 is not packaged in Debian).
    """
    url = server.base_url + spec.path
    env = dict(os.environ, BENCH_MESSAGE_IDS="1" if spec.message_ids else "0")
    if rate is not None:
        command = [*_loadgen_command(python, url, spec, duration_s), "--rate", f"{rate:g}"]
    elif use_wrk:
        command = _wrk_command(url, spec, duration_s)
    else:
        command = _loadgen_command(python, url, spec, duration_s)
    cpu_before = _children_cpu_s()
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=duration_s + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{command[0]} still running {exc.timeout:.0f} s after start") from exc
    cpu_s = _children_cpu_s() - cpu_before
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip()
        raise BenchError(f"{command[0]} exited with {completed.returncode}: {output}")
    return _parse_summary(completed.stdout, cpu_s)


def _wrk_command(url: str, spec: LoadSpec, duration_s: int) -> list[str]:
    threads, connections = f"-t{spec.threads}", f"-c{spec.connections}"
    options = [threads, connections, f"-d{duration_s}s", "--timeout", "10s"]
    # The id prefix differs per run, so warm-up and measured events never share a messageId.
    script_args = [str(spec.body_file), spec.auth_header, f"r{time.time_ns():x}"]
    return [wrk_path() or "wrk", *options, "-s", str(WRK_SCRIPT), url, "--", *script_args]


def _loadgen_command(python: str, url: str, spec: LoadSpec, duration_s: int) -> list[str]:
    command = [python, str(LOADGEN_SCRIPT), url, str(spec.body_file), spec.auth_header]
    command += ["--connections", str(spec.connections), "--duration", str(duration_s)]
    return command + (["--message-ids"] if spec.message_ids else [])


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _parse_summary(stdout: str, loadgen_cpu_s: float) -> LoadResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise BenchError(f"load generator printed no WRK_JSON summary:\n{stdout[-2000:]}")
    data = orjson.loads(line.removeprefix("WRK_JSON "))
    errors: dict[str, int] = data["errors"]
    latency_us = data["latency_us"]
    open_loop = None
    if fixed_rate := data.get("open_loop"):
        open_loop = OpenLoopStats(
            rate=fixed_rate["rate"],
            scheduled=fixed_rate["scheduled"],
            achieved_rate=fixed_rate["achieved_rate"],
            late=fixed_rate["late"],
            late_max_ms=fixed_rate["late_max_us"] / 1000,
            loadgen_cpu_pct=fixed_rate["cpu_pct"],
        )
    # wrk counts non-2xx/3xx answers as "status" errors but still in "requests".
    return LoadResult(
        requests=data["requests"],
        ok_requests=data["requests"] - errors["status"],
        duration_s=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=latency_us["p50"] / 1000,
        p99_ms=latency_us["p99"] / 1000,
        loadgen_cpu_s=loadgen_cpu_s,
        p90_ms=latency_us["p90"] / 1000,
        max_ms=latency_us["max"] / 1000,
        open_loop=open_loop,
    )


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def peak_rss_mb(pid: int) -> float:
    """Sum of VmHWM (peak resident set) over the server process and its descendants, in MiB."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float:
    """Sum of VmRSS (resident set now) over the server process and its descendants, in MiB."""
    return _status_mb(pid, "VmRSS:")


def _status_mb(pid: int, field: str) -> float:
    total_kib = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(field):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by the server process tree."""
    total_ticks = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total_ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return total_ticks / CLOCK_TICKS_PER_S


def thread_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of one thread (default: the main one, whose id is ``pid``)."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def machine_busy_seconds() -> float:
    """CPU time all cores have spent busy since boot, steal time included (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_S
