"""`headwater send`: one test event to a running server, and a clear answer."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.conftest import WRITE_KEY, Server, free_port


def headwater(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_send_track_with_properties(server: Server) -> None:
    result = headwater(
        "send", "--url", server.url, "--write-key", WRITE_KEY, "--event", "Order Completed",
        "--user-id", "u-42", "-p", "revenue=19.99", "-p", "currency=EUR", "-p", 'tags=["a","b"]',
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "200" in result.stdout and '"success":true' in result.stdout
    [event] = server.events()
    assert event["event"] == "Order Completed" and event["userId"] == "u-42"
    assert event["properties"] == {"revenue": 19.99, "currency": "EUR", "tags": ["a", "b"]}
    assert event["messageId"] in result.stdout


def test_send_identify_with_traits(server: Server) -> None:
    result = headwater("send", "--url", server.url, "-k", WRITE_KEY, "--type", "identify",
                       "--trait", "plan=pro")  # fmt: skip
    assert result.returncode == 0, result.stdout
    [event] = server.events()
    assert event["type"] == "identify" and event["traits"] == {"plan": "pro"}
    assert event["anonymousId"].startswith("cli-")


def test_send_with_a_wrong_key_shows_the_error(server: Server) -> None:
    result = headwater("send", "--url", server.url, "-k", "wk_wrong_0000")
    assert result.returncode == 1
    assert "401" in result.stdout and "invalid_write_key" in result.stdout


def test_send_with_no_server_says_so() -> None:
    result = headwater("send", "--url", f"http://127.0.0.1:{free_port()}", "-k", WRITE_KEY)
    assert result.returncode == 1
    assert "Could not reach Headwater" in result.stderr
