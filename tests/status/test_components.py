"""Component health from signals, incidents from states, and the Statuspage API end to end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.app import Headwater
from headwater.config import parse_workspace
from headwater.config.workspace import StateConfig, StatusConfig
from headwater.errors import ConfigError
from headwater.log.base import Replica
from headwater.status.model import (
    CanarySignal,
    DestinationSignal,
    Signals,
    StateSignal,
    Status,
    evaluate,
)
from headwater.status.store import StatusStore
from tests.fakes import FakeDestination, always

CONFIG = StatusConfig()
NOW = 1_800_000_000_000


def destination(name: str = "hook", **kw: Any) -> DestinationSignal:
    base: dict[str, Any] = {"name": name, "worker_alive": True, "breaker": "closed",
                            "consecutive_failures": 0, "last_error": None,
                            "backlog_events": 0, "lag_secs": None}  # fmt: skip
    return DestinationSignal(**{**base, **kw})


def canary(**kw: Any) -> CanarySignal:
    base: dict[str, Any] = {"enabled": True, "destination": "headwater-canary",
                            "interval_secs": 30, "last_sent_ms": NOW, "last_seen_ms": NOW,
                            "last_latency_ms": 4.0, "send_error": None, "send_failures": 0,
                            "pending_since_ms": None}  # fmt: skip
    return CanarySignal(**{**base, **kw})


def states(**kw: Any) -> dict[str, tuple[Status, str]]:
    base: dict[str, Any] = {"now_ms": NOW, "log_refusing": None, "commit_latency_ms": 1.0,
                            "destinations": [destination()], "canary": canary()}  # fmt: skip
    return {
        s.component.id: (s.status, s.reason) for s in evaluate(Signals(**{**base, **kw}), CONFIG)
    }


def test_all_operational() -> None:
    assert {status for status, _ in states().values()} == {Status.OPERATIONAL}


def test_a_failing_destination_is_its_own_outage_not_headwaters() -> None:
    got = states(destinations=[destination(breaker="open", consecutive_failures=5,
                                           last_error="HTTP 503: down")])  # fmt: skip
    status, reason = got["destination:hook"]
    assert status is Status.MAJOR and "HTTP 503: down" in reason
    assert got["destinations"][0] is Status.OPERATIONAL, "a vendor outage is not Headwater's"
    assert got["tracking-api"][0] is Status.OPERATIONAL
    flaky = states(destinations=[destination(consecutive_failures=1, last_error="timeout")])
    assert flaky["destination:hook"][0] is Status.DEGRADED


def test_headwater_side_faults_degrade_routing() -> None:
    dead = states(destinations=[destination(worker_alive=False)])
    assert dead["destinations"][0] is Status.MAJOR and "worker stopped" in dead["destinations"][1]
    lagging = states(destinations=[destination(lag_secs=120, backlog_events=5000)])
    assert lagging["destinations"][0] is Status.DEGRADED
    assert states(destinations=[destination(lag_secs=900)])["destinations"][0] is Status.PARTIAL
    # a backlog behind a destination that is down is the destination's problem
    down = states(destinations=[destination(breaker="open", lag_secs=900)])
    assert down["destinations"][0] is Status.OPERATIONAL


def test_canary_late_and_missed() -> None:
    late = states(canary=canary(pending_since_ms=NOW - 10_000))
    assert late["destinations"][0] is Status.DEGRADED and "late" in late["destinations"][1]
    missed = states(canary=canary(pending_since_ms=NOW - 60_000))
    assert missed["destinations"][0] is Status.PARTIAL
    failed = states(canary=canary(send_error="HTTP 503", send_failures=2))
    assert failed["tracking-api"][0] is Status.MAJOR


def test_log_refusing_writes() -> None:
    full = states(log_refusing="disk_full")
    assert full["sources"][0] is Status.MAJOR and full["tracking-api"][0] is Status.PARTIAL
    slow = states(commit_latency_ms=900)
    assert slow["sources"][0] is Status.DEGRADED and "900 ms" in slow["sources"][1]
    cluster_gone = states(log_refusing="jetstream_unavailable")  # docs/scale-out.md
    assert cluster_gone["sources"][0] is Status.MAJOR
    assert "jetstream_unavailable" in cluster_gone["sources"][1]


def test_a_stream_copy_its_leader_has_not_heard_from_degrades_ingestion() -> None:
    leader = Replica("n1", True, True, False, 0.0, 0)
    fine = (leader, Replica("n2", False, True, False, 0.3, 0), Replica("n3", False, True,
                                                                        False, 4.0, 2))  # fmt: skip
    assert states(log_replicas=fine)["sources"] == (Status.OPERATIONAL, "")
    lost = (
        leader,
        Replica("n2", False, True, False, 0.3, 0),
        Replica("n3", False, True, False, 12.0, 340),
    )  # still "current" for a while
    status, reason = states(log_replicas=lost)["sources"]
    assert status is Status.DEGRADED
    assert reason.startswith("JetStream server(s) n3 (not heard from for 12 s, 340 operation(s)"
                             " behind) according to the stream's leader n1")  # fmt: skip
    assert "2 of the 3 copies" in reason
    offline = (leader, Replica("n2", False, False, True, 0.0, 0))
    assert "n2 (offline" in states(log_replicas=offline)["sources"][1]
    # refusing writes outranks it
    assert states(log_replicas=lost, log_refusing="jetstream_unavailable")["sources"][0] is (
        Status.MAJOR)  # fmt: skip


def test_incidents_open_update_resolve_and_maintenance(
    tmp_path: Path, state_backend: StateConfig | None
) -> None:
    store = StatusStore(tmp_path, state_backend)

    def check(at: int, **kw: Any) -> list[str]:
        signals = Signals(NOW + at, None, 1.0, kw.get("destinations", [destination()]), None)
        changes = store.apply(evaluate(signals, CONFIG), NOW + at, 2.0)
        return [f"{c.state.component.id}:{c.kind}" for c in changes if c.kind != "none"]

    assert check(0) == []
    assert check(2000, destinations=[destination(consecutive_failures=1)]) == [
        "destination:hook:opened"
    ]
    assert check(4000, destinations=[destination(breaker="open")]) == ["destination:hook:updated"]
    assert check(6000, destinations=[destination(breaker="open")]) == [], "one incident per spell"
    assert check(8000) == ["destination:hook:resolved"]
    [incident] = store.incidents()
    assert incident.status == "resolved" and incident.impact == "critical"
    assert [u.new_status for u in reversed(incident.updates)] == [
        "degraded_performance",
        "major_outage",
        "operational",
    ]
    # a maintenance window: shown as under maintenance, no incident
    store.add_maintenance("upgrade", ["destination:hook"], NOW + 9000, NOW + 20_000)
    assert check(10_000, destinations=[destination(breaker="open")]) == []
    assert store.component_rows()["destination:hook"]["status"] == "under_maintenance"
    uptime = store.uptime("destination:hook", (NOW // 86_400_000) - 1)
    assert sum(uptime[NOW // 86_400_000].values()) == pytest.approx(12.0)
    assert store.end_maintenance(store.maintenances()[0].id, NOW + 11_000)
    assert store.maintenances()[0].ends_ms == NOW + 11_000
    store.close()


def test_the_shared_state_store_down_is_its_own_major_outage_saying_what_waits() -> None:
    assert "state" not in states()  # state in the data directory: no component
    where = "10.0.0.5:5432/hw schema headwater"
    up = states(state=StateSignal(where, None, 3.0))
    assert up["state"] == (Status.OPERATIONAL, "")
    down = states(state=StateSignal(where, "connection refused", None, NOW - 42_000))
    status, reason = down["state"]
    assert status is Status.MAJOR
    assert f"PostgreSQL at {where} does not answer for 42 s (connection refused)" in reason
    assert "accepted events wait in the log" in reason
    assert down["sources"][0] is Status.OPERATIONAL  # ingestion does not need it
    slow = states(state=StateSignal(where, None, 2500.0))
    assert slow["state"][0] is Status.DEGRADED and "2500 ms" in slow["state"][1]


def test_a_node_that_stopped_heartbeating_is_down_and_said_so() -> None:
    where = "10.0.0.5:5432/hw schema headwater"
    a, b = ("a:1:worker:x", "worker", 0.4), ("b:2:worker:y", "worker", 0.9)
    gw = ("c:3:gateway:z", "gateway", 0.2)
    live = states(state=StateSignal(where, None, 3.0, None, [a, b, gw]))["nodes"]
    assert live == (Status.OPERATIONAL, "2 worker node(s), 1 gateway node(s) live")
    one_down = states(
        state=StateSignal(where, None, 3.0, None, [a, ("b:2:worker:y", "worker", 42.0)])
    )
    status, reason = one_down["nodes"]
    assert status is Status.DEGRADED and "b:2:worker:y (last heartbeat 42 s ago)" in reason
    assert "took over their destinations" in reason
    # the last worker node down: nothing delivers, even with a gateway node live
    all_down = states(
        state=StateSignal(where, None, 3.0, None, [("b:2:worker:y", "worker", 42.0), gw])
    )
    assert all_down["nodes"][0] is Status.MAJOR and "accepted events wait" in all_down["nodes"][1]
    gateway_down = states(
        state=StateSignal(where, None, 3.0, None, [a, ("c:3:gateway:z", "gateway", 30.0)])
    )
    status, reason = gateway_down["nodes"]
    assert status is Status.DEGRADED and reason.startswith("gateway node(s) down: c:3:gateway:z")
    # PostgreSQL down: its own outage; the nodes cannot be told, so they are not judged
    assert "nodes" not in states(state=StateSignal(where, "refused", None, NOW, []))


def test_reserved_and_unknown_canary_names() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        parse_workspace({"sources": [{"name": "headwater-canary"}]})
    with pytest.raises(ConfigError, match=r"status\.canary_destination: no destination"):
        parse_workspace({"sources": [{"name": "web"}], "status": {"canary_destination": "x"}})


async def test_statuspage_api_follows_a_destination_outage(tmp_path: Path) -> None:
    with FakeDestination(always(500)) as fake:
        workspace = parse_workspace({
            "sources": [{"name": "website", "write_key": "wk_website_123"}],
            "destinations": [{"name": "hook", "type": "webhook", "sources": ["website"],
                              "settings": {"url": fake.url},
                              "delivery": {"breaker_failures": 2, "backoff_base_secs": 0.05,
                                           "breaker_probe_secs": 0.1,
                                           "breaker_max_probe_secs": 0.2}}],
            "status": {"check_interval_secs": 0.1, "canary_interval_secs": 1},
            "log": {"durability": "os"},
        })  # fmt: skip
        app = Headwater(workspace, tmp_path)
        await app.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hw")
        try:
            for _ in range(3):
                r = await client.post("/v1/track", auth=("wk_website_123", ""),
                                      json={"userId": "u", "event": "E"})  # fmt: skip
                assert r.status_code == 200

            async def component(cid: str) -> dict[str, Any]:
                body = (await client.get("/api/v2/summary.json")).json()
                return next(c for c in body["components"] if c["id"] == cid)

            await _until(lambda: _status(component, "destination:hook", "major_outage"))
            summary = (await client.get("/api/v2/summary.json")).json()
            # the vendor's outage is named, but Headwater itself is operational
            assert summary["status"] == {
                "indicator": "none",
                "description": "All Systems Operational · destination failing: hook",
            }
            [incident] = summary["incidents"]
            assert incident["components"][0]["id"] == "destination:hook"
            assert "HTTP 500" in incident["incident_updates"][-1]["body"]
            assert (await component("destinations"))["status"] == "operational"
            assert (await component("destinations"))["components"] == ["destination:hook"]
            # the canary arrives (its own source and sink), so routing stays operational
            await _until(lambda: asyncio.sleep(0, app.status.canary_state.seen_total > 0))

            fake.script = always(200)
            await _until(lambda: _status(component, "destination:hook", "operational"), 15)
            unresolved = (await client.get("/api/v2/incidents/unresolved.json")).json()
            assert unresolved["incidents"] == []
            resolved = (await client.get("/api/v2/incidents.json")).json()["incidents"][0]
            assert resolved["status"] == "resolved" and resolved["resolved_at"]
            status = (await client.get("/api/v2/status.json")).json()
            assert status["status"] == {
                "indicator": "none",
                "description": "All Systems Operational",
            }
        finally:
            await client.aclose()
            await app.stop()


async def _status(component: Any, cid: str, want: str) -> bool:
    return bool((await component(cid))["status"] == want)


async def _until(check: Any, within_secs: float = 10) -> None:
    deadline = time.monotonic() + within_secs
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached in {within_secs}s")


async def test_a_stopped_delivery_worker_degrades_routing_and_the_canary_misses(
    tmp_path: Path,
) -> None:
    workspace = parse_workspace({
        "sources": [{"name": "website", "write_key": "wk_website_123"}],
        "destinations": [{"name": "inspector", "type": "devsink", "sources": ["website"]}],
        "status": {"check_interval_secs": 0.1, "canary_interval_secs": 1,
                   "canary_late_secs": 0.5, "canary_missed_secs": 1.5},
        "log": {"durability": "os"},
    })  # fmt: skip
    app = Headwater(workspace, tmp_path)
    await app.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hw")

    async def status_of(cid: str) -> tuple[str, str]:
        body = (await client.get("/api/v2/summary.json")).json()
        incidents = {i["components"][0]["id"]: i for i in body["incidents"]}
        evidence = incidents[cid]["incident_updates"][0]["body"] if cid in incidents else ""
        return next(c["status"] for c in body["components"] if c["id"] == cid), evidence

    try:
        assert app.delivery is not None
        await _until(lambda: asyncio.sleep(0, app.status.canary_state.seen_total > 0))
        await app.delivery.workers["inspector"].stop()
        await _until(lambda: _is(status_of, "destinations", "major_outage"))
        _, evidence = await status_of("destinations")
        assert "delivery worker stopped for: inspector" in evidence
        await app.delivery.workers["headwater-canary"].stop()  # canaries stop arriving
        seen = app.status.canary_state.seen_total
        await asyncio.sleep(2.5)
        assert app.status.canary_state.seen_total == seen
        assert app.status.canary_state.signal().pending_since_ms is not None
        assert app.status.monitor is not None
        states = {s.component.id: s for s in await app.status.monitor.check()}
        assert "has not arrived" in states["destinations"].reason, states["destinations"]
    finally:
        await client.aclose()
        await app.stop()


async def _is(status_of: Any, cid: str, want: str) -> bool:
    return bool((await status_of(cid))[0] == want)
