"""The fast local destination of bench/delivery.py: counts what Headwater delivers, and when.

A bare ASGI app on the floor's stack (``bench/floor.py``: uvicorn with httptools and uvloop,
one worker, access log off). For every ``POST`` (any path) it reads the whole body, notes
the time, answers ``200 {"ok":true}`` at once, and only then parses the body with orjson: a
JSON array is a batch of events, an object is one event. For each event it counts one and
records two end-to-end latencies in histograms:

- ``received``: arrival here minus the event's ``receivedAt``, Headwater's clock when the
  request that carried it reached the Tracking API (millisecond precision, truncated, so
  this reads up to 1 ms high);
- ``sent``: arrival here minus ``properties.bench_sent_us``, when the event has it: the
  time, in µs since the epoch, at which ``bench/loadgen.py`` was due to send its request
  (it fills the ``__SENT_US__`` placeholder), so it includes the time before Headwater
  read the request.

Both clocks are this machine's ``time.time()``.

An event whose messageId starts with ``engage-`` (an audience activation) also notes the
first time one arrived for its ``userId``: ``GET /arrivals`` answers them (bench/engage.py
measures from a trigger's send to its activation).

``GET /stats`` answers the counters (requests, events, bytes, bodies that were not JSON
events, when the first and last event arrived) and both latency histograms as percentiles;
``POST /reset`` empties the histograms (the counters only grow: the benchmark takes
differences). ``GET /healthz`` answers 200.

Run: ``python bench/receiver.py --port 9000``, then ``curl 127.0.0.1:9000/stats``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson

from floor import Receive, Scope, Send, lifespan, read_body, respond, serve

OK_BODY = b'{"ok":true}'
SENT_PROPERTY = "bench_sent_us"
SUB_BUCKETS = 32  # per power of two: about 3% resolution


class Histogram:
    """Latencies in µs, in buckets of about 3% (a small HdrHistogram)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_us = 0
        self.min_us = 0

    def add(self, value_us: int) -> None:
        if value_us < 0:  # clocks of one machine; below 0 only by the ms truncation
            self.min_us = min(self.min_us, value_us)
            value_us = 0
        index = _bucket(value_us)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        self.max_us = max(self.max_us, value_us)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"count": self.total, "max_ms": self.max_us / 1000}
        ordered = sorted(self.counts.items())
        for name, fraction in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)):
            out[f"{name}_ms"] = self._percentile(ordered, fraction) / 1000
        out["below_zero_ms"] = self.min_us / 1000
        return out

    def _percentile(self, ordered: list[tuple[int, int]], fraction: float) -> float:
        if not self.total:
            return 0.0
        rank = max(1, round(fraction * self.total))
        seen = 0
        for index, count in ordered:
            seen += count
            if seen >= rank:
                return min(_midpoint(index), self.max_us)
        return self.max_us


def _bucket(value_us: int) -> int:
    if value_us < 2 * SUB_BUCKETS:
        return value_us
    shift = value_us.bit_length() - SUB_BUCKETS.bit_length()
    return (shift + 1) * SUB_BUCKETS + (value_us >> shift) - SUB_BUCKETS


def _midpoint(index: int) -> float:
    if index < 2 * SUB_BUCKETS:
        return float(index)
    shift = index // SUB_BUCKETS - 1
    mantissa = index % SUB_BUCKETS + SUB_BUCKETS
    return (mantissa << shift) + (1 << shift) / 2


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.events = 0
        self.bytes = 0
        self.bad = 0  # bodies that are not a JSON object or array of objects
        self.first_event_s: float | None = None
        self.last_event_s: float | None = None
        self.received = Histogram()
        self.sent = Histogram()
        self._epoch_s: dict[str, float] = {}  # receivedAt text -> seconds (many share a ms)
        self.arrivals: dict[str, float] = {}  # an activation's userId -> its first arrival

    def count(self, body: bytes, arrived_s: float) -> None:
        self.requests += 1
        self.bytes += len(body)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.bad += 1
            return
        events = data if isinstance(data, list) else [data]
        for event in events:
            if isinstance(event, dict):
                self._event(event, arrived_s)
            else:
                self.bad += 1
        if self.first_event_s is None:
            self.first_event_s = arrived_s
        self.last_event_s = arrived_s

    def _event(self, event: dict[str, Any], arrived_s: float) -> None:
        self.events += 1
        if str(event.get("messageId", "")).startswith("engage-"):
            self.arrivals.setdefault(str(event.get("userId")), arrived_s)
        received_at = event.get("receivedAt")
        if isinstance(received_at, str):
            received_s = self._epoch_s.get(received_at)
            if received_s is None:
                if len(self._epoch_s) > 100_000:
                    self._epoch_s.clear()
                received_s = datetime.fromisoformat(received_at).timestamp()
                self._epoch_s[received_at] = received_s
            self.received.add(round((arrived_s - received_s) * 1e6))
        properties = event.get("properties")
        if isinstance(properties, dict):
            sent = properties.get(SENT_PROPERTY)
            if isinstance(sent, str) and sent.isdigit():
                self.sent.add(round(arrived_s * 1e6) - int(sent))

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events": self.events,
            "bytes": self.bytes,
            "bad": self.bad,
            "first_event_s": self.first_event_s,
            "last_event_s": self.last_event_s,
            "now_s": time.time(),
            "latency": {"received": self.received.summary(), "sent": self.sent.summary()},
        }

    def reset_latency(self) -> None:
        self.received, self.sent = Histogram(), Histogram()


TALLY = Tally()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point: answer first, then count (the destination is "fast")."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    method, path = scope["method"], scope["path"]
    if method == "GET" and path == "/stats":
        await respond(send, 200, orjson.dumps(TALLY.stats()))
    elif method == "GET" and path == "/arrivals":
        await respond(send, 200, orjson.dumps(TALLY.arrivals))
    elif method == "POST" and path == "/reset":
        TALLY.reset_latency()
        await respond(send, 200, OK_BODY)
    elif method == "POST":
        arrived_s = time.time()
        await respond(send, 200, OK_BODY)
        TALLY.count(body, arrived_s)
    else:  # GET /healthz and anything else
        await respond(send, 200, OK_BODY)


def main() -> None:
    serve(app, (__doc__ or "").splitlines()[0])


if __name__ == "__main__":
    main()
