"""Delivery benchmark: Headwater end to end to a fast local webhook, against ingest alone.

One run measures the delivery targets of the Connections issue, each against a floor
measured in the same run on the same machine. The load is bench/ingest.py's batch load
(``POST /v1/batch``, 100 events of ~540 bytes a request, a messageId each; wrk, or
``bench/loadgen.py``), and the destination is ``bench/receiver.py``, a bare ASGI app on
Headwater's server stack that answers at once and counts events and their latency.

1. **Ingest only** (the floor of 2 and 3): Headwater without destinations under wrk's
   closed loop (``ingest.measure``, as bench/ingest.py measures it): events/s.
2. **Batching webhook** (``batch_max_events`` 500): sustained delivered events/s, counted
   at the receiver while delivery is the bottleneck (see "sustained" below).
3. **One request per event** (``batch_max_events`` 1): the same.
4. **Latency** at a fixed 1,000 events/s (open loop, ``loadgen.py --rate``), for both
   webhooks: receive time minus the time the load generator was due to send the event's
   request (carried in ``properties.bench_sent_us``), p50 and p99; also from the event's
   ``receivedAt``. Floor: the time Headwater without destinations takes to acknowledge
   the same load (from the same due times): an event cannot leave before it is durable.
5. **Dead destination**: a webhook to a port where nothing listens; 1,000,000 events are
   pushed in (wrk); the RSS of Headwater (and its writer process) is sampled while the
   backlog builds and for ``--settle`` seconds after. Floor: the same push into Headwater
   without destinations. Afterwards the delivery store is read: nothing delivered, and
   the backlog (the log after the destination's cursor, plus events waiting for a retry)
   holds every accepted event.

**Sustained.** Under wrk's closed loop, ingestion takes what CPU it can and delivery gets
the rest; with no load at all, delivery has both cores. Neither is a rate the process can
keep up end to end. So: a closed-loop burst (``--warmup`` plus a paced window's length)
builds a backlog and gives the rates "under full ingest"; one second of drain with no load
gives "delivery alone", where the pacing starts. Then the load goes open loop, window
after window, each offering the rate halfway between the previous window's offered and
delivered rates (backlogged delivery slows as ingestion takes CPU, so the rate where the
two meet lies between them). Before each window a 1 s closed-loop burst tops the backlog
up if it might run dry. The last window, of ``--duration`` seconds, is the figure: events
counted at the receiver while ingestion is throttled to about what delivery sustains. Its
backlog must stay above one second of delivery throughout (else the row says it ran dry
and the figure is a lower bound), and a window whose delivered rate is more than 10% off
its offered rate is flagged. The drain rate after the load stops is printed too.

The exit status is 0 whatever the targets say, 1 when something could not run. Every
server runs on 127.0.0.1 in its own session and is stopped when its step ends.

Run:   .venv/bin/python bench/delivery.py [--rounds 3] [--json bench/results/delivery.json]
Smoke: .venv/bin/python bench/delivery.py --quick
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

import ingest
from delivery_profile import Profiler
from delivery_report import (
    DEAD_EVENTS,
    LATENCY_EVENTS_PER_S,
    Hook,
    Latency,
    Memory,
    Round,
    Throughput,
    figures_of,
    format_report,
    median_figures,
    write_json,
)
from fsync_probe import measure_fsync
from harness import (
    BENCH_DIR,
    HOST,
    BenchError,
    LoadResult,
    LoadSpec,
    Server,
    basic_auth,
    cpu_seconds,
    free_port,
    get_json,
    log_tail,
    machine_busy_seconds,
    peak_rss_mb,
    post,
    preflight,
    rss_mb,
    run_load,
    running_server,
    thread_cpu_seconds,
    wrk_path,
)
from report import Machine

T = TypeVar("T")
BATCH = ingest.SCENARIOS[1]  # POST /v1/batch, 100 events a request
EVENTS_PER_REQUEST = BATCH.events_per_request

SAMPLE_EVERY_S = 0.25
WINDOW_SKIP_S = 0.5  # a window is counted from this long after its load generator starts
PRE_DRAIN_S = 1.0  # the drain measured after the first burst: where the paced windows start
DRAIN_S = 3.0  # the longest the drain rate is measured at the end
MIN_RATE = 100.0  # events/s: the lowest open-loop rate a paced window offers
MAX_TOP_UPS = 5  # 1 s closed-loop bursts before a paced window, to refill the backlog
QUIESCE_S = 15.0  # the longest to wait for a backlog to reach the receiver
STORE = Path("delivery") / "delivery.sqlite"  # in the data dir (headwater.delivery.store)


@dataclass(frozen=True)
class Options:
    duration_s: int
    warmup_s: int
    settle_windows: int  # paced windows before the measured one
    settle_window_s: int
    connections: int
    threads: int
    rounds: int
    quick: bool
    batching: Hook
    per_event: Hook
    latency_events_per_s: int
    dead_events: int
    settle_s: int
    figures: tuple[str, ...]
    headwater: Path
    python: str
    use_wrk: bool
    data_root: Path | None
    startup_timeout_s: float
    json_path: Path | None
    profile_dir: Path | None
    at: str | None  # a commit whose src/ is measured instead of the working tree

    def settings(self) -> dict[str, object]:
        keys = ["duration_s", "warmup_s", "settle_windows", "settle_window_s", "connections"]
        keys += ["threads", "rounds", "quick", "latency_events_per_s", "dead_events", "settle_s"]
        return {k: getattr(self, k) for k in keys} | {
            "batching": asdict(self.batching),
            "per_event": asdict(self.per_event),
            "events_per_request": EVENTS_PER_REQUEST,
            "profiled": self.profile_dir is not None,
            "source": self.source(),
        }

    def source(self) -> dict[str, object]:
        """The commit measured, and the files of src/ changed since (read-only git)."""
        if self.at is not None:
            return {"commit": git("rev-parse", "--short", self.at) or "?", "changed_src": []}
        changed = git("status", "--porcelain", "--", "src").splitlines()
        return {"commit": git("rev-parse", "--short", "HEAD") or "?", "changed_src": changed}

    def ingest_options(self) -> ingest.Options:
        """bench/ingest.py's options for the same load, so its ``measure`` serves the floors."""
        args = ["--duration", str(self.duration_s), "--warmup", str(self.warmup_s)]
        args += ["--connections", str(self.connections), "--threads", str(self.threads)]
        args += ["--headwater", str(self.headwater), "--python", self.python]
        args += ["--loadgen", "wrk" if self.use_wrk else "python"]
        args += ["--startup-timeout", str(self.startup_timeout_s)]
        return ingest.parse_options(args)


