"""``headwater destinations test`` as a user runs it, against a real server and the fake
destination server: a dry run sends nothing, ``--send`` shows the request (secrets
redacted) and the answer, a refusal exits 1, and the event is not in the log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.test_protocols import cli
from tests.fakes import FakeDestination, always

SECRET = "cli-test-webhook-token-42"


def hook_yaml(fake: FakeDestination) -> str:
    return (
        "destinations:\n"
        "  - name: hook\n    type: webhook\n    sources: [website]\n"
        f"    settings:\n      url: {fake.url}/in\n"
        f"      headers: {{Authorization: 'Bearer {SECRET}'}}\n"
    )


def test_destinations_test_dry_run_send_and_refusal(make_server: Any, tmp_path: Path) -> None:
    with FakeDestination() as fake:
        server = make_server(hook_yaml(fake))
        dry = cli(server, "destinations", "test", "hook")
        assert dry.returncode == 0, dry.stderr
        assert "NOT_SENT" in dry.stdout and f"POST {fake.url}/in" in dry.stdout, dry.stdout
        assert fake.requests == []

        event = tmp_path / "event.json"
        event.write_text(json.dumps({"type": "track", "event": "CLI Test", "userId": "u1",
                                     "messageId": "cli-test-1"}))  # fmt: skip
        sent = cli(server, "destinations", "test", "hook", "--event", str(event), "--send")
        assert sent.returncode == 0, sent.stderr
        [received] = fake.requests
        assert received.json()["event"] == "CLI Test"
        assert "DELIVERED (HTTP 200)" in sent.stdout and "answer: HTTP 200" in sent.stdout
        assert "Authorization: [redacted]" in sent.stdout and SECRET not in sent.stdout
        assert "not written to the log" in sent.stdout
        assert server.api("/api/v1/events/cli-test-1").status_code == 404

        fake.script = always(401, body=b'{"error":"bad token"}')
        refused = cli(server, "destinations", "test", "hook", "--send", "--json")
        assert refused.returncode == 1, refused.stdout
        doc = json.loads(refused.stdout)
        assert doc["outcome"]["result"] == "discard" and doc["outcome"]["status"] == 401

        missing = cli(server, "destinations", "test", "nope")
        assert missing.returncode == 1 and "no destination is named 'nope'" in missing.stderr
