"""The server starts from the CLI, accepts an event and stores it normalised."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import WRITE_KEY, Server


def test_track_is_stored_normalised(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/track",
        json={"userId": "u1", "event": "Signed Up", "messageId": "smoke-1"},
        auth=(WRITE_KEY, ""),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    [event] = server.events()
    assert event["messageId"] == "smoke-1"
    assert event["type"] == "track" and event["event"] == "Signed Up"
    assert event["context"]["ip"] == "127.0.0.1"
    assert event["receivedAt"] and event["timestamp"]


@pytest.mark.parametrize(
    ("extra_yaml", "expected_ip"),
    [
        # uvicorn's own proxy-headers middleware trusts 127.0.0.1 by default; Headwater must not
        ("", "127.0.0.1"),
        ("gateway:\n  trusted_proxies: [127.0.0.0/8]\n", "203.0.113.9"),
    ],
    ids=["untrusted-local-peer", "trusted-proxy"],
)
def test_forwarded_for_only_from_trusted_proxies(
    make_server: Any, extra_yaml: str, expected_ip: str
) -> None:
    server = make_server(extra_yaml)
    response = httpx.post(
        f"{server.url}/v1/track",
        json={"userId": "u1", "event": "Signed Up"},
        auth=(WRITE_KEY, ""),
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert response.status_code == 200
    [event] = server.events()
    assert event["context"]["ip"] == expected_ip


def test_the_log_writer_process_dies_with_a_killed_server(server: Server) -> None:
    def writers() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if (
                        b"headwater.log.sqlite_process" in cmdline
                        and str(server.data_dir).encode() in cmdline
                    ):
                        pids.append(int(entry))
        return pids

    assert len(writers()) == 1, "the server runs its log writer as one child process"
    server.kill()
    deadline = time.monotonic() + 10
    while writers():
        assert time.monotonic() < deadline, "the writer outlived its server"
        time.sleep(0.05)
    server.start()  # the restarted server takes the log over at once
    response = httpx.post(
        f"{server.url}/v1/track", json={"userId": "u", "event": "After"}, auth=(WRITE_KEY, "")
    )
    assert response.status_code == 200