# --- processes ----------------------------------------------------------------------


def git(*args: str) -> str:
    """A read-only git command in the repository; its output, or "" if it failed."""
    command = ["git", "-C", str(ingest.REPO_DIR), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def export_source(options: Options, directory: Path) -> Path:
    """``src/`` of ``options.at`` in ``directory`` (``git archive``), and a ``headwater``
    command that runs it on the venv's interpreter, so edits others make to the working
    tree while the benchmark runs are not measured."""
    directory.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ingest.REPO_DIR), "archive", "--format=tar", str(options.at), "src"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {options.at} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    command = directory / "headwater"
    command.write_text(
        f'#!/bin/sh\nPYTHONPATH="{directory / "src"}" exec "{options.python}"'
        ' -m headwater.cli "$@"\n'
    )
    command.chmod(0o755)
    return command


def workspace_yaml(destination: Hook | None, url: str) -> str:
    if destination is None:
        return ingest.WORKSPACE_YAML
    return ingest.WORKSPACE_YAML + (
        "destinations:\n"
        "  - name: bench-hook\n"
        "    type: webhook\n"
        "    sources: [bench]\n"
        f"    settings: {{url: '{url}'}}\n"
        "    delivery:\n"
        f"      batch_max_events: {destination.batch_events}\n"
        f"      concurrency: {destination.concurrency}\n"
    )


