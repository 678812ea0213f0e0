"""``/metrics``: Prometheus metrics, read from the live objects when scraped.

Nothing here is on the ingestion or delivery hot path. The counters are the ones the
gateway (:class:`~headwater.gateway.stats.IngestStats`), the log
(:class:`~headwater.log.base.LogStats`) and the delivery workers
(:class:`~headwater.delivery.worker.WorkerStats`) keep anyway; :class:`HeadwaterCollector`
turns them into metric families at scrape time. What needs I/O — the retry table and the
dead letter store (the delivery store's thread), the oldest event waiting in each queue (a
log read) — is fetched by :meth:`Metrics.refresh` *before* a scrape renders, at most once
per ``refresh_secs``, so ``collect()`` itself never blocks the event loop.

Each :class:`~headwater.app.Headwater` has its own :class:`CollectorRegistry` (never the
global default one), so two apps in one process (tests) do not mix their metrics. Every
metric is documented in docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from headwater import __version__
from headwater.delivery.policy import BreakerState
from headwater.delivery.store import StoreDB
from headwater.delivery.view import DeliveryView
from headwater.delivery.worker import Buckets
from headwater.gateway.stats import IngestStats
from headwater.log.base import EventLog

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text exposition format, which every Prometheus-compatible scraper reads."""
REFRESH_SECS = 1.0  # the store and log are read at most this often, however often scraped
REFRESH_WAIT_SECS = 2.0  # a scrape waits this long for fresh values, then shows the last ones
LOG_REFUSING_REASONS = ("disk_budget", "disk_full", "write_latency", "writer_failed",
                        "jetstream_unavailable", "jetstream_full")  # fmt: skip
"""Why the log refuses writes (:attr:`~headwater.log.base.LogStats.refusing`); one series each."""
OUTCOMES = ("delivered", "discarded", "dead_lettered", "filtered", "retried")


