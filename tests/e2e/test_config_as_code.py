"""Config as code against a real server (its delivery in the worker process): ``headwater
export`` writes the running configuration with secrets as environment references, ``diff``
shows the plan and exits 3 on drift, ``apply`` changes the running server without a
restart, a second ``apply`` changes nothing, and a delivery worker killed afterwards comes
back with the applied configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.conftest import ADMIN_TOKEN, OTHER_KEY, WRITE_KEY, Server
from tests.e2e.test_protocols import wait_until
from tests.fakes import FakeDestination

SECRET = "config-as-code-header-secret-7"


def run(
    server: Server, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN, "HEADWATER_URL": server.url,
            "COLUMNS": "250", **(env or {})}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "headwater.cli", *args],
                          capture_output=True, text=True, timeout=60, env=full)  # fmt: skip


def track(server: Server, message_id: str) -> None:
    answer = httpx.post(f"{server.url}/v1/track", auth=(WRITE_KEY, ""), timeout=10,
                        json={"userId": "u1", "event": "Applied", "messageId": message_id})  # fmt: skip
    assert answer.status_code == 200, answer.text


def sink_ids(server: Server) -> set[str]:
    answer = server.api("/api/v1/devsink/sink", limit=1000)
    if answer.status_code != 200:
        return set()
    return {e["messageId"] for e in answer.json()["events"]}


def worker_pid(server: Server) -> int:
    found = subprocess.run(["pgrep", "-f", f"headwater.worker_role {server.data_dir.resolve()}"],
                           capture_output=True, text=True)  # fmt: skip
    pids = [int(p) for p in found.stdout.split()]
    assert len(pids) == 1, (found.stdout, found.stderr)
    return pids[0]


def test_export_diff_apply_change_the_running_server(make_server: Any, tmp_path: Path) -> None:
    with FakeDestination() as fake:
        server = make_server(
            "destinations:\n"
            "  - name: hook\n    type: webhook\n    sources: [website]\n"
            f"    settings:\n      url: {fake.url}/in\n"
            f"      headers: {{X-Token: {SECRET}}}\n"
        )
        exported = run(server, "export")
        assert exported.returncode == 0, exported.stderr
        assert SECRET not in exported.stdout and WRITE_KEY not in exported.stdout
        names = exported.stderr.split(": ", 1)[1].replace("\n", "").split(", ")
        env = {
            "HEADWATER_SECRET_SOURCES_WEBSITE_WRITE_KEY": WRITE_KEY,
            "HEADWATER_SECRET_SOURCES_BACKEND_WRITE_KEY": OTHER_KEY,
            "HEADWATER_SECRET_DESTINATIONS_HOOK_SETTINGS_HEADERS_X_TOKEN": SECRET,
        }
        assert sorted(names) == sorted(env), exported.stderr
        document = yaml.safe_load(exported.stdout)
        path = tmp_path / "workspace.yaml"
        path.write_text(exported.stdout)

        same = run(server, "diff", "-f", str(path), env=env)
        assert same.returncode == 0, same.stdout + same.stderr
        assert "No changes" in same.stdout
        unset = run(server, "diff", "-f", str(path))
        assert unset.returncode == 2
        assert "HEADWATER_SECRET_" in unset.stderr and "is not set" in unset.stderr

        track(server, "before-apply")
        wait_until("the hook gets events", lambda: len(fake.requests) >= 1)
        document["destinations"][0]["enabled"] = False
        document["destinations"].append({"name": "sink", "type": "devsink", "sources": ["website"]})
        document["warehouses"] = [{"name": "wh", "type": "duckdb", "sources": ["website"],
                                   "path": str(tmp_path / "wh.duckdb"), "sync_interval": 1}]  # fmt: skip
        document["spaces"] = [{"name": "main", "sources": ["website"]}]
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        plan = run(server, "diff", "-f", str(path), env=env)
        assert plan.returncode == 3, plan.stdout + plan.stderr
        assert "create destinations/sink" in plan.stdout
        assert "change destinations/hook  (enabled)" in plan.stdout
        assert "create warehouses/wh" in plan.stdout
        assert "create spaces/main" in plan.stdout
        assert "Plan: 3 to create, 1 to change, 0 to delete." in plan.stdout

        applied = run(server, "apply", "-f", str(path), "--auto-approve", env=env)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "destination sink: created, running" in applied.stdout
        assert "destination hook: kept until purged" in applied.stdout
        again = run(server, "apply", "-f", str(path), "--auto-approve", env=env)
        assert again.returncode == 0 and "No changes" in again.stdout, again.stdout

        sent = [f"after-apply-{n}" for n in range(5)]
        for message_id in sent:
            track(server, message_id)
        wait_until("the new devsink gets the events", lambda: set(sent) <= sink_ids(server))
        hooked = {e["messageId"] for r in fake.requests for e in r.events()}
        assert hooked == {"before-apply"}  # nothing after it was disabled
        # the warehouse runs in the worker process, started by the apply
        wait_until("the new warehouse syncs the events", lambda: _synced(server, sent))
        # and the space, in the worker process too: the profile of the events' user
        profile = f"{server.url}/v1/spaces/main/collections/users/profiles/user_id:u1/traits"
        wait_until("the new space has the profile", lambda: httpx.get(
            profile, auth=(ADMIN_TOKEN, ""), timeout=10).status_code == 200)  # fmt: skip

        # the worker process restarts with the applied configuration
        os.kill(worker_pid(server), signal.SIGKILL)
        later = [f"after-restart-{n}" for n in range(5)]
        wait_until("the worker is back", lambda: server.api("/readyz").status_code == 200
                   and _restarted(server))  # fmt: skip
        for message_id in later:
            track(server, message_id)
        wait_until("the restarted worker delivers to the applied destination",
                   lambda: set(later) <= sink_ids(server), timeout_s=60)  # fmt: skip
        hooked = {e["messageId"] for r in fake.requests for e in r.events()}
        assert hooked == {"before-apply"}

        trail = server.api("/api/v1/audit", resource="destinations").json()["entries"]
        actions = {(e["resource"], e["action"]) for e in trail}
        assert {("destinations/sink", "create"), ("destinations/hook", "disable")} <= actions


def _synced(server: Server, ids: list[str]) -> bool:
    doc = server.api("/api/v1/warehouses/wh").json()
    return bool(doc.get("lastSync") and doc["lastSync"]["status"] == "success"
                and doc["rowsPerTable"].get("website.tracks", 0) >= len(ids))  # fmt: skip


def _restarted(server: Server) -> bool:
    try:
        worker_pid(server)
    except AssertionError:
        return False
    return True