@contextmanager
def headwater(
    run_dir: Path, options: Options, destination: Hook | None, url: str = ""
) -> Iterator[Server]:
    """``headwater serve`` on a fresh data dir, with one webhook to ``url`` (or none)."""
    config, data_dir, port = run_dir / "workspace.yaml", run_dir / "data", free_port()
    config.write_text(workspace_yaml(destination, url))
    serve = ["serve", "--config", str(config), "--data-dir", str(data_dir)]
    serve += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
    log = run_dir / "headwater.log"
    with running_server(
        [str(options.headwater), *serve], port, log, options.startup_timeout_s
    ) as s:
        yield s


@contextmanager
def receiver(run_dir: Path, options: Options) -> Iterator[Server]:
    port = free_port()
    command = [options.python, str(BENCH_DIR / "receiver.py"), "--host", HOST, "--port", str(port)]
    with running_server(command, port, run_dir / "receiver.log", options.startup_timeout_s) as s:
        yield s


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    accepted: int  # the log's last offset: events Headwater has stored
    delivered: int  # events the receiver has counted
    requests: int  # requests the receiver has answered
    rss_mb: float  # Headwater and its writer process, now
    headwater_cpu_s: float
    loop_cpu_s: float  # Headwater's main thread: its event loop
    receiver_cpu_s: float
    busy_s: float  # the whole machine

    @property
    def backlog(self) -> int:
        return self.accepted - self.delivered


class Sampler:
    """Reads Headwater, the receiver and /proc every SAMPLE_EVERY_S on a thread of its own."""

    def __init__(self, server: Server, sink: Server | None) -> None:
        self.server, self.sink = server, sink
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.samples.append(self._take())
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            with suppress(BenchError):  # a server died: the step's next latest() says which
                self.samples.append(self._take())

    def _take(self) -> Sample:
        # The receiver first: an event it counted is in the log by the time the log is read,
        # so the backlog (accepted - delivered) is never below its true value.
        delivered, requests, sink_cpu = 0, 0, 0.0
        if self.sink is not None:
            stats = get_json(self.sink.base_url + "/stats")
            delivered, requests = stats["events"], stats["requests"]
            sink_cpu = cpu_seconds(self.sink.pid)
        ready = get_json(self.server.base_url + "/readyz")
        return Sample(
            at=time.monotonic(),
            accepted=int(ready["log"]["last_offset"] or 0),
            delivered=int(delivered),
            requests=int(requests),
            rss_mb=rss_mb(self.server.pid),
            headwater_cpu_s=cpu_seconds(self.server.pid),
            loop_cpu_s=thread_cpu_seconds(self.server.pid),
            receiver_cpu_s=sink_cpu,
            busy_s=machine_busy_seconds(),
        )

    def latest(self) -> Sample:
        """A sample taken now (and kept)."""
        try:
            sample = self._take()
        except BenchError:  # say which process is gone, with its exit status and log
            for name, process in (("Headwater", self.server), ("the receiver", self.sink)):
                try:
                    if process is not None:
                        process.check_alive()
                except BenchError as exc:
                    raise BenchError(f"{name}: {exc}") from None
            raise
        self.samples.append(sample)
        return sample

    def between(self, start: float, end: float) -> list[Sample]:
        """The samples from the last one at or before ``start`` to the first at or after ``end``."""
        ordered = sorted(self.samples, key=lambda s: s.at)
        first = max((i for i, s in enumerate(ordered) if s.at <= start), default=0)
        last = min((i for i, s in enumerate(ordered) if s.at >= end), default=len(ordered) - 1)
        return ordered[first : last + 1]


def per_s(first: Sample, last: Sample, counter: str) -> float:
    elapsed = last.at - first.at
    return (getattr(last, counter) - getattr(first, counter)) / elapsed if elapsed > 0 else 0.0


def settled_count(sink: Server, quiet_s: float = 0.3) -> int:
    """The receiver's event count once it has counted something and then nothing more for
    ``quiet_s`` (at most QUIESCE_S)."""
    deadline = time.monotonic() + QUIESCE_S
    count, since = 0, time.monotonic()
    while time.monotonic() < deadline:
        now = get_json(sink.base_url + "/stats")["events"]
        if now != count:
            count, since = now, time.monotonic()
        elif count and time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.05)
    return int(count)