class CanaryView(Protocol):
    """What /metrics reads of the canary (:class:`headwater.status.canary.CanaryState`)."""

    @property
    def last_seen_ms(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class QueueReading:
    """One destination's numbers that need I/O, as of ``Metrics.refresh``."""

    retry_events: int = 0
    dead_letters: int = 0
    oldest_waiting_ms: int | None = None  # received time of the oldest event not delivered


@dataclass(slots=True)
class Readings:
    """The latest :class:`QueueReading` of each destination, shared by the collector."""

    queues: dict[str, QueueReading] = field(default_factory=dict)


class HeadwaterCollector:
    """A custom collector over the live objects of one Headwater process."""

    def __init__(
        self,
        ingest: IngestStats,
        log: Callable[[], EventLog | None],
        delivery: Callable[[], DeliveryView | None],
        readings: Readings,
        version: str = __version__,
    ) -> None:
        self._ingest = ingest
        self._log = log
        self._delivery = delivery
        self._readings = readings
        self._version = version
        self.canary: CanaryView | None = None

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "headwater_build_info", "Always 1; the version of Headwater.", labels=["version"]
        )
        info.add_metric([self._version], 1)
        yield info
        yield from self._ingestion()
        yield from self._event_log()
        yield from self._delivery_metrics()
        yield from self._canary()

    def _ingestion(self) -> Iterator[Metric]:
        stats = self._ingest
        received = CounterMetricFamily(
            "headwater_events_received",
            "Events the Tracking API accepted and stored in the log, per source "
            "(duplicates not included).",
            labels=["source"],
        )
        for source, count in sorted(stats.received.items()):
            received.add_metric([source], count)
        duplicates = CounterMetricFamily(
            "headwater_events_duplicate",
            "Events accepted with a messageId the log already held (not stored again), per source.",
            labels=["source"],
        )
        for source, count in sorted(stats.duplicates.items()):
            duplicates.add_metric([source], count)
        rejected = CounterMetricFamily(
            "headwater_events_rejected",
            "Requests or batch items the Tracking API refused, per source and reason code. "
            "source is the source's name, 'key:<prefix>…' for an unknown write key, "
            "'key:other' past 1000 unknown keys, or 'unknown' when no key was sent.",
            labels=["source", "code"],
        )
        for (scope, code), count in sorted(stats.rejected.items()):
            rejected.add_metric([scope, code], count)
        processed = CounterMetricFamily(
            "headwater_events_processed",
            "What tracking plans and source transformations did at ingest, per source and "
            "step: blocked:<reason> (unplanned_event, violation), violations (found, whether "
            "or not the event was blocked), transformed.",
            labels=["source", "step"],
        )
        for (source, step), count in sorted(stats.processed.items()):
            processed.add_metric([source, step], count)
        yield from (received, duplicates, rejected, processed)

    def _event_log(self) -> Iterator[Metric]:
        log = self._log()
        if log is None:
            return
        stats = log.stats()
        yield GaugeMetricFamily("headwater_log_records", "Records the event log retains.",
                                value=stats.records)  # fmt: skip
        yield GaugeMetricFamily(
            "headwater_log_disk_bytes", "Bytes the event log occupies on disk.",
            value=stats.disk_bytes,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "headwater_log_commit_latency_seconds",
            "Recent commit latency of the event log (a moving average).",
            value=stats.commit_latency_ms / 1000,
        )
        yield GaugeMetricFamily(
            "headwater_log_last_offset",
            "Offset of the newest record in the event log (0 when empty).",
            value=stats.last_offset or 0,
        )
        refusing = GaugeMetricFamily(
            "headwater_log_refusing",
            "1 while the event log refuses writes for this reason (the Tracking API answers "
            "503 with Retry-After), else 0.",
            labels=["reason"],
        )
        reasons = list(LOG_REFUSING_REASONS)
        if stats.refusing is not None and stats.refusing not in reasons:
            reasons.append(stats.refusing)
        for reason in reasons:
            refusing.add_metric([reason], 1 if stats.refusing == reason else 0)
        yield refusing
        if stats.replicas:  # a JetStream stream: its copies as the leader reports them
            lag = GaugeMetricFamily(
                "headwater_log_replica_lag",
                "Operations a copy of the stream is behind its leader (JetStream).",
                labels=["replica", "leader"],
            )
            seen = GaugeMetricFamily(
                "headwater_log_replica_seen_seconds",
                "Seconds since the stream's leader last heard from this copy (JetStream).",
                labels=["replica", "leader"],
            )
            for r in stats.replicas:
                lag.add_metric([r.name, str(r.leader).lower()], r.lag)
                seen.add_metric([r.name, str(r.leader).lower()], r.seen_secs)
            yield lag
            yield seen

    def _delivery_metrics(self) -> Iterator[Metric]:
        engine = self._delivery()
        log = self._log()
        if engine is None or log is None:
            return
        last_offset = log.stats().last_offset or 0
        now_ms = int(time.time() * 1000)
        readings = self._readings.queues
        f = _DeliveryFamilies()
        for name, worker in sorted(engine.workers.items()):
            stats = worker.stats
            counts = (stats.delivered, stats.discarded, stats.dead_lettered, stats.filtered,
                      stats.retried)  # fmt: skip
            for outcome, count in zip(OUTCOMES, counts, strict=True):
                f.events.add_metric([name, outcome], count)
            f.requests.add_metric([name], stats.requests)
            add_histogram(f.duration, name, stats.duration_secs)
            add_histogram(f.latency, name, stats.latency_secs)
            committed, _ = worker.queued_behind()
            f.queue.add_metric([name], max(0, last_offset - committed))
            f.breaker.add_metric([name], 0 if worker.breaker.state is BreakerState.CLOSED else 1)
            if stats.last_success_ms is not None:
                f.last_success.add_metric([name], stats.last_success_ms / 1000)
            for index, counted in enumerate(worker.stage.stats(), start=1):
                for outcome in ("matched", "dropped", "sampled_out", "modified"):
                    f.filters.add_metric([name, str(index), outcome], counted[outcome])
            reading = readings.get(name)
            if reading is not None:
                f.retries.add_metric([name], reading.retry_events)
                f.dead.add_metric([name], reading.dead_letters)
                oldest = reading.oldest_waiting_ms
                lag_ms = 0 if oldest is None else max(0, now_ms - oldest)
                f.lag.add_metric([name], lag_ms / 1000)
        yield from f.all()

    def _canary(self) -> Iterator[Metric]:
        seen = self.canary.last_seen_ms if self.canary is not None else None
        if seen is not None:
            yield GaugeMetricFamily(
                "headwater_canary_last_seen_timestamp_seconds",
                "When the newest synthetic canary event arrived at its destination "
                "(Unix time); absent until one has.",
                value=seen / 1000,
            )


