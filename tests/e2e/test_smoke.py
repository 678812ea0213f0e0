"""The server starts from the CLI, accepts an event and stores it normalised."""

from __future__ import annotations

import httpx

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