def wait_for_delivery(sink: Server, events: int, timeout_s: float) -> bool:
    """Wait until the receiver has counted ``events`` events; False on timeout.

    Counted from what the load generator had accepted, not from the log's last offset: the
    log also holds Headwater's own events (its canary, every 30 s), which go elsewhere.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if get_json(sink.base_url + "/stats")["events"] >= events:
            return True
        time.sleep(0.1)
    return False


# --- the steps ----------------------------------------------------------------------


@dataclass
class Bodies:
    batch: LoadSpec  # ingest.py's batch body
    stamped: LoadSpec  # the same with properties.bench_sent_us, for the latency runs


def write_bodies(workdir: Path, options: Options) -> Bodies:
    batch_file = ingest.write_bodies(workdir, message_ids=True)["batch"]
    events = []
    for _ in range(EVENTS_PER_REQUEST):
        event = ingest.track_event(ingest.MESSAGE_ID_PLACEHOLDER, with_type=True)
        properties = cast(dict[str, object], event["properties"])
        event["properties"] = {**properties, "bench_sent_us": "__SENT_US__"}  # loadgen fills it
        events.append(event)
    stamped_file = workdir / "batch-stamped.json"
    stamped_file.write_bytes(orjson.dumps({"batch": events, "sentAt": ingest.TIMESTAMP}))
    spec = LoadSpec(
        path=BATCH.path,
        body_file=batch_file,
        auth_header=basic_auth(ingest.WRITE_KEY),
        message_ids=True,
        connections=options.connections,
        threads=options.threads,
    )
    return Bodies(batch=spec, stamped=replace(spec, body_file=stamped_file))


def load(
    server: Server, spec: LoadSpec, seconds: float, options: Options, rate: float | None = None
) -> LoadResult:
    """wrk's closed loop for ``seconds`` (whole seconds), or open loop at ``rate`` events/s."""
    requests_per_s = None if rate is None else max(rate, 1.0) / EVENTS_PER_REQUEST
    duration = max(1, round(seconds))
    return run_load(server, spec, duration, options.python, options.use_wrk, requests_per_s)


def measure_throughput(hook: Hook, spec: LoadSpec, options: Options, workdir: Path) -> Throughput:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{hook.label}-", dir=workdir))
    with (
        receiver(run_dir, options) as sink,
        headwater(run_dir, options, hook, sink.base_url + "/hook") as server,
        Sampler(server, sink) as sampler,
    ):
        preflight(server, spec)
        # A closed-loop burst: the rates under full ingest, and a backlog to start from.
        started = time.monotonic()
        burst = load(server, spec, options.warmup_s + max(2, options.settle_window_s), options)
        ended = sampler.latest().at
        loaded = sampler.between(started + options.warmup_s, ended)
        loaded_rate = per_s(loaded[0], loaded[-1], "delivered")
        loaded_accepted = per_s(loaded[0], loaded[-1], "accepted")
        # Delivery alone, briefly: the most it could sustain, where the paced windows start.
        delivered = drain_rate(sampler, PRE_DRAIN_S)
        rate, windows = max(delivered, loaded_rate, MIN_RATE), []
        window: dict[str, Any] = {}
        for index in range(options.settle_windows + 1):
            last = index == options.settle_windows
            seconds = options.duration_s if last else options.settle_window_s
            # Enough backlog that the window cannot run dry, even if delivery outruns ingest.
            wanted = max(2 * rate, (delivered - rate) * seconds * 1.5)
            for _ in range(MAX_TOP_UPS):
                if sampler.latest().backlog >= wanted:
                    break
                load(server, spec, 1, options)
            profile = Profiler.maybe(options.profile_dir, hook.label, server.pid, seconds)
            with profile if last else nullcontext():
                window = paced_window(server, spec, options, sampler, rate, seconds)
            delivered = window["delivered"]
            windows.append((rate, delivered))
            rate = next_rate(windows)
        drain = drain_rate(sampler, DRAIN_S)
        server.check_alive()
        sink.check_alive()
    return Throughput(
        hook=hook,
        sustained_events_per_s=window["delivered"],
        offered_events_per_s=windows[-1][0],
        accepted_events_per_s=window["accepted"],
        min_backlog=window["min_backlog"],
        trace=window["trace"],
        backlog_kept=window["min_backlog"] >= window["delivered"] * 1.0,
        loaded_events_per_s=loaded_rate,
        loaded_accepted_events_per_s=loaded_accepted,
        drain_events_per_s=drain,
        events_per_request=window["events_per_request"],
        headwater_cpu_pct=window["headwater_cpu_pct"],
        loop_cpu_pct=window["loop_cpu_pct"],
        receiver_cpu_pct=window["receiver_cpu_pct"],
        loadgen_cpu_pct=window["loadgen_cpu_pct"],
        other_cpu_pct=window["other_cpu_pct"],
        windows=windows,
        load_errors=burst.error_count + window["errors"],
    )