class _DeliveryFamilies:
    """The per-destination metric families, filled one destination at a time."""

    def __init__(self) -> None:
        d = ["destination"]
        self.events = CounterMetricFamily(
            "headwater_events_delivered",
            "Events by how their attempts at a destination ended: delivered, discarded "
            "(refused for good, or dropped by the log's retention), dead_lettered, filtered "
            "(not routed to it), retried (events of failed attempts that were scheduled for "
            "another; an event retried three times counts three times).",
            labels=["destination", "outcome"],
        )
        self.requests = CounterMetricFamily(
            "headwater_delivery_requests", "Requests sent to a destination (attempts).", labels=d
        )
        self.duration = HistogramMetricFamily(
            "headwater_delivery_duration_seconds",
            "How long each request to a destination took, failures and timeouts included.",
            labels=d,
        )
        self.latency = HistogramMetricFamily(
            "headwater_delivery_latency_seconds",
            "End-to-end latency of each delivered event: delivered time minus receivedAt.",
            labels=d,
        )
        self.queue = GaugeMetricFamily(
            "headwater_delivery_queue_events",
            "Events in the log after the destination's cursor (last offset - cursor): an upper "
            "bound of its queue, as it counts events not routed to it and those in flight.",
            labels=d,
        )
        self.retries = GaugeMetricFamily(
            "headwater_delivery_retry_events",
            "Events waiting in the retry table for their next attempt (refreshed at most "
            "once a second).",
            labels=d,
        )
        self.lag = GaugeMetricFamily(
            "headwater_delivery_lag_seconds",
            "Age of the oldest event not yet delivered: the first log record after the "
            "cursor or the oldest retry batch, whichever was received first; 0 when nothing "
            "waits. An upper bound, like headwater_delivery_queue_events.",
            labels=d,
        )
        self.breaker = GaugeMetricFamily(
            "headwater_delivery_breaker_open",
            "1 while the destination's circuit breaker is open or probing (nothing but probes "
            "is sent), 0 when closed.",
            labels=d,
        )
        self.dead = GaugeMetricFamily(
            "headwater_deadletter_events",
            "Events in the dead letter store, waiting for a re-drive or purge.",
            labels=d,
        )
        self.last_success = GaugeMetricFamily(
            "headwater_delivery_last_success_timestamp_seconds",
            "When the destination last took a batch (Unix time); absent until it has.",
            labels=d,
        )

        self.filters = CounterMetricFamily(
            "headwater_filter_events",
            "Events a destination filter looked at, per destination, filter (its position, "
            "from 1) and outcome: matched its condition, and of those dropped, sampled_out, "
            "modified.",
            labels=["destination", "filter", "outcome"],
        )

    def all(self) -> list[Metric]:
        return [self.events, self.requests, self.duration, self.latency, self.queue,
                self.retries, self.lag, self.breaker, self.dead, self.last_success,
                self.filters]  # fmt: skip


def add_histogram(family: HistogramMetricFamily, destination: str, buckets: Buckets) -> None:
    """Add one destination's :class:`Buckets` (counts per bucket) as Prometheus's cumulative
    ``le`` buckets."""
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(buckets.bounds, buckets.counts, strict=False):
        running += count
        cumulative.append((_le(bound), running))
    cumulative.append(("+Inf", buckets.count))
    family.add_metric([destination], cumulative, sum_value=buckets.sum)


def _le(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    """The metrics of one Headwater process: its registry, collector and I/O readings.

    ``canary`` is set by whoever runs the canary; the canary metric is absent until then.
    """

    def __init__(
        self,
        ingest: IngestStats,
        log: Callable[[], EventLog | None],
        delivery: Callable[[], DeliveryView | None],
        *,
        refresh_secs: float = REFRESH_SECS,
        process: bool = True,
    ) -> None:
        self._log = log
        self._delivery = delivery
        self.refresh_secs = refresh_secs
        self.readings = Readings()
        self.collector = HeadwaterCollector(ingest, log, delivery, self.readings)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        if process:  # process_cpu_seconds_total, process_resident_memory_bytes, ... (Linux)
            ProcessCollector(registry=self.registry)
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_started = 0.0  # time.monotonic(); a failed refresh is not retried sooner

    @property
    def canary(self) -> CanaryView | None:
        return self.collector.canary

    @canary.setter
    def canary(self, state: CanaryView | None) -> None:
        self.collector.canary = state

    async def render(self) -> bytes:
        """The text exposition, with readings at most ``refresh_secs`` old when they can be
        had within ``REFRESH_WAIT_SECS`` (else the previous ones)."""
        task = self._refreshing
        now = time.monotonic()
        if task is None or (task.done() and now - self._refresh_started >= self.refresh_secs):
            self._refresh_started = now
            task = self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
        if not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), REFRESH_WAIT_SECS)
        return generate_latest(self.registry)

    async def refresh(self) -> None:
        """Read the retry table, the dead letter store and the head of each queue."""
        engine, log = self._delivery(), self._log()
        if engine is None or log is None:
            return
        names = list(engine.workers)

        def read(db: StoreDB) -> dict[str, tuple[int, int, int | None]]:
            dead = db.dead_letter_counts()
            found: dict[str, tuple[int, int, int | None]] = {}
            for name in names:
                count, _ = db.retry_summary(name)
                oldest = db.retries(name, None, 1) if count else []
                first = min(e.received_at_ms for e in oldest[0].events) if oldest else None
                found[name] = (count, dead.get(name, 0), first)
            return found

        try:
            store = await engine.store.run(read)
            heads: dict[int, int | None] = {}  # cursor -> received time of the record after it
            queues: dict[str, QueueReading] = {}
            for name, (retry_events, dead, oldest_retry) in store.items():
                worker = engine.workers.get(name)
                if worker is None:
                    continue
                committed, _ = worker.queued_behind()
                if committed not in heads:
                    after = await log.read(committed, 1)
                    heads[committed] = after[0].received_at_ms if after else None
                waiting = [t for t in (heads[committed], oldest_retry) if t is not None]
                queues[name] = QueueReading(retry_events, dead, min(waiting, default=None))
        except Exception:
            logger.warning("metrics: cannot read the delivery store or the log", exc_info=True)
            return
        self.readings.queues = queues

    async def close(self) -> None:
        """Cancel a refresh still running: the store and the log are about to close."""
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
