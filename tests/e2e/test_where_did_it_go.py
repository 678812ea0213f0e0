"""Where did my event go? A scripted scenario through a real ``headwater serve``:

- 4 events of the ``website`` source (and the first one again: a duplicate) go to three
  webhooks: ``ok`` answers 200, ``creds`` 401 (discarded), ``flaky`` 503 (retried; its next
  attempt is minutes away, so every count stays put while the test reads);
- 2 requests with a write key no source has, 1 request whose body is not JSON;
- the ``backend`` source sends nothing.

The debugger, Event Delivery, the Delivery Overview, the trace of an event (API and
``headwater trace``) and diagnose (API and ``headwater diagnose``) must each report exactly
these outcomes and counts. ``headwater tail`` must print events sent after it started.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest

from headwater.gateway.normalize import iso_ms
from tests.e2e.conftest import ADMIN, ADMIN_TOKEN, WRITE_KEY, Server
from tests.fakes import FakeDestination, Reply, always

BAD_KEY = "wk_wrong_key_0000"  # no source has it; only its prefix may ever be shown
BAD_KEY_PREFIX = "wk_wr…"
WEBSITE_PREFIX = "wk_e2…"
DEST_AUTH = "Bearer destination-secret-creds-7f"
DEST_SECRET = "webhook-shared-secret-9c"
CHECKOUT = "Checkout [/] Started"  # brackets are text, not terminal markup, in the CLI


def workspace_yaml(ok: str, creds: str, flaky: str) -> str:
    return f"""\
destinations:
  - name: ok
    type: webhook
    sources: [website]
    settings: {{url: '{ok}'}}
  - name: creds
    type: webhook
    sources: [website]
    settings: {{url: '{creds}', shared_secret: '{DEST_SECRET}',
                headers: {{Authorization: '{DEST_AUTH}'}}}}
  - name: flaky
    type: webhook
    sources: [website]
    settings: {{url: '{flaky}'}}
    delivery: {{backoff_base_secs: 600, breaker_failures: 100}}
status: {{canary_enabled: false}}
"""


def cli(server: Server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A ``headwater`` command finding the server through the environment, as documented."""
    env = {**os.environ, "HEADWATER_URL": server.url, "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.run([sys.executable, "-m", "headwater.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)  # fmt: skip


def get(server: Server, path: str, **params: Any) -> dict[str, Any]:
    response = server.api(path, **params)
    assert response.status_code == 200, (path, response.text)
    assert BAD_KEY not in response.text, f"{path} shows the whole unknown write key"
    assert DEST_AUTH not in response.text and DEST_SECRET not in response.text, path
    body: dict[str, Any] = response.json()
    return body


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeDestination, FakeDestination, FakeDestination]]:
    with (
        FakeDestination(always(200)) as ok,
        FakeDestination(lambda _r, _i: Reply(401, b'{"error":"invalid api key"}')) as creds,
        FakeDestination(lambda _r, _i: Reply(503, b'{"error":"down for maintenance"}')) as flaky,
    ):
        yield ok, creds, flaky