def next_rate(windows: Sequence[tuple[float, float]]) -> float:
    """The next window's offered rate: halfway from the last one's offered to its delivered.

    Backlogged delivery slows as ingestion takes more of the CPU (delivered ≈ a - b ×
    offered, b about 0.5 to 1 here), so the rate where the two meet lies between a window's
    offered and delivered rates, and the halfway step nears it fast while halving the
    noise of one window (a step to the delivered rate overshoots and oscillates).
    """
    offered, delivered = windows[-1]
    return max((offered + delivered) / 2, MIN_RATE)


def paced_window(
    server: Server, spec: LoadSpec, options: Options, sampler: Sampler, rate: float, seconds: int
) -> dict[str, Any]:
    """Open-loop load at ``rate`` events/s; what the receiver got meanwhile."""
    started = time.monotonic()
    result = load(server, spec, seconds, options, rate)
    ended = sampler.latest().at
    samples = sampler.between(started + WINDOW_SKIP_S, ended)
    first, last = samples[0], samples[-1]
    elapsed = last.at - first.at
    headwater_cpu = (last.headwater_cpu_s - first.headwater_cpu_s) / elapsed * 100
    loop_cpu = (last.loop_cpu_s - first.loop_cpu_s) / elapsed * 100
    receiver_cpu = (last.receiver_cpu_s - first.receiver_cpu_s) / elapsed * 100
    loadgen_cpu = result.open_loop.loadgen_cpu_pct if result.open_loop else 0.0
    busy = (last.busy_s - first.busy_s) / elapsed * 100
    delivered = last.delivered - first.delivered
    requests = last.requests - first.requests
    return {
        "delivered": delivered / elapsed,
        "accepted": per_s(first, last, "accepted"),
        "min_backlog": min(s.backlog for s in samples),
        "events_per_request": delivered / requests if requests else 0.0,
        "headwater_cpu_pct": headwater_cpu,
        "loop_cpu_pct": loop_cpu,
        "receiver_cpu_pct": receiver_cpu,
        "loadgen_cpu_pct": loadgen_cpu,
        "other_cpu_pct": max(0.0, busy - headwater_cpu - receiver_cpu - loadgen_cpu),
        "errors": result.error_count,
        "trace": [
            (round(x.at - first.at, 2), x.accepted, x.delivered)
            for x in sampler.between(started - 1.0, ended)
        ],
    }


def drain_rate(sampler: Sampler, seconds: float) -> float:
    """Delivered events/s with no load, while the backlog lasts (at most ``seconds``)."""
    first = sampler.latest()
    deadline = first.at + seconds
    last = first
    while time.monotonic() < deadline:
        time.sleep(SAMPLE_EVERY_S)
        last = sampler.latest()
        if last.backlog <= 0:
            break
    return per_s(first, last, "delivered")


