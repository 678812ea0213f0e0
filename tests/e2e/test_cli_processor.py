"""``headwater plans …`` and ``headwater filters test`` as a user runs them: real processes.

The happy paths against a running server (``plans list``, ``plans violations``, ``plans
resend-blocked``, ``filters test`` agreeing with deliveries) are exercised by the scenarios of
tests/e2e/test_protocols.py; here: an imported plan that serves as is, and the messages of
the commands when something is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.processor.protocols.segment_import import import_segment_plan
from tests.e2e.conftest import ADMIN, write_workspace
from tests.e2e.test_protocols import FIXTURE, cli, post_batch
from tests.fakes import free_port


def test_imported_plan_serves_as_printed(make_server: Any) -> None:
    run = cli(None, "plans", "import", str(FIXTURE), "--name", "shop", "--source", "website")
    assert run.returncode == 0, run.stderr
    comments = [line for line in run.stdout.splitlines() if line.startswith("#")]
    assert any("Wishlist Product Added" in c and "deprecated" in c for c in comments), comments
    server = make_server(run.stdout)  # the YAML, pasted into the workspace unchanged

    listing = cli(server, "plans", "list")
    assert listing.returncode == 0, listing.stderr
    expected = import_segment_plan(json.loads(FIXTURE.read_text()))
    assert f"rules: {len(expected.rules)}" in listing.stdout, listing.stdout
    assert "sources: website" in listing.stdout and "(workspace)" in listing.stdout
    served = httpx.get(f"{server.url}/api/v1/tracking-plans/shop", headers=ADMIN).json()
    assert served["plan"]["rules"] == [
        r.model_dump(mode="json", by_alias=True) for r in expected.rules
    ], "the printed YAML lost something of the export"

    # the imported plan checks events: an Order Completed without its required keys
    post_batch(server, [{"type": "track", "event": "Order Completed", "userId": "u",
                         "messageId": "imp-1", "properties": {"order_id": "o1"}}])  # fmt: skip
    report = cli(server, "plans", "violations", "--source", "website")
    assert report.returncode == 0, report.stderr
    assert "track 'Order Completed': 3" in report.stdout, report.stdout
    for key in ("revenue", "currency", "products"):
        assert f"properties.{key}" in report.stdout, report.stdout


def test_plans_import_refuses_what_is_not_a_plan(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"workspace": "acme"}')
    run = cli(None, "plans", "import", str(other))
    assert run.returncode == 1
    assert "not a Segment tracking plan export" in run.stderr, run.stderr
    assert "Config API" in run.stderr, "the message should list the shapes it reads"

    broken = tmp_path / "broken.json"
    broken.write_text("{rules: [")
    run = cli(None, "plans", "import", str(broken))
    assert run.returncode == 2 and "is not JSON" in run.stderr, run.stderr

    missing = cli(None, "plans", "import", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr, missing.stderr


HOOK = """\
destinations:
  - name: hook
    type: webhook
    sources: [website]
    settings: {url: 'http://127.0.0.1:9/hook'}
    filters:
      - name: Debug events
        if: match(event, "Debug *")
        actions: [{type: DROP}]
"""


def test_filters_test_says_what_is_wrong(tmp_path: Path) -> None:
    config = write_workspace(tmp_path / "workspace.yaml", HOOK)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"type": "track", "event": "Signed Up", "userId": "u"}))

    kept = cli(None, "filters", "test", "-d", "hook", "--event", str(event), "-c", str(config))
    assert kept.returncode == 0, kept.stderr
    assert 'filter 1 ("Debug events"): does not match' in kept.stdout, kept.stdout
    assert "UNCHANGED; the destination gets:" in kept.stdout, kept.stdout

    unknown = cli(None, "filters", "test", "-d", "amp", "--event", str(event), "-c", str(config))
    assert unknown.returncode == 2
    assert "no destination is named 'amp'; the destinations are: hook" in unknown.stderr

    listed = tmp_path / "list.json"
    listed.write_text("[{}]")
    run = cli(None, "filters", "test", "-d", "hook", "--event", str(listed), "-c", str(config))
    assert run.returncode == 2 and "must hold one event" in run.stderr, run.stderr

    bad = write_workspace(tmp_path / "bad.yaml", HOOK.replace('"Debug *")', '"Debug *"'))
    run = cli(None, "filters", "test", "-d", "hook", "--event", str(event), "-c", str(bad))
    assert run.returncode == 2, run.stdout
    assert "destinations[0].filters[0].if" in run.stderr and "column" in run.stderr, run.stderr


@pytest.mark.parametrize("command", [["plans", "list"],
                                     ["plans", "violations", "--source", "website"],
                                     ["plans", "resend-blocked", "--source", "website"]])  # fmt: skip
def test_server_commands_need_a_token_and_a_server(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "HEADWATER_ADMIN_TOKEN"}
    env |= {"HEADWATER_URL": url, "COLUMNS": "250"}
    run = subprocess.run([sys.executable, "-m", "headwater.cli", *command], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "HEADWATER_ADMIN_TOKEN" in run.stderr, run.stderr

    unreachable = subprocess.run(
        [sys.executable, "-m", "headwater.cli", *command],
        env=env | {"HEADWATER_ADMIN_TOKEN": "x" * 30}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unreachable.returncode == 1, unreachable.stdout
    assert f"could not reach Headwater at {url}" in unreachable.stderr, unreachable.stderr