def test_every_view_reports_exactly_what_happened(make_server: Any, fakes: Any) -> None:
    ok, creds, flaky = fakes
    server: Server = make_server(workspace_yaml(ok.url, creds.url, flaky.url))
    ids = [str(uuid.uuid4()) for _ in range(4)]
    names = ["Order Completed", CHECKOUT, "Order Completed", "Order Completed"]
    website = httpx.Client(base_url=server.url, auth=(WRITE_KEY, ""), timeout=10)
    anonymous = httpx.Client(base_url=server.url, timeout=10)
    with website, anonymous:
        batch = [{"type": "track", "event": name, "userId": f"u{n}", "messageId": m}
                 for n, (m, name) in enumerate(zip(ids, names, strict=True))]  # fmt: skip
        assert website.post("/v1/batch", json={"batch": batch}).status_code == 200
        again = website.post("/v1/track", json=batch[0])
        assert again.status_code == 200 and again.json()["duplicates"] == 1
        for n in range(2):
            refused = anonymous.post("/v1/track", json={"writeKey": BAD_KEY, "type": "track",
                                     "event": "Lost", "userId": "u", "messageId": f"lost-{n}"})  # fmt: skip
            assert refused.status_code == 401, refused.text
        bad_json = website.post("/v1/track", content=b'{"userId": "u", "event":',
                                headers={"content-type": "application/json"})  # fmt: skip
        assert bad_json.status_code == 400 and bad_json.json()["code"] == "invalid_json"

    # -- the Delivery Overview's ingest counts: exact at once, though counts are written
    #    to disk only every 10 s (a read includes what is pending: tests/observe/test_flow.py
    #    shows it without a clock)
    overview = get(server, "/api/v1/sources/website/overview", window="1h")
    assert (overview["received"], overview["duplicates"]) == (4, 1)
    assert overview["failedOnIngest"] == 1
    assert overview["failedOnIngestByReason"] == {"invalid_json": 1}
    assert overview["unknownWriteKeyRequests"] == 2
    assert overview["filteredAtSource"] == 0 and overview["window"]["label"] == "1h"

    # -- the debugger: events, the duplicate, the refusals (the unknown key's, redacted, too)
    debugger = get(server, "/api/v1/sources/website/debugger")
    entries = debugger["entries"]
    assert debugger["counts"] == {"accepted": 4, "duplicate": 1, "rejected": 1}
    assert Counter(e["kind"] for e in entries) == {"accepted": 4, "duplicate": 1, "rejected": 3}
    assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)
    accepted = {e["messageId"]: e for e in entries if e["kind"] == "accepted"}
    assert set(accepted) == set(ids) and accepted[ids[1]]["name"] == CHECKOUT
    [duplicate] = [e for e in entries if e["kind"] == "duplicate"]
    assert duplicate["messageId"] == ids[0]
    refusals = [e["rejection"] for e in entries if e["kind"] == "rejected"]
    assert sorted((r["scope"], r["code"], r["status"]) for r in refusals) == [
        (f"key:{BAD_KEY_PREFIX}", "invalid_write_key", 401),
        (f"key:{BAD_KEY_PREFIX}", "invalid_write_key", 401),
        ("website", "invalid_json", 400),
    ]
    unknown = [r for r in refusals if r["code"] == "invalid_write_key"]
    assert all(BAD_KEY_PREFIX in r["message"] and BAD_KEY_PREFIX in r["excerpt"] for r in unknown)
    # the unknown key's refusals belong to no source: the backend's debugger shows them too
    backend = get(server, "/api/v1/sources/backend/debugger")
    assert [e["rejection"]["code"] for e in backend["entries"]] == ["invalid_write_key"] * 2
    assert backend["counts"] == {"accepted": 0, "duplicate": 0, "rejected": 0}

    # -- Event Delivery of each destination, once every event has an outcome
    def report(name: str) -> dict[str, Any]:
        return get(server, f"/api/v1/destinations/{name}/delivery", window="1h")

    wait_for("every outcome", lambda: (report("ok")["counts"]["delivered"] == 4
                                       and report("creds")["counts"]["discarded"] == 4
                                       and report("flaky")["counts"]["retried"] == 4))  # fmt: skip
    none = {"delivered": 0, "retried": 0, "discarded": 0, "deadLettered": 0, "filtered": 0}
    stored = {e["messageId"]: e for e in server.events()}

    delivered = report("ok")
    assert delivered["counts"] == {**none, "delivered": 4}
    assert delivered["errors"] == [] and delivered["retryingNow"] == 0
    assert sum(delivered["latencyMs"]["histogram"]) == 4
    assert delivered["latencyMs"]["p50"] in delivered["latencyMs"]["bucketBoundsMs"]
    assert sum(p["delivered"] for p in delivered["series"]) == 4
    assert delivered["breaker"] == "closed"

    discarded = report("creds")
    assert discarded["counts"] == {**none, "discarded": 4}
    assert discarded["retryingNow"] == 0 and discarded["latencyMs"]["p50"] is None
    [error] = discarded["errors"]
    assert (error["state"], error["status"], error["events"], error["requests"]) == (
        "discarded", 401, 4, 4)  # fmt: skip
    sample = error["sample"]
    assert sample["messageId"] in ids
    assert sample["event"] == stored[sample["messageId"]]  # as Headwater received it
    request, answer = sample["exchange"]["request"], sample["exchange"]["response"]
    assert orjson.loads(request["body"]) == stored[sample["messageId"]]  # as it was sent
    assert request["method"] == "POST" and request["url"] == creds.url
    assert request["headers"]["Authorization"] == "[redacted]"
    assert answer["status"] == 401 and "invalid api key" in answer["body"]

    retried = report("flaky")
    assert retried["counts"] == {**none, "retried": 4}
    assert retried["retryingNow"] == 4
    received_ms = [parse_ms(stored[m]["receivedAt"]) for m in ids]
    assert retried["retryDeadlineMs"] == min(received_ms) + 4 * 3600 * 1000
    [error] = retried["errors"]
    assert (error["state"], error["status"], error["events"]) == ("retrying", 503, 4)
    assert "down for maintenance" in error["sample"]["exchange"]["response"]["body"]

    overview = get(server, "/api/v1/sources/website/overview", window="1h")
    assert overview["received"] == 4 and overview["failedOnIngest"] == 1
    assert overview["destinations"] == [
        {"destination": "ok", "type": "webhook", "sharedWith": [], "filtered": 0, "failed": 0,
         "retrying": 0, "delivered": 4},
        {"destination": "creds", "type": "webhook", "sharedWith": [], "filtered": 0, "failed": 4,
         "retrying": 0, "delivered": 0},
        {"destination": "flaky", "type": "webhook", "sharedWith": [], "filtered": 0, "failed": 0,
         "retrying": 4, "delivered": 0},
    ]  # fmt: skip

    # -- the trace of one event
    trace = get(server, f"/api/v1/events/{ids[1]}")
    assert (trace["source"], trace["type"], trace["event"]["event"]) == (
        "website",
        "track",
        CHECKOUT,
    )
    states = {d["destination"]: d for d in trace["destinations"]}
    assert {n: (d["state"], d["status"], d["attempts"]) for n, d in states.items()} == {
        "ok": ("delivered", 200, 1), "creds": ("discarded", 401, 1), "flaky": ("retrying", 503, 1),
    }  # fmt: skip
    assert states["flaky"]["nextAttemptMs"] > time.time() * 1000 + 60_000
    shown = cli(server, "trace", ids[1])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{ids[1]}  track {CHECKOUT}"
    assert "  → ok: DELIVERED after 1 attempt(s), HTTP 200" in lines
    assert "  → creds: DISCARDED after 1 attempt(s), HTTP 401" in lines
    assert "  → flaky: RETRYING after 1 attempt(s), HTTP 503" in lines
    assert "next attempt at" in shown.stdout
    missing = cli(server, "trace", "[/]no-such-event")
    assert (
        missing.returncode == 1 and "no event with messageId '[/]no-such-event'" in missing.stderr
    )

    # -- diagnose: exactly these findings, most severe first
    diagnosis = get(server, "/api/v1/diagnose", since="1h")
    assert diagnosis["healthy"] is False
    findings = diagnosis["findings"]
    window_start = diagnosis["window"]["since"]
    assert [(f["severity"], f["title"], f["events"]) for f in findings] == [
        ("critical", "destination creds: credentials invalid or rotated (401)", 4),
        ("critical", f"requests with the unknown write key {BAD_KEY_PREFIX} are refused", 2),
        ("warning", "destination flaky: degraded (503)", 4),
        ("warning", "source website: 1 refused (invalid_json)", 1),
        ("warning", f"nothing received from source backend since {window_start}", 0),
    ]
    by_title = {f["title"].split(":")[0]: f for f in findings}
    credentials = by_title["destination creds"]
    assert sorted(credentials["evidence"]["sampleMessageIds"]) == sorted(ids)
    assert credentials["destination"] == "creds"
    deadline = iso_ms(retried["retryDeadlineMs"])
    assert f"retried until {deadline}" in by_title["destination flaky"]["fix"]
    unknown_key = findings[1]
    assert f"website: {WEBSITE_PREFIX}" in unknown_key["fix"]
    assert [s["scope"] for s in unknown_key["evidence"]["samples"]] == [f"key:{BAD_KEY_PREFIX}"] * 2
    assert "2 requests with unknown write keys were refused" in findings[4]["detail"]

    for_website = get(server, "/api/v1/diagnose", since="1h", source="website")["findings"]
    assert [f["title"] for f in for_website] == [f["title"] for f in findings[:4]]  # not backend's

    printed = cli(server, "diagnose")
    assert printed.returncode == 1, printed.stderr  # something needs attention
    out = printed.stdout
    assert "CRITICAL destination creds: credentials invalid or rotated (401)" in out
    assert f"sample messageIds: {', '.join(credentials['evidence']['sampleMessageIds'])}" in out
    assert f"CRITICAL requests with the unknown write key {BAD_KEY_PREFIX} are refused" in out
    assert "WARNING destination flaky: degraded (503)" in out and deadline in out
    assert out.count("fix: ") == 5 and BAD_KEY not in out
    as_json = cli(server, "diagnose", "--json", "--destination", "flaky")
    assert as_json.returncode == 1
    assert [f["title"] for f in orjson.loads(as_json.stdout)["findings"]] == [
        f"requests with the unknown write key {BAD_KEY_PREFIX} are refused",
        "destination flaky: degraded (503)",
    ]

    # -- the counts outlive a restart (the debugger, kept in memory, starts empty)
    server.stop()
    server.start()
    overview = get(server, "/api/v1/sources/website/overview", window="1h")
    assert (overview["received"], overview["duplicates"], overview["failedOnIngest"]) == (4, 1, 1)
    assert overview["unknownWriteKeyRequests"] == 2
    assert get(server, "/api/v1/sources/website/debugger")["entries"] == []