def measure_latency(hook: Hook, spec: LoadSpec, options: Options, workdir: Path) -> Latency:
    run_dir = Path(tempfile.mkdtemp(prefix=f"latency-{hook.label}-", dir=workdir))
    rate = options.latency_events_per_s
    with (
        receiver(run_dir, options) as sink,
        headwater(run_dir, options, hook, sink.base_url + "/hook") as server,
    ):
        preflight(server, spec)
        expected = settled_count(sink)  # the preflight's (its events share one messageId)
        if options.warmup_s > 0:
            warmup = load(server, spec, options.warmup_s, options, rate)
            expected += warmup.ok_requests * EVENTS_PER_REQUEST
        if not wait_for_delivery(sink, expected, QUIESCE_S):
            raise BenchError(
                f"{hook.label}: the warm-up's events were not all delivered"
                f" within {QUIESCE_S:g} s\n{log_tail(server)}"
            )
        post(sink.base_url + "/reset")
        result = load(server, spec, options.duration_s, options, rate)
        wait_for_delivery(sink, expected + result.ok_requests * EVENTS_PER_REQUEST, QUIESCE_S)
        stats = get_json(sink.base_url + "/stats")["latency"]
        server.check_alive()
    sent, received = stats["sent"], stats["received"]
    return Latency(
        hook=hook,
        sent_p50_ms=sent["p50_ms"],
        sent_p99_ms=sent["p99_ms"],
        received_p50_ms=received["p50_ms"],
        received_p99_ms=received["p99_ms"],
        sent_max_ms=sent["max_ms"],
        events=int(sent["count"]),
        expected_events=result.ok_requests * EVENTS_PER_REQUEST,
        ack_p50_ms=result.p50_ms,
        ack_p99_ms=result.p99_ms,
        achieved_events_per_s=result.ok_requests_per_s * EVENTS_PER_REQUEST,
    )


def measure_memory(
    dead: bool, spec: LoadSpec, options: Options, workdir: Path, rate_hint: float
) -> Memory:
    """Push ``options.dead_events`` events into Headwater (a dead webhook, or none)."""
    label = "dead-destination" if dead else "no-destination"
    run_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=workdir))
    hook = replace(options.batching, label="dead") if dead else None
    url = f"http://{HOST}:{free_port()}/hook"  # nothing listens there
    marker = f"bench-marker-{time.time_ns()}"
    with headwater(run_dir, options, hook, url) as server, Sampler(server, None) as sampler:
        preflight(server, spec)
        send_marker(server, marker)
        started = time.monotonic()
        rate, refused = max(rate_hint, 1000.0), 0
        while (accepted := sampler.latest().accepted) < options.dead_events:
            left = options.dead_events - accepted
            chunk = load(server, spec, min(10.0, max(1.0, left / rate + 0.5)), options)
            rate = max(chunk.ok_requests_per_s * EVENTS_PER_REQUEST, 1000.0)
            refused = 0 if chunk.ok_requests else refused + 1
            if refused >= 3:
                raise BenchError(f"{label}: Headwater accepts no more events\n{log_tail(server)}")
        pushed = sampler.latest()
        first = sampler.samples[0]
        push_rate = (pushed.accepted - first.accepted) / (pushed.at - started)
        elapsed = pushed.at - first.at
        push_cpu = (pushed.headwater_cpu_s - first.headwater_cpu_s) / elapsed * 100
        marker_state = event_state(server, marker) if dead else None
        time.sleep(options.settle_s)
        settled = sampler.latest()
        peak = peak_rss_mb(server.pid)
        server.check_alive()
    trajectory = [rss_at(sampler, started + f * (pushed.at - started)) for f in (0.25, 0.5, 0.75)]
    trajectory += [pushed.rss_mb, settled.rss_mb]
    memory = Memory(
        label=label,
        peak_rss_mb=peak,
        sampled_max_mb=max(s.rss_mb for s in sampler.samples),
        trajectory_mb=trajectory,
        accepted=settled.accepted,
        push_events_per_s=push_rate,
        push_headwater_cpu_pct=push_cpu,
        marker_state=marker_state,
    )
    return read_backlog(memory, run_dir / "data" / STORE, "bench-hook") if dead else memory


def rss_at(sampler: Sampler, at: float) -> float:
    return sampler.between(at, at)[-1].rss_mb


def send_marker(server: Server, message_id: str) -> None:
    event = ingest.track_event(message_id, with_type=False)
    headers = {"Content-Type": "application/json", "Authorization": basic_auth(ingest.WRITE_KEY)}
    post(server.base_url + "/v1/track", orjson.dumps(event), headers)


