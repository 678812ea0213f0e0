"""``/metrics`` of a real in-process Headwater: a devsink, a webhook that refuses (400) and
one that fails (500), events through ``/v1/batch``, the exposition parsed back."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from headwater import __version__
from headwater.app import Headwater
from headwater.config import parse_workspace
from headwater.delivery.policy import BreakerState
from headwater.delivery.worker import Buckets, Worker, WorkerStats
from headwater.gateway.stats import IngestStats, redact_key
from headwater.log.base import LogStats, Replica
from headwater.status.metrics import HeadwaterCollector, Readings, add_histogram
from tests.fakes import FakeDestination, always

WEBSITE_KEY = "wk_website_123"
SHOP_KEY = "wk_shop_4567"
UNKNOWN_KEY = "wk_nobody_999"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def workspace(failing_url: str, refusing_url: str) -> dict[str, Any]:
    website_only = ["website"]
    return {
        "sources": [
            {"name": "website", "write_key": WEBSITE_KEY},
            {"name": "shop", "write_key": SHOP_KEY},
        ],
        "destinations": [
            {"name": "inspector", "type": "devsink", "sources": ["website", "shop"],
             "filters": [{"if": 'event = "Debug"', "actions": [{"type": "DROP"}]}]},
            {"name": "refusing", "type": "webhook", "sources": website_only,
             "settings": {"url": refusing_url}},
            # opens on the first failure and probes again only after a minute: the test
            # sees it standing still, breaker open, its queue growing in the log
            {"name": "failing", "type": "webhook", "sources": website_only,
             "settings": {"url": failing_url},
             "delivery": {"breaker_failures": 1, "breaker_probe_secs": 60,
                          "breaker_max_probe_secs": 60}},
        ],
        "tracking_plans": [
            {"name": "shop-plan", "sources": ["shop"],
             "rules": [{"type": "TRACK", "key": "Order Completed", "jsonSchema": {}}],
             "enforcement": {"unplanned_events": "block"}},
        ],
        "log": {"durability": "os"},
        "status": {"canary_enabled": False},
    }  # fmt: skip


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "userId": "u1",
            "messageId": str(uuid.uuid4()), **fields}  # fmt: skip


class Scrape:
    """One parsed scrape: ``value(name, **labels)`` finds exactly one sample."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str) -> Iterator[Sample]:
        for family in self.families.values():
            yield from (s for s in family.samples if s.name == name)

    def find(self, name: str, **labels: str) -> list[Sample]:
        return [
            s for s in self.samples(name) if all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        found = self.find(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples in\n{self.text}"
        return found[0].value

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        return [(float(s.labels["le"]), s.value) for s in self.find(f"{name}_bucket", **labels)]


class Running:
    def __init__(self, app: Headwater, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    async def batch(self, key: str, events: list[dict[str, Any]]) -> httpx.Response:
        return await self.client.post("/v1/batch", json={"batch": events}, auth=(key, ""))

    async def scrape(self) -> Scrape:
        response = await self.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        return Scrape(response.text)

    async def until(self, check: Callable[[], bool], within: float = 20) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.02)

    def worker(self, destination: str) -> Worker:
        assert self.app.delivery is not None
        return self.app.delivery.workers[destination]

    def stats(self, destination: str) -> WorkerStats:
        return self.worker(destination).stats


@pytest.fixture
def failing() -> Iterator[FakeDestination]:
    with FakeDestination(always(500)) as fake:
        yield fake


@pytest.fixture
def refusing() -> Iterator[FakeDestination]:
    with FakeDestination(always(400)) as fake:
        yield fake


@pytest.fixture
async def running(
    tmp_path: Path, failing: FakeDestination, refusing: FakeDestination
) -> AsyncIterator[Running]:
    app = Headwater(parse_workspace(workspace(failing.url, refusing.url)), tmp_path / "data")
    app.metrics.refresh_secs = 0  # every scrape reads the store afresh
    await app.start()
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw.test") as client:
        yield Running(app, client)
    await app.stop()


async def test_metrics_follow_ingestion_and_delivery(running: Running) -> None:
    # -- phase 1: shop first, so every worker has read past it before any breaker opens
    assert (await running.batch(SHOP_KEY, [track(), track()])).status_code == 200
    website = [track(), track(), track(),
               track(integrations={"All": False, "inspector": True})]  # fmt: skip
    assert (await running.batch(WEBSITE_KEY, website)).status_code == 200
    assert (await running.batch(WEBSITE_KEY, website[:1])).status_code == 200  # a duplicate
    assert (await running.batch(UNKNOWN_KEY, [track()])).status_code == 401

    failing = running.worker("failing")
    await running.until(lambda: running.stats("inspector").delivered == 6)
    await running.until(lambda: running.stats("refusing").discarded == 3)
    # the breaker opens once the failure is on disk, after the cursor moved
    await running.until(lambda: failing.stats.retried == 3 and failing.queued_behind()[0] == 6)
    await running.until(lambda: failing.breaker.state is BreakerState.OPEN)

    scrape = await running.scrape()
    assert scrape.value("headwater_build_info", version=__version__) == 1
    assert scrape.value("headwater_events_received_total", source="website") == 4
    assert scrape.value("headwater_events_received_total", source="shop") == 2
    assert scrape.value("headwater_events_duplicate_total", source="website") == 1
    unknown = f"key:{redact_key(UNKNOWN_KEY)}"
    assert scrape.value("headwater_events_rejected_total", source=unknown,
                        code="invalid_write_key") == 1  # fmt: skip

    delivered = "headwater_events_delivered_total"
    assert scrape.value(delivered, destination="inspector", outcome="delivered") == 6
    assert scrape.value(delivered, destination="refusing", outcome="discarded") == 3
    assert scrape.value(delivered, destination="refusing", outcome="filtered") == 1
    assert scrape.value(delivered, destination="failing", outcome="retried") == 3
    assert scrape.value(delivered, destination="failing", outcome="filtered") == 1
    assert scrape.value(delivered, destination="failing", outcome="delivered") == 0

    assert scrape.value("headwater_delivery_breaker_open", destination="failing") == 1
    assert scrape.value("headwater_delivery_breaker_open", destination="inspector") == 0
    assert scrape.value("headwater_delivery_breaker_open", destination="refusing") == 0
    assert scrape.value("headwater_delivery_retry_events", destination="failing") == 3
    assert scrape.value("headwater_delivery_retry_events", destination="inspector") == 0
    # the oldest undelivered event of `failing` waits in its retry table
    assert 0 < scrape.value("headwater_delivery_lag_seconds", destination="failing") < 60
    assert scrape.value("headwater_deadletter_events", destination="failing") == 0

    # -- phase 2: `failing` reads nothing while its breaker is open: its queue is the log
    # after its cursor, shop's events included (an upper bound, as its HELP says)
    assert (await running.batch(WEBSITE_KEY, [track(), track()])).status_code == 200
    assert (await running.batch(SHOP_KEY, [track(), track()])).status_code == 200
    await running.until(lambda: running.stats("inspector").delivered == 10)
    await running.until(lambda: running.stats("refusing").discarded == 5)
    for name in ("inspector", "refusing"):  # past shop's events too
        await running.until(lambda name=name: running.worker(name).queued_behind()[0] == 10)

    scrape = await running.scrape()
    assert scrape.value("headwater_events_received_total", source="website") == 6
    assert scrape.value("headwater_events_received_total", source="shop") == 4
    assert scrape.value("headwater_log_records") == 10
    assert scrape.value("headwater_log_last_offset") == 10
    assert scrape.value("headwater_log_disk_bytes") > 0
    assert scrape.value("headwater_log_commit_latency_seconds") >= 0
    assert {s.labels["reason"]: s.value for s in scrape.samples("headwater_log_refusing")} == {
        "disk_budget": 0, "disk_full": 0, "write_latency": 0, "writer_failed": 0,
        "jetstream_unavailable": 0, "jetstream_full": 0,
    }  # fmt: skip
    assert scrape.value("headwater_delivery_queue_events", destination="failing") == 4
    assert scrape.value("headwater_delivery_queue_events", destination="inspector") == 0
    assert scrape.value("headwater_delivery_queue_events", destination="refusing") == 0
    assert scrape.value("headwater_delivery_lag_seconds", destination="inspector") == 0
    assert scrape.value(delivered, destination="inspector", outcome="delivered") == 10
    assert scrape.value(delivered, destination="refusing", outcome="discarded") == 5
    assert scrape.value(delivered, destination="failing", outcome="retried") == 3

    # one duration per request; one latency per delivered event
    requests = {name: running.stats(name).requests for name in ("inspector", "refusing", "failing")}
    assert requests["refusing"] == 5  # a webhook sends one event a request
    assert 1 <= requests["failing"] <= 3  # a batch held when the breaker opened is not sent
    duration = "headwater_delivery_duration_seconds"
    for name, sent in requests.items():
        assert scrape.value("headwater_delivery_requests_total", destination=name) == sent
        assert scrape.value(f"{duration}_count", destination=name) == sent
        buckets = scrape.buckets(duration, destination=name)
        assert buckets[-1] == (float("inf"), sent)
        assert [c for _, c in buckets] == sorted(c for _, c in buckets)  # cumulative
        assert scrape.value(f"{duration}_sum", destination=name) > 0
    latency = "headwater_delivery_latency_seconds"
    assert scrape.value(f"{latency}_count", destination="inspector") == 10
    assert scrape.buckets(latency, destination="inspector")[-1] == (float("inf"), 10)
    assert scrape.value(f"{latency}_count", destination="failing") == 0
    assert scrape.value("headwater_delivery_last_success_timestamp_seconds",
                        destination="inspector") == pytest.approx(time.time(), abs=60)  # fmt: skip
    assert not scrape.find("headwater_delivery_last_success_timestamp_seconds",
                           destination="failing")  # fmt: skip


async def test_canary_last_seen_appears_once_the_canary_has_arrived(running: Running) -> None:
    assert "headwater_canary_last_seen_timestamp_seconds" not in (await running.scrape()).text
    running.app.status.canary_state.last_seen_ms = 1_700_000_000_500
    scrape = await running.scrape()
    assert scrape.value("headwater_canary_last_seen_timestamp_seconds") == 1_700_000_000.5


async def test_every_metric_is_documented(running: Running) -> None:
    event = track()
    for _ in range(2):  # the second time a duplicate
        assert (await running.batch(WEBSITE_KEY, [event])).status_code == 200
    assert (await running.batch(UNKNOWN_KEY, [track()])).status_code == 401
    blocked = await running.batch(SHOP_KEY, [track(event="Not Planned")])
    assert blocked.status_code == 200 and blocked.json()["blocked"]
    running.app.status.canary_state.last_seen_ms = 1_700_000_000_000
    await running.until(lambda: running.stats("inspector").delivered == 1)
    scrape = await running.scrape()
    docs = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(headwater_\w+)`", docs, flags=re.M))
    # this workspace has no warehouse, space nor function: tests/warehouses/test_visible.py,
    # tests/e2e/test_unify.py and tests/functions/test_source.py check those
    documented = {m for m in documented if not m.startswith((
        "headwater_warehouse_", "headwater_identity_", "headwater_function_",
        "headwater_log_replica_"))}  # fmt: skip  # replicas: JetStream only, tested below
    served = {
        re.sub(r"_(bucket|sum|count)$", "", s.name) if f.type == "histogram" else s.name
        for f in scrape.families.values()
        for s in f.samples
        if s.name.startswith("headwater_")
    }
    assert served == documented


async def test_metrics_need_no_key_and_stay_out_of_the_global_registry(running: Running) -> None:
    response = await running.client.get("/metrics")
    assert response.status_code == 200
    assert "process_resident_memory_bytes" in response.text  # the process collector (Linux)
    assert b"headwater_" not in generate_latest(REGISTRY)


async def test_readyz_reports_the_delivery_engine(running: Running) -> None:
    response = await running.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["delivery"] == {"started": True, "destinations": 3}


async def test_readyz_is_not_ready_before_start(tmp_path: Path) -> None:
    app = Headwater(parse_workspace(workspace("http://127.0.0.1:9", "http://127.0.0.1:9")),
                    tmp_path)  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hw.test") as client:
        assert (await client.get("/readyz")).status_code == 503
        scrape = Scrape((await client.get("/metrics")).text)
    assert scrape.value("headwater_build_info", version=__version__) == 1
    assert "headwater_delivery_queue_events" not in scrape.families


@pytest.mark.parametrize(
    ("value", "bucket"), [(0.0, 0), (0.005, 0), (0.0051, 1), (1.0, 7), (300.0, 13), (301.0, 14)]
)
def test_a_value_on_a_bound_falls_in_that_bound_s_bucket(value: float, bucket: int) -> None:
    buckets = Buckets((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                       60.0, 300.0))  # fmt: skip
    buckets.observe(value)
    assert buckets.counts.index(1) == bucket
    family = HistogramMetricFamily("h_seconds", "h", labels=["destination"])
    add_histogram(family, "d", buckets)
    cumulative = [s.value for s in family.samples if s.name == "h_seconds_bucket"]
    assert cumulative == [0] * bucket + [1] * (15 - bucket)


async def test_plans_and_filters_are_counted(running: Running) -> None:
    events = [track(), track(event="Debug"), track(event="Debug")]
    assert (await running.batch(WEBSITE_KEY, events)).status_code == 200
    assert (await running.batch(SHOP_KEY, [track(event="Not Planned")])).status_code == 200
    await running.until(lambda: running.stats("inspector").delivered == 1)
    await running.until(lambda: running.stats("inspector").filtered == 2)
    scrape = await running.scrape()
    assert scrape.value("headwater_events_processed_total", source="shop",
                        step="blocked:unplanned_event") == 1  # fmt: skip
    filters = "headwater_filter_events_total"
    assert scrape.value(filters, destination="inspector", filter="1", outcome="matched") == 2
    assert scrape.value(filters, destination="inspector", filter="1", outcome="dropped") == 2
    assert scrape.value(filters, destination="inspector", filter="1", outcome="modified") == 0


class _ReplicatedLog:
    """The stats of a JetStream log whose leader reports one copy lost (the real report is
    tested in tests/log/test_jetstream.py)."""

    def stats(self) -> LogStats:
        copies = (Replica("n1", True, True, False, 0.0, 0),
                  Replica("n3", False, False, False, 12.5, 340))  # fmt: skip
        return LogStats(None, 7, 7, 10, 30, 0, None, 7, 0, 1.0, None, copies)


def test_a_replicated_logs_copies_are_metrics() -> None:
    collector = HeadwaterCollector(IngestStats(), lambda: _ReplicatedLog(),  # type: ignore[arg-type,return-value]
                                   lambda: None, Readings())  # fmt: skip
    samples = {(s.name, s.labels["replica"]): s.value for f in collector.collect()
               for s in f.samples if "replica" in s.labels}  # fmt: skip
    assert samples == {
        ("headwater_log_replica_lag", "n1"): 0, ("headwater_log_replica_lag", "n3"): 340,
        ("headwater_log_replica_seen_seconds", "n1"): 0.0,
        ("headwater_log_replica_seen_seconds", "n3"): 12.5,
    }  # fmt: skip
