"""The real ``@segment/analytics-node`` SDK, unchanged, run with ``node`` against a running
``headwater serve``: every event it sends is in the log exactly once, normalised.

``tests/e2e/node/send.mjs`` drives the SDK; with ``--wire`` it reports the exact JSON body of
every request, so each stored event is compared with what the SDK really posted. Needs
``node`` (>= 20) and ``npm ci --prefix tests/e2e/node``; without them these tests FAIL (CI
rule: a test that needs a real tool fails, never skips, when the tool is missing).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import WRITE_KEY, Server, assert_stored_once, parse_z

NODE_DIR = Path(__file__).parent / "node"
SEND = NODE_DIR / "send.mjs"
SDK_PACKAGE = NODE_DIR / "node_modules" / "@segment" / "analytics-node" / "package.json"
INSTALL = "run `npm ci --prefix tests/e2e/node` (`make test` does this)"
SOURCE = "website"
LIBRARY = "@segment/analytics-node"
LOCAL_IP = "127.0.0.1"
TYPES = {"track", "identify", "page", "screen", "group", "alias"}
Message = dict[str, Any]


def node_binary() -> str:
    """The ``node`` binary; fails the test (never skips) if it or the SDK is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"`node` (>= 20) is not on PATH: install Node.js 20+, then {INSTALL}")
    if not SDK_PACKAGE.is_file():
        pytest.fail(f"@segment/analytics-node is not installed in {NODE_DIR}: {INSTALL}")
    return node


def send(
    node: str, server: Server, count: int, batch_size: int, *, sdk_ids: bool = False
) -> Message:
    """Run send.mjs; return its report after checking it exited 0 with no errors."""
    cmd = [
        node, str(SEND), "--host", server.url, "--write-key", WRITE_KEY,
        "--count", str(count), "--batch-size", str(batch_size), "--wire",
    ]  # fmt: skip
    if sdk_ids:
        cmd.append("--sdk-ids")
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=60, check=False, cwd=NODE_DIR)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"send.mjs did not finish in 60s; stderr: {exc.stderr!r}")
    report: Message | None = None
    with contextlib.suppress(IndexError, orjson.JSONDecodeError):
        report = orjson.loads(done.stdout.strip().splitlines()[-1])
    errors = report["errors"] if report else None
    assert done.returncode == 0 and report is not None and not errors, (
        f"send.mjs exited {done.returncode}; errors: {(errors or [])[:5]}; "
        f"stderr: {done.stderr.decode(errors='replace')[-2000:]}; "
        f"stdout: {done.stdout.decode(errors='replace')[-500:]}"
    )
    return report


def wire_events(report: Message, count: int, batch_size: int) -> list[tuple[Message, str]]:
    """(event, the request's sentAt) for everything the SDK posted; checks the requests."""
    requests = report["requests"]
    statuses = Counter(r["status"] for r in requests)
    assert set(statuses) == {200}, f"the server answered {dict(statuses)}; every one should be 200"
    sizes = [r["events"] for r in requests]
    # Normally exactly count / batch_size full batches; the SDK's 500 ms flush timer may cut
    # one short on a slow machine, which is fine. No request may be bigger than flushAt.
    assert max(sizes) == batch_size and len(sizes) >= -(-count // batch_size), (
        f"expected batches of {batch_size}; the SDK's requests carried {sizes}"
    )
    posted = [(event, r["body"]["sentAt"]) for r in requests for event in r["body"]["batch"]]
    sent = Counter((s["messageId"], s["type"]) for s in report["sent"])
    assert sent == Counter((e["messageId"], e["type"]) for e, _ in posted), (
        "send.mjs's callbacks and the request bodies disagree about what was sent"
    )
    assert len(posted) == count, f"asked for {count} calls, the SDK posted {len(posted)}"
    return posted


def assert_stored_once_normalised(server: Server, posted: list[tuple[Message, str]]) -> None:
    stored = assert_stored_once(server, [event["messageId"] for event, _ in posted])
    for sent, sent_at in posted:
        source, event = stored[sent["messageId"]]
        assert_normalised(sent, sent_at, source, event)


def assert_normalised(sent: Message, sent_at: str, source: str, stored: Message) -> None:
    """``stored`` is exactly ``sent`` as the server must store it (SEGMENT_FACTS.md)."""
    mid = sent["messageId"]
    assert source == SOURCE, f"{mid}: stored under source {source!r}, expected {SOURCE!r}"
    assert stored["type"] == sent["type"] and sent["type"] in TYPES, (mid, stored["type"])
    assert "writeKey" not in stored, f"{mid}: the write key leaked into the stored event"
    changed = {
        key: (value, stored.get(key, "<absent>"))
        for key, value in sent.items()
        if key not in ("timestamp", "context") and stored.get(key, "<absent>") != value
    }
    assert not changed, f"{mid}: fields changed on the way in (sent, stored): {changed}"
    context = stored.get("context", {})
    assert context.get("library", {}).get("name") == LIBRARY, f"{mid}: library {context}"
    assert context == {**sent.get("context", {}), "ip": LOCAL_IP}, f"{mid}: context {context}"
    # analytics-node stamps every event and the batch with Date.toISOString(): UTC, ms, "Z".
    assert stored.get("originalTimestamp") == sent["timestamp"], (
        f"{mid}: originalTimestamp {stored.get('originalTimestamp')!r} should be the SDK's "
        f"timestamp {sent['timestamp']!r}"
    )
    assert stored.get("sentAt") == sent_at, f"{mid}: sentAt {stored.get('sentAt')} != {sent_at}"
    received = parse_z(stored.get("receivedAt"), f"{mid}: receivedAt")
    original = parse_z(sent["timestamp"], f"{mid}: the SDK's timestamp")
    skew = parse_z(sent_at, f"{mid}: the SDK's sentAt") - original
    assert timedelta(0) <= skew < timedelta(seconds=30), f"{mid}: odd SDK clock {skew}"
    assert received >= parse_z(sent_at, "sentAt"), f"{mid}: received before it was sent"
    expected = (received - skew).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert stored.get("timestamp") == expected, (
        f"{mid}: timestamp {stored.get('timestamp')} != receivedAt − (sentAt − "
        f"originalTimestamp) = {expected}"
    )


def test_node_sdk_300_events_in_batches_of_50(make_server: Callable[[], Server]) -> None:
    node = node_binary()  # before starting a server, so a missing tool fails fast
    server = make_server()
    report = send(node, server, count=300, batch_size=50)
    posted = wire_events(report, count=300, batch_size=50)
    assert {e["type"] for e, _ in posted} == TYPES
    assert all(e["messageId"].startswith("e2e-") for e, _ in posted), "explicit ids expected"
    assert_stored_once_normalised(server, posted)


def test_node_sdk_assigned_message_ids(make_server: Callable[[], Server]) -> None:
    node = node_binary()
    server = make_server()
    report = send(node, server, count=90, batch_size=15, sdk_ids=True)  # 15 is the SDK's flushAt
    posted = wire_events(report, count=90, batch_size=15)
    assert not any(e["messageId"].startswith("e2e-") for e, _ in posted), (
        "--sdk-ids should leave messageIds to the SDK"
    )
    assert_stored_once_normalised(server, posted)