def event_state(server: Server, message_id: str) -> str | None:
    """The marker's state with the destination, if this Headwater has the events API."""
    with suppress(Exception):
        answer = get_json(f"{server.base_url}/api/v1/events/{message_id}")
        states = [d["state"] for d in answer.get("destinations", [])]
        return ", ".join(states) if states else None
    return None


def read_backlog(memory: Memory, store: Path, destination: str) -> Memory:
    """What the delivery store says about the dead destination (after the server stopped)."""
    if not store.exists():
        raise BenchError(f"no delivery store at {store}; has its place in the data dir changed?")
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        cursor = conn.execute("SELECT offset FROM cursors WHERE destination=?", (destination,))
        row = cursor.fetchone()
        offset = int(row[0]) if row else 0
        retry = conn.execute(
            "SELECT coalesce(sum(count), 0) FROM retries WHERE destination=?", (destination,)
        ).fetchone()[0]
        delivered = conn.execute(
            "SELECT coalesce(sum(count), 0) FROM ledger WHERE destination=? AND state='delivered'",
            (destination,),
        ).fetchone()[0]
    backlog = memory.accepted - offset + int(retry)
    return replace(
        memory,
        cursor=offset,
        retry_events=int(retry),
        delivered_ledger=int(delivered),
        backlog=backlog,
        received=0,
    )


def run_round(options: Options, bodies: Bodies, workdir: Path, number: int) -> Round:
    result = Round()
    wanted = set(options.figures)
    step = f"round {number}/{options.rounds}"
    ingest_opts = options.ingest_options()
    if wanted & {"batching", "per-event", "dead", "ingest"}:
        progress(f"{step}: ingest only (no destinations), closed loop …")
        result.ingest_only = once_more(
            result,
            "ingest only",
            lambda: ingest.measure("headwater", "headwater", BATCH, bodies.batch, ingest_opts),
        )
    if "latency" in wanted:
        progress(f"{step}: ingest only at {options.latency_events_per_s:,} events/s …")
        rate = options.latency_events_per_s / EVENTS_PER_REQUEST
        result.ingest_ack = once_more(
            result,
            "ingest ack",
            lambda: ingest.measure(
                "headwater", "headwater", BATCH, bodies.stamped, ingest_opts, rate
            ),
        )
    for name, hook in (("batching", options.batching), ("per-event", options.per_event)):
        if name in wanted:
            progress(f"{step}: {name} webhook, throughput …")
            result.throughput[name] = once_more(
                result, name, partial(measure_throughput, hook, bodies.batch, options, workdir)
            )
    if "latency" in wanted:
        for hook in (options.batching, options.per_event):
            progress(
                f"{step}: {hook.label} webhook, latency at {options.latency_events_per_s:,}"
                " events/s …"
            )
            result.latency[hook.label] = once_more(
                result,
                f"latency {hook.label}",
                partial(measure_latency, hook, bodies.stamped, options, workdir),
            )
    if "dead" in wanted:
        hint = result.ingest_only.events_per_s if result.ingest_only else 30_000.0
        for dead in (False, True):
            what = "a dead webhook" if dead else "no destination"
            progress(f"{step}: {options.dead_events:,} events into Headwater with {what} …")
            memory = once_more(
                result,
                "dead" if dead else "no destination",
                partial(measure_memory, dead, bodies.batch, options, workdir, hint),
            )
            result.memory[memory.label] = memory
    return result


def once_more(round_: Round, what: str, step: Callable[[], T]) -> T:
    """Run a step; when it fails (a server died, the machine hiccuped), run it once more on
    fresh servers, and keep the reason: the report lists such steps."""
    try:
        return step()
    except BenchError as exc:
        reason = f"{what}: {exc}".splitlines()[0]
        progress(f"failed, so run once more: {reason}")
        round_.retried.append(reason)
        return step()


# --- command line -------------------------------------------------------------------

