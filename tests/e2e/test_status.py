"""``headwater status`` and ``headwater maintenance`` against a running server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import free_port
from tests.fakes import FakeDestination, always


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "headwater.cli", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def component(url: str, cid: str) -> dict[str, Any]:
    summary = httpx.get(f"{url}/api/v2/summary.json").json()
    return next(c for c in summary["components"] if c["id"] == cid)


def wait_for(url: str, cid: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if component(url, cid)["status"] == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{cid} never became {status}: {component(url, cid)}")


def test_status_and_maintenance(make_server: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
    server = make_server(
        "destinations:\n"
        f"  - {{name: hook, type: webhook, sources: [website], settings: {{url: '{dead}'}},\n"
        "     delivery: {breaker_failures: 1, breaker_probe_secs: 0.2}}\n"
        "status: {check_interval_secs: 0.2, canary_interval_secs: 1}\n"
    )
    response = httpx.post(f"{server.url}/v1/track", auth=("wk_e2e_website_1", ""),
                          json={"userId": "u", "event": "E"})  # fmt: skip
    assert response.status_code == 200
    wait_for(server.url, "destination:hook", "major_outage")

    shown = run("status", "--url", server.url)
    assert shown.returncode == 1, "status exits 1 while something is not operational"
    assert "Destination hook" in shown.stdout and "major_outage" in shown.stdout, shown.stdout
    assert "cannot connect" in shown.stdout  # the incident's evidence

    added = run("maintenance", "add", "--name", "moving the hook", "--component",
                "destination:hook", "--for", "1h", "--data-dir", str(server.data_dir))  # fmt: skip
    assert added.returncode == 0, added.stderr
    wait_for(server.url, "destination:hook", "under_maintenance")
    summary = httpx.get(f"{server.url}/api/v2/summary.json").json()
    assert summary["incidents"] == [], "maintenance closes the incident"
    [window] = summary["scheduled_maintenances"]
    assert window["status"] == "in_progress" and window["name"] == "moving the hook"
    calm = run("status", "--url", server.url)
    assert calm.returncode == 0 and "under_maintenance" in calm.stdout, calm.stdout

    listed = run("maintenance", "list", "--data-dir", str(server.data_dir))
    assert window["id"] in listed.stdout
    ended = run("maintenance", "end", window["id"], "--data-dir", str(server.data_dir))
    assert ended.returncode == 0, ended.stderr
    wait_for(server.url, "destination:hook", "major_outage")
    # the canary has its own source and sink, so Headwater itself stays operational
    assert component(server.url, "destinations")["status"] == "operational"
    assert component(server.url, "tracking-api")["status"] == "operational"


def test_destination_outage_alerts_within_10_s_then_recovers(make_server: Any) -> None:
    """A destination starts failing: its component degrades, an incident opens, one alert
    reaches the webhook receiver within 10 s, and a recovery notice follows when it heals."""
    with FakeDestination() as receiver, FakeDestination() as hook:
        server = make_server(
            "destinations:\n"
            f"  - {{name: hook, type: webhook, sources: [website], settings: {{url: '{hook.url}'}},\n"
            "     delivery: {breaker_failures: 2, backoff_base_secs: 0.1, breaker_probe_secs: 0.2,\n"
            "                breaker_max_probe_secs: 0.5}}\n"
            "alerts:\n"
            f"  notifiers: [{{name: ops, type: webhook, settings: {{url: '{receiver.url}/alerts'}}}}]\n"
        )
        send = lambda: httpx.post(f"{server.url}/v1/track", auth=("wk_e2e_website_1", ""),  # noqa: E731
                                  json={"userId": "u", "event": "E"})  # fmt: skip
        assert send().status_code == 200
        hook.wait_for(lambda f: len(f.requests) >= 1)
        assert receiver.requests == [], "no alert while everything works"

        hook.script = always(503)
        failing_since = time.monotonic()
        for _ in range(3):
            send()
        receiver.wait_for(lambda f: len(f.requests) >= 1, timeout=60)
        took = receiver.requests[0].at - failing_since  # a figure to read, not to assert on
        alert = receiver.requests[0].json()
        print(f"\nalert {took:.1f} s after the destination started failing")
        assert alert["kind"] == "opened" and alert["component"]["id"] == "destination:hook"
        assert alert["incident"]["id"].startswith("inc-") and "HTTP 503" in alert["message"]
        time.sleep(1.5)
        assert len(receiver.requests) == 1, "one alert per incident, not one per check"

        hook.script = always(200)
        receiver.wait_for(lambda f: len(f.requests) >= 2, timeout=20)
        recovery = receiver.requests[1].json()
        assert recovery["kind"] == "resolved" and recovery["incident"] == alert["incident"]
        assert component(server.url, "destination:hook")["status"] == "operational"


SUMMARY_SHAPE = {
    "page": {"id": str, "name": str, "url": str, "time_zone": str, "updated_at": str},
    "status": {"indicator": str, "description": str},
}
COMPONENT_SHAPE = {"id": str, "name": str, "status": str, "created_at": str, "updated_at": str,
                   "position": int, "group": bool, "page_id": str, "only_show_if_degraded": bool,
                   "showcase": bool}  # fmt: skip
INCIDENT_SHAPE = {"id": str, "name": str, "status": str, "impact": str, "created_at": str,
                  "updated_at": str, "page_id": str, "incident_updates": list,
                  "components": list}  # fmt: skip
STATUSES = {"operational", "degraded_performance", "partial_outage", "major_outage",
            "under_maintenance"}  # fmt: skip


def check_shape(value: dict[str, Any], shape: dict[str, Any], where: str) -> None:
    for key, kind in shape.items():
        assert key in value, f"{where}.{key} is missing"
        if isinstance(kind, dict):
            check_shape(value[key], kind, f"{where}.{key}")
        else:
            assert isinstance(value[key], kind), f"{where}.{key} is not {kind.__name__}"


def test_statuspage_shape_and_headwater_watch_reading_it(make_server: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    server = make_server(
        "destinations:\n"
        f"  - {{name: hook, type: webhook, sources: [website], settings: {{url: '{dead}'}},\n"
        "     delivery: {breaker_failures: 1, breaker_probe_secs: 0.2}}\n"
        "status: {check_interval_secs: 0.2}\n"
    )
    calm = run("watch", "--page", f"self={server.url}", "--http", f"health={server.url}/healthz",
               "--once")  # fmt: skip
    assert calm.returncode == 0, calm.stdout + calm.stderr
    assert "self · Destination hook: operational" in calm.stdout
    assert "health (watched): operational" in calm.stdout

    httpx.post(f"{server.url}/v1/track", auth=("wk_e2e_website_1", ""),
               json={"userId": "u", "event": "E"})  # fmt: skip
    wait_for(server.url, "destination:hook", "major_outage")
    summary = httpx.get(f"{server.url}/api/v2/summary.json").json()
    check_shape(summary, SUMMARY_SHAPE, "summary")
    assert summary["status"]["indicator"] in {"none", "minor", "major", "critical", "maintenance"}
    for c in summary["components"]:
        check_shape(c, COMPONENT_SHAPE, f"component {c.get('id')}")
        assert c["status"] in STATUSES
    [incident] = summary["incidents"]
    check_shape(incident, INCIDENT_SHAPE, "incident")
    for path in ("status", "components", "incidents", "incidents/unresolved",
                 "scheduled-maintenances"):  # fmt: skip
        body = httpx.get(f"{server.url}/api/v2/{path}.json").json()
        check_shape(body, {"page": SUMMARY_SHAPE["page"]}, path)

    failing = run("watch", "--page", f"self={server.url}", "--once")
    assert failing.returncode == 1
    assert "self · Destination hook: major_outage" in failing.stdout, failing.stdout
    gone = run("watch", "--http", f"gone=http://127.0.0.1:{free_port()}/", "--once")
    assert gone.returncode == 1 and "gone (watched): major_outage" in gone.stdout


def _writer_pid(server: Any) -> int:
    """The log writer process, a child of the server."""
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    for pid in children.read_text().split():
        if "headwater.log.sqlite_process" in Path(f"/proc/{pid}/cmdline").read_text():
            return int(pid)
    raise AssertionError("no log writer process found")


def test_a_stalled_log_is_seen_by_the_canary(make_server: Any) -> None:
    server = make_server("status: {check_interval_secs: 0.2, canary_interval_secs: 1}\n")
    wait_for(server.url, "tracking-api", "operational")
    writer = _writer_pid(server)
    os.kill(writer, signal.SIGSTOP)  # commits stall: requests wait, nothing is acknowledged
    try:
        wait_for(server.url, "tracking-api", "major_outage", timeout=20)
        summary = httpx.get(f"{server.url}/api/v2/summary.json").json()
        tracking = next(
            i for i in summary["incidents"] if i["components"][0]["id"] == "tracking-api"
        )
        assert "canary request(s) in a row failed" in tracking["incident_updates"][-1]["body"]
    finally:
        os.kill(writer, signal.SIGCONT)
    wait_for(server.url, "tracking-api", "operational", timeout=20)


def test_maintenance_silences_alerts(make_server: Any) -> None:
    with FakeDestination() as receiver:
        dead = f"http://127.0.0.1:{free_port()}/hook"
        server = make_server(
            "destinations:\n"
            f"  - {{name: hook, type: webhook, sources: [website], settings: {{url: '{dead}'}},\n"
            "     delivery: {breaker_failures: 1, breaker_probe_secs: 0.2}}\n"
            "status: {check_interval_secs: 0.2}\n"
            "alerts:\n"
            f"  notifiers: [{{name: ops, type: webhook, settings: {{url: '{receiver.url}'}}}}]\n"
        )
        added = run("maintenance", "add", "--name", "vendor migration", "--component",
                    "destination:hook", "--for", "1h", "--data-dir", str(server.data_dir))  # fmt: skip
        assert added.returncode == 0, added.stderr
        httpx.post(f"{server.url}/v1/track", auth=("wk_e2e_website_1", ""),
                   json={"userId": "u", "event": "E"})  # fmt: skip
        wait_for(server.url, "destination:hook", "under_maintenance")
        time.sleep(2)  # ten checks while the destination is failing
        assert receiver.requests == [], "an alert went out during maintenance"