def parse_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


class Lines:
    """The lines a process writes to one of its pipes, read in a thread so a test can wait
    for them with a timeout."""

    def __init__(self, pipe: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self.seen.append(self._queue.get(timeout=left))
            except queue.Empty:
                return False
        return True


def test_tail_prints_events_sent_after_it_started(make_server: Any) -> None:
    server: Server = make_server("status: {canary_enabled: false}\n")
    with httpx.Client(base_url=server.url, auth=(WRITE_KEY, ""), timeout=10) as website:
        earlier = website.post("/v1/track", json={"userId": "u", "event": "Before Tail",
                                                  "messageId": "before-tail"})  # fmt: skip
        assert earlier.status_code == 200
        env = {**os.environ, "HEADWATER_URL": server.url, "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
        tail = subprocess.Popen(
            [sys.executable, "-m", "headwater.cli", "tail", "--source", "website", "--history", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            out, err = Lines(tail.stdout), Lines(tail.stderr)
            assert err.wait_for("following website", 20), err.seen
            assert out.wait_for("before-tail", 5), out.seen  # the history comes first
            # "following" is printed just before the stream connects: send until one shows
            live: str | None = None
            for n in range(20):
                message_id = f"live-{n}"
                sent = website.post("/v1/track", json={"userId": "u", "event": "Live Event",
                                                       "messageId": message_id})  # fmt: skip
                assert sent.status_code == 200
                if out.wait_for(message_id, 1.0):
                    live = message_id
                    break
            assert live is not None, f"no live event was printed: {out.seen}"
            line = next(line for line in out.seen if live in line)
            assert "track" in line and "Live Event" in line
            # refusals nobody can be tied to are followed live too
            refused = httpx.post(f"{server.url}/v1/track", json={"writeKey": BAD_KEY},
                                 timeout=10)  # fmt: skip
            assert refused.status_code == 401
            assert out.wait_for("REJECTED  401 invalid_write_key", 5), out.seen
            assert BAD_KEY not in "\n".join(out.seen)
        finally:
            tail.kill()
            tail.wait(10)
            for pipe in (tail.stdout, tail.stderr):
                if pipe is not None:
                    pipe.close()


def test_the_live_debugger_is_server_sent_events_for_the_admin_only(make_server: Any) -> None:
    server: Server = make_server("status: {canary_enabled: false}\n")
    url = f"{server.url}/api/v1/sources/website/debugger/stream"
    assert httpx.get(url, timeout=10).status_code == 401
    with httpx.stream("GET", url, headers=ADMIN, timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        chunks = stream.iter_text()
        assert ": connected" in next(chunks)
        sent = httpx.post(f"{server.url}/v1/track", auth=(WRITE_KEY, ""), timeout=10,
                          json={"userId": "u", "event": "Streamed", "messageId": "sse-1"})  # fmt: skip
        assert sent.status_code == 200
        received = ""
        while "sse-1" not in received:
            received += next(chunks)
        assert received.startswith("event: entry\ndata: ")
        entry = orjson.loads(received.split("data: ", 1)[1].split("\n", 1)[0])
        assert (entry["kind"], entry["messageId"], entry["name"]) == (
            "accepted",
            "sse-1",
            "Streamed",
        )
    # the public pages stay public
    for path in ("/status", "/api/v2/summary.json", "/healthz"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path