FIGURES = ("ingest", "batching", "per-event", "latency", "dead")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--duration", type=int, help="measured seconds of each figure (default 10; quick 3)")
    add("--warmup", type=int, help="unmeasured seconds before (default 2; quick 1)")
    add("--connections", type=int, default=32, help="load connections (default 32)")
    add("--threads", type=int, default=1, help="wrk threads (default 1)")
    add(
        "--rounds", type=int, default=1, help="run everything N times; each figure's median is kept"
    )
    add("--quick", action="store_true", help="a smoke run: short windows, 100,000 dead events")
    add("--batch-events", type=int, default=500, help="the batching webhook's batch_max_events")
    add("--batch-concurrency", type=int, default=16, help="its concurrency (default 16)")
    add("--single-concurrency", type=int, default=64, help="the per-event webhook's (default 64)")
    add("--latency-events-per-s", type=int, default=LATENCY_EVENTS_PER_S, metavar="N")
    add(
        "--dead-events",
        type=int,
        help=f"events pushed to the dead webhook (default {DEAD_EVENTS:,})",
    )
    add("--settle", type=int, help="seconds RSS is watched after the push (default 10; quick 2)")
    add("--figure", action="append", choices=FIGURES, help="repeatable; default all")
    add("--headwater", type=Path, default=ingest.REPO_DIR / ".venv" / "bin" / "headwater")
    add("--python", help="interpreter for the receiver and loadgen (default: beside --headwater)")
    add("--loadgen", choices=["auto", "wrk", "python"], default="auto", help="closed-loop load")
    add("--data-root", type=Path, help="parent of the fresh data dirs (default: system temp)")
    add("--startup-timeout", type=float, default=30.0)
    add("--json", type=Path, help="also write the results to this JSON file")
    add("--at", metavar="COMMIT", help="measure this commit's src/ (git archive), not the tree")
    add(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the measured throughput windows into DIR",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.loadgen == "wrk" and wrk_path() is None:
        parser.error("wrk is not installed (apt-get install -y wrk); or use --loadgen python")
    batching = Hook("batching", args.batch_events, args.batch_concurrency)
    return Options(
        duration_s=args.duration or (3 if quick else 10),
        warmup_s=args.warmup if args.warmup is not None else (1 if quick else 2),
        settle_windows=2 if quick else 3,
        settle_window_s=2 if quick else 4,
        connections=args.connections,
        threads=args.threads,
        rounds=args.rounds,
        quick=quick,
        batching=batching,
        per_event=Hook("per-event", 1, args.single_concurrency),
        latency_events_per_s=args.latency_events_per_s,
        dead_events=args.dead_events or (100_000 if quick else DEAD_EVENTS),
        settle_s=args.settle if args.settle is not None else (2 if quick else 10),
        figures=tuple(args.figure or FIGURES),
        headwater=args.headwater,
        python=args.python or ingest.default_python(args.headwater),
        use_wrk=args.loadgen == "wrk" or (args.loadgen == "auto" and wrk_path() is not None),
        data_root=args.data_root,
        startup_timeout_s=args.startup_timeout,
        json_path=args.json,
        profile_dir=args.profile,
        at=args.at,
    )


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every ``with`` stops its servers."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    rounds: list[Round] = []
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    try:
        ingest.check_prerequisites(options.ingest_options())
        with tempfile.TemporaryDirectory(
            prefix="headwater-delivery-", dir=options.data_root
        ) as tmp:
            workdir = Path(tmp)
            if options.at is not None:  # pinned now: a commit made during the run is not it
                options = replace(options, at=git("rev-parse", options.at) or options.at)
                options = replace(options, headwater=export_source(options, workdir / "source"))
            machine = Machine.describe(measure_fsync(workdir), ingest.loadgen_name(options.use_wrk))
            bodies = write_bodies(workdir, options)
            for number in range(1, options.rounds + 1):
                rounds.append(run_round(options, bodies, workdir, number))
    except BenchError as exc:
        print(f"bench/delivery.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/delivery.py: interrupted; servers stopped", file=sys.stderr)
        return 130
    settings = options.settings()
    figures = median_figures([figures_of(r, settings) for r in rounds])
    retried = [reason for r in rounds for reason in r.retried]
    print(format_report(settings, machine, figures, retried))
    if options.json_path:
        write_json(options.json_path, settings, machine, figures, rounds)
        print(f"\nwrote {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
