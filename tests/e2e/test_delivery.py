"""Delivery end to end: real ``headwater serve`` processes, fake destinations, the real SDK.

- ``kill -9`` during delivery: after a restart every accepted event reaches the destination
  at least once; the test reports how many arrived twice.
- ``segment-analytics-python`` → Headwater → ``segment`` destination → a second Headwater:
  the events arrive intact.
- ``headwater replay`` and ``headwater deadletter`` deliver exactly the selected events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import orjson
from segment.analytics import Client

from tests.e2e.conftest import ADMIN_TOKEN, OTHER_KEY, WRITE_KEY, Server, free_port
from tests.fakes import FakeDestination, always

BATCH = 100


def webhook_yaml(url: str, name: str = "hook", **delivery: Any) -> str:
    lines = [
        "destinations:",
        f"  - name: {name}",
        "    type: webhook",
        "    sources: [website]",
        f"    settings: {{url: '{url}'}}",
    ]
    if delivery:
        lines.append("    delivery: {" + ", ".join(f"{k}: {v}" for k, v in delivery.items()) + "}")
    return "\n".join(lines) + "\n"


def post_batches(server: Server, ids: list[str], key: str = WRITE_KEY) -> None:
    with httpx.Client(base_url=server.url, auth=(key, ""), timeout=30) as client:
        for i in range(0, len(ids), BATCH):
            batch = [
                {"type": "track", "event": "Order Completed", "userId": f"u{n}", "messageId": m,
                 "properties": {"n": n}}
                for n, m in enumerate(ids[i : i + BATCH], start=i)
            ]  # fmt: skip
            response = client.post("/v1/batch", json={"batch": batch})
            assert response.status_code == 200, response.text


def delivered_ids(fake: FakeDestination) -> Counter[str]:
    return Counter(e["messageId"] for e in fake.events(200))


def cli(
    server: Server, *args: str, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "headwater.cli", *args]
    env = {**os.environ, "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.run(
        [*cmd, "--data-dir", str(server.data_dir)] if args[0] != "devsink" else cmd,
        capture_output=True, text=True, timeout=60, input=input_text, env=env,
    )  # fmt: skip


def test_kill_9_during_delivery_loses_nothing(make_server: Any) -> None:
    # a slow destination, so the kill comes while much is still queued or in flight
    with FakeDestination(always(200, delay_secs=0.01)) as fake:
        server = make_server(webhook_yaml(fake.url, concurrency=4))
        ids = [str(uuid.uuid4()) for _ in range(3000)]
        post_batches(server, ids)
        fake.wait_for(lambda f: len(f.requests) >= 300)
        server.kill()
        before = len(delivered_ids(fake))
        assert before < len(ids), "everything was delivered before the kill; slow the fake"
        server.start()
        fake.wait_for(lambda f: set(ids) <= set(delivered_ids(f)), timeout=60)
        counts = delivered_ids(fake)
        duplicates = sum(n - 1 for n in counts.values() if n > 1)
        print(f"\nkill -9 during delivery: {before} of {len(ids)} delivered before the kill; "
              f"{duplicates} duplicate deliveries after the restart")  # fmt: skip
        assert set(counts) == set(ids)
        # at most what was in flight or not yet recorded when the process died
        assert duplicates <= 200, f"{duplicates} duplicates: the cursor is not kept up to date"


def test_sdk_to_headwater_to_segment_destination_to_headwater(make_server: Any) -> None:
    downstream = make_server()
    upstream = make_server(
        "destinations:\n"
        "  - name: tee\n    type: segment\n    sources: [website]\n"
        f"    settings: {{url: '{downstream.url}', write_key: {OTHER_KEY}}}\n"
    )
    client = Client(WRITE_KEY, host=upstream.url, sync_mode=False, gzip=True, max_retries=2)
    sent = []
    for n in range(50):
        _, msg = client.track(f"user-{n}", "Order Completed",
                              {"revenue": n * 1.5, "items": [{"sku": f"s{n}"}], "nested": {"a": n}},
                              context={"app": {"name": "shop"}})  # fmt: skip
        sent.append(msg)
    _, ident = client.identify("user-1", {"email": "a@example.com", "plan": "pro"})
    sent.append(ident)
    client.flush()
    client.shutdown()
    by_id = {m["messageId"]: m for m in sent}

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = downstream.rows()
        if len(rows) >= len(by_id):
            break
        time.sleep(0.1)
    received = {e["messageId"]: (s, e) for s, e in ((s, orjson.loads(p))
                                                    for s, p in downstream.rows())}  # fmt: skip
    assert set(received) == set(by_id), "not every event reached the second Headwater"
    assert len(downstream.rows()) == len(by_id), "an event arrived twice"
    upstream_events = {e["messageId"]: e for e in upstream.events()}
    for mid, msg in by_id.items():
        source, event = received[mid]
        assert source == "backend"  # the downstream source whose write key the tee uses
        original = upstream_events[mid]
        assert event["type"] == msg["type"]
        for key in ("userId", "event", "properties", "traits"):
            assert event.get(key) == original.get(key), f"{key} changed on the way: {mid}"
        assert event["timestamp"] == original["timestamp"], "the timestamp changed on the way"
        assert event["context"]["library"] == original["context"]["library"]
        assert event["context"].get("app") == original["context"].get("app")


def test_replay_sends_exactly_the_window(make_server: Any) -> None:
    with FakeDestination() as fake:
        # no canary: the counts below are of this test's events only
        server = make_server(
            webhook_yaml(fake.url, batch_max_events=50) + "status: {canary_enabled: false}\n"
        )
        early = [str(uuid.uuid4()) for _ in range(120)]
        post_batches(server, early)
        fake.wait_for(lambda f: set(early) <= set(delivered_ids(f)))
        time.sleep(1.1)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        time.sleep(1.1)
        late = [str(uuid.uuid4()) for _ in range(80)]
        post_batches(server, late)
        post_batches(server, [str(uuid.uuid4()) for _ in range(30)], key=OTHER_KEY)
        fake.wait_for(lambda f: set(late) <= set(delivered_ids(f)))

        dry = cli(server, "replay", "--destination", "hook", "--since", since, "--dry-run",
                  "--config", str(server.config))  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        assert "80 would be sent" in dry.stdout and "30 skipped" in dry.stdout, dry.stdout
        time.sleep(0.5)
        assert delivered_ids(fake) == Counter(early + late), "a dry run sent something"

        run = cli(server, "replay", "--destination", "hook", "--since", since,
                  "--config", str(server.config))  # fmt: skip
        assert run.returncode == 0, run.stderr + run.stdout
        assert "80 sent" in run.stdout, run.stdout
        fake.wait_for(lambda f: sum(delivered_ids(f).values()) >= 280)
        time.sleep(0.3)
        assert delivered_ids(fake) == Counter(early + late + late), "replay sent the wrong events"


def test_dead_letters_listed_redriven_and_purged(make_server: Any) -> None:
    port = free_port()  # nothing listens here yet: connection refused
    server = make_server(
        webhook_yaml(
            f"http://127.0.0.1:{port}",
            retry_window_secs=1,
            backoff_base_secs=0.2,
            breaker_probe_secs=0.2,
        )
    )
    ids = [str(uuid.uuid4()) for _ in range(30)]
    post_batches(server, ids)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = cli(server, "deadletter", "list", "--json", "--limit", "1000")
        if listed.stdout.count("\n") >= len(ids):
            break
        time.sleep(0.3)
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["messageId"] for r in rows) == sorted(ids)
    assert all("cannot connect" in r["reason"] for r in rows), rows[0]["reason"]

    trace = server.api(f"/api/v1/events/{ids[0]}").json()
    [hook] = trace["destinations"]
    assert hook["state"] == "dead_lettered" and hook["terminal"], hook
    assert hook["deadLetterId"] is not None and "cannot connect" in hook["reason"]
    assert hook["history"][-1]["exchange"]["response"]["error"] == "connect"
    unknown = server.api("/api/v1/events/nope")
    assert unknown.status_code == 404 and "7 days" in unknown.json()["message"]

    table = cli(server, "deadletter", "list")
    assert "30 shown of 30" in table.stdout, table.stdout

    purge_one = cli(server, "deadletter", "purge", "--id", str(rows[0]["id"]), "--yes")
    assert "Purged 1" in purge_one.stdout, purge_one.stdout + purge_one.stderr

    refused = cli(server, "deadletter", "retry")
    assert refused.returncode != 0 and "--all" in refused.stderr, refused.stderr

    with FakeDestination(port=port) as fake:  # the destination comes back
        redo = cli(server, "deadletter", "retry", "--destination", "hook",
                   "--config", str(server.config))  # fmt: skip
        assert "hook: 29 event(s) queued" in redo.stdout, redo.stdout + redo.stderr
        fake.wait_for(lambda f: len(delivered_ids(f)) >= 29)
        time.sleep(0.3)
        assert delivered_ids(fake) == Counter(r["messageId"] for r in rows[1:])
    assert "No dead letters" in cli(server, "deadletter", "list").stdout
