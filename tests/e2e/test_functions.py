"""A source function through the real server: ``headwater functions url`` prints its URL, a
Typeform-like webhook posted to it over HTTP becomes an identify and a track in its source,
and ``functions list`` / ``logs`` / ``reload`` show and drive it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_protocols import cli, wait_until

TYPEFORM = """
from headwater.functions import EventNotSupported, analytics


def on_request(request, settings):
    body = request.json()
    if body.get("event_type") != "form_response":
        raise EventNotSupported(f"{body.get('event_type')} is not a form response")
    response = body["form_response"]
    user = response["hidden"]["user_id"]
    email = next(a["email"] for a in response["answers"] if a["type"] == "email")
    print(settings.get("label", "form"), response["form_id"], "answered by", user)
    analytics.identify(user_id=user, message_id=body["event_id"] + "-id", traits={"email": email})
    return {"type": "track", "event": "Form Submitted", "userId": user,
            "messageId": body["event_id"], "properties": {"form_id": response["form_id"]}}
"""

WEBHOOK = {
    "event_id": "01HZX4F1TQ6Y7R8K9M0N2P3Q4R",
    "event_type": "form_response",
    "form_response": {
        "form_id": "lT4Z3j",
        "token": "a3a12ec67a1365927098a606107fac15",
        "submitted_at": "2026-12-06T10:00:00Z",
        "hidden": {"user_id": "u-7"},
        "answers": [
            {"type": "email", "email": "jane@example.com", "field": {"id": "f1", "ref": "email"}},
            {"type": "choice", "choice": {"label": "Pro"}, "field": {"id": "f2", "ref": "plan"}},
        ],
    },
}


def test_a_source_function_through_the_real_server(make_server: Any, tmp_path: Path) -> None:
    code = tmp_path / "typeform.py"
    code.write_text(TYPEFORM)
    server = make_server(
        f"functions:\n  - name: typeform\n    kind: source\n    file: {code}\n    source: backend\n"
    )
    printed = cli(server, "functions", "url", "typeform")
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert "\n" not in url and url.startswith(f"{server.url}/v1/functions/typeform/")

    answer = httpx.post(url, json=WEBHOOK, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "accepted": 2}
    trace = server.api(f"/api/v1/events/{WEBHOOK['event_id']}")
    assert trace.status_code == 200 and trace.json()["source"] == "backend"
    assert trace.json()["event"]["properties"] == {"form_id": "lT4Z3j"}
    identify = server.api(f"/api/v1/events/{WEBHOOK['event_id']}-id").json()
    assert identify["event"]["traits"] == {"email": "jane@example.com"}

    ping = httpx.post(url, json={"event_type": "ping"}, timeout=30)
    assert ping.status_code == 400 and "ping is not a form response" in ping.json()["message"]
    assert httpx.post(url + "x", json=WEBHOOK, timeout=30).status_code == 404

    def logged() -> bool:
        shown = cli(server, "functions", "logs", "typeform")
        return shown.returncode == 0 and "form lT4Z3j answered by u-7" in shown.stdout

    wait_until("the function's print in `functions logs`", logged, timeout_s=30)
    listed = cli(server, "functions", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "typeform" in line)
    assert "source" in row and "backend" in row and "running" in row
    reloaded = cli(server, "functions", "reload")
    assert reloaded.returncode == 0 and "typeform" in reloaded.stdout

    # a reload re-reads the workspace file: settings apply at once, a broken file changes
    # nothing, a new function is named as needing a restart
    declared = server.config.read_text()
    server.config.write_text(declared + "  - {name: crm, kind: destination, file: nope.py\n")
    broken = cli(server, "functions", "reload")
    assert broken.returncode != 0 and "nothing was reloaded" in broken.stderr, broken.stderr
    (tmp_path / "crm.py").write_text("def on_track(event, settings):\n    pass\n")
    server.config.write_text(
        declared.replace("source: backend\n", "source: backend\n    settings: {label: survey}\n")
        + f"  - {{name: crm, kind: destination, file: {tmp_path / 'crm.py'}, sources: [backend]}}\n"
    )
    reloaded = cli(server, "functions", "reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert "Needs a restart: function 'crm' is new" in reloaded.stderr

    def relabelled() -> bool:
        httpx.post(url, json=WEBHOOK, timeout=30)
        shown = cli(server, "functions", "logs", "typeform")
        return "survey lT4Z3j answered by u-7" in shown.stdout

    wait_until("the new settings in use", relabelled, timeout_s=30)
    missing = cli(server, "functions", "url", "nope")
    assert missing.returncode != 0 and "no function is named 'nope'" in missing.stderr
