"""Audiences in a real ``headwater serve``: the real analytics-python SDK sends, the worker
process keeps the audiences, the management API and ``headwater audiences`` show sizes,
members and why, the Profile API shows the membership as a trait of class audience, and a
restart neither repeats nor loses an entry."""

from __future__ import annotations

from typing import Any

import httpx

from tests.console.test_console import _form_csrf
from tests.e2e.conftest import ADMIN_TOKEN, Server
from tests.e2e.test_protocols import cli, wait_until
from tests.e2e.test_unify import BASE, BASIC, found, send
from tests.fakes import FakeDestination

SPACE = """
destinations:
  - {{name: crm, type: webhook, sources: [backend], settings: {{url: '{url}/crm'}},
     delivery: {{batch_max_events: 1}}}}
  - {{name: ads, type: webhook, sources: [backend], settings: {{url: '{url}/ads'}}}}
spaces:
  - name: main
    sources: [website, backend]
    audiences:
      - key: big_spenders
        where:
          all:
            - performed: {{event: Order Completed, at_least: 2, within: 30d,
                          where: 'properties.revenue > 10'}}
            - trait: {{name: plan, op: "!=", value: free}}
            - not: {{member_of: churned}}
        destinations: [{{name: crm, identify: true, track: true}}]
      - key: churned
        where: {{trait: {{name: churned, op: "=", value: true}}}}
        destinations: [{{name: ads}}]
      - key: viewed_then_bought
        where: {{funnel: {{steps: [Product Viewed, Order Completed], within: 1h}}}}
"""


def audience(server: Server, key: str) -> dict[str, Any]:
    response = server.api(f"/api/v1/spaces/main/audiences/{key}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_audiences_through_the_worker_process(make_server: Any) -> None:
    fake = FakeDestination().start()
    try:
        check_audiences_and_activations(make_server(SPACE.format(url=fake.url)), fake)
    finally:
        fake.stop()


def activations(fake: FakeDestination, path: str) -> list[dict[str, Any]]:
    return [
        e
        for r in fake.requests
        if r.path == path
        for e in r.events()
        if str(e.get("messageId", "")).startswith("engage-")
    ]


def check_audiences_and_activations(server: Server, fake: FakeDestination) -> None:
    send(server,
         ("identify", {"user_id": "u-1", "traits": {"plan": "pro", "email": "u1@example.com"},
                       "message_id": "m-id"}),
         ("track", {"user_id": "u-1", "event": "Product Viewed", "message_id": "m-v1"}),
         ("track", {"user_id": "u-1", "event": "Order Completed", "message_id": "m-o1",
                    "properties": {"revenue": 20}}),
         ("track", {"user_id": "u-1", "event": "Order Completed", "message_id": "m-o2",
                    "properties": {"revenue": 30}}))  # fmt: skip
    wait_until("u-1 in big_spenders", lambda: audience(server, "big_spenders")["size"] == 1,
               timeout_s=30)  # fmt: skip
    doc = audience(server, "big_spenders")
    assert doc["changes"][0]["entered"] is True and doc["changes"][0]["message_id"] == "m-o2"
    funnel = audience(server, "viewed_then_bought")
    # the change names the profile's last event of the batch after which the funnel held
    assert funnel["size"] == 1 and funnel["changes"][0]["message_id"] in ("m-o1", "m-o2")
    assert doc["last_hour"] == {"entered": 1, "exited": 0}

    traits = httpx.get(f"{server.url}{BASE}/user_id:u-1/traits", params={"class": "audience"},
                       headers=BASIC, timeout=10).json()  # fmt: skip
    assert traits["traits"] == {"big_spenders": True, "viewed_then_bought": True}, "traits"

    why = cli(server, "audiences", "why", "big_spenders", "user_id:u-1")
    assert why.returncode == 0, why.stderr
    assert "is a member since" in why.stdout and "2 times" in why.stdout

    send(server, ("identify", {"user_id": "u-1", "traits": {"churned": True}}))
    wait_until("u-1 out of big_spenders", lambda: audience(server, "big_spenders")["size"] == 0,
               timeout_s=30)  # fmt: skip
    listed = cli(server, "audiences", "list")
    assert listed.returncode == 0, listed.stderr
    shown = cli(server, "audiences", "show", "big_spenders")
    assert shown.returncode == 0 and "0 members" in shown.stdout, shown.stdout
    assert "exited" in shown.stdout and "entered" in shown.stdout
    row = next(line for line in listed.stdout.splitlines() if "churned" in line)
    assert " 1 " in row, row

    server.stop()
    server.start()
    send(server, ("track", {"user_id": "u-1", "event": "Signed In", "message_id": "m-after"}))
    found(server, "user_id:u-1/events", lambda doc: any(
        e.get("message_id") == "m-after" for e in doc["data"]))  # fmt: skip
    doc = audience(server, "big_spenders")
    assert [c["entered"] for c in doc["changes"]] == [False, True], "no entry repeated"
    missing = server.api("/api/v1/spaces/main/audiences/nope")
    assert missing.status_code == 404 and "big_spenders, churned" in missing.text
    check_console(server)

    # activation: the entry and the exit to crm, as identify and track; churned's entry to
    # ads (identify only); each destination only its audiences' (integrations)
    wait_until("the activations", lambda: len(activations(fake, "/crm")) == 4
               and len(activations(fake, "/ads")) == 1, timeout_s=30)  # fmt: skip
    crm = activations(fake, "/crm")
    entered_identify, entered_track, exited_identify, exited_track = crm
    personas = entered_identify["context"]["personas"]
    assert personas["computation_class"] == "audience"
    assert personas["computation_key"] == "big_spenders"
    assert personas["computation_id"].startswith("aud_")
    assert personas["space_id"].startswith("spa_") and personas["namespace"] == personas["space_id"]
    assert entered_identify["type"] == "identify" and entered_identify["userId"] == "u-1"
    assert entered_identify["traits"] == {"big_spenders": True, "email": "u1@example.com"}
    assert entered_identify["integrations"] == {"All": False, "crm": True}
    assert entered_track["type"] == "track" and entered_track["event"] == "Audience Entered"
    assert entered_track["properties"] == {"audience_key": "big_spenders", "big_spenders": True}
    assert exited_identify["traits"]["big_spenders"] is False
    assert exited_track["event"] == "Audience Exited"
    assert exited_track["properties"] == {"audience_key": "big_spenders", "big_spenders": False}
    (ads,) = activations(fake, "/ads")
    assert ads["type"] == "identify" and ads["traits"]["churned"] is True
    trace = server.api(f"/api/v1/events/{entered_track['messageId']}").json()
    assert trace["source"] == "engage-main", "an activation is an event like any other"
    ads_ledger = [d for d in trace["destinations"] if d["destination"] == "ads"]
    assert ads_ledger and ads_ledger[0]["state"] == "filtered", "not ads' audience"


PAUSABLE = """
destinations:
  - {{name: crm, type: webhook, sources: [backend], settings: {{url: '{url}/crm'}}}}
spaces:
  - name: main
    sources: [website]
    audiences:
      - key: vip
        where: {{trait: {{name: plan, op: "=", value: vip}}}}
        destinations: [{{name: crm}}]
"""


def test_a_paused_sync_sends_the_net_changes_on_resume(make_server: Any) -> None:
    fake = FakeDestination().start()
    try:
        server = make_server(PAUSABLE.format(url=fake.url))

        def plan(user: str, value: str) -> tuple[str, dict[str, Any]]:
            return ("identify", {"user_id": user, "traits": {"plan": value}})

        def size() -> int:
            return int(audience(server, "vip")["size"])

        send(server, plan("u-4", "vip"))
        wait_until("u-4's entry sent", lambda: len(activations(fake, "/crm")) == 1, timeout_s=30)
        paused = cli(server, "audiences", "pause", "vip", "crm")
        assert paused.returncode == 0 and "is paused since" in paused.stdout, paused.stderr
        assert audience(server, "vip")["destinations"][0]["paused"] is True
        send(server, plan("u-2", "vip"), plan("u-3", "vip"))
        wait_until("two more members", lambda: size() == 3, timeout_s=30)
        send(server, plan("u-3", "free"), plan("u-4", "free"))
        wait_until("two exits", lambda: size() == 1, timeout_s=30)
        assert len(activations(fake, "/crm")) == 1, "nothing sent while paused"

        resumed = cli(server, "audiences", "resume", "vip", "crm")
        assert resumed.returncode == 0, resumed.stderr
        assert "2 message(s) for 2 profile(s)" in resumed.stdout
        wait_until("the net changes", lambda: len(activations(fake, "/crm")) == 3, timeout_s=30)
        net = {(e["userId"], e["traits"]["vip"]) for e in activations(fake, "/crm")[1:]}
        assert net == {("u-2", True), ("u-4", False)}, "u-3 went in and out: nothing for it"
        again = cli(server, "audiences", "resume", "vip", "crm")
        assert again.returncode != 0 and "is not paused" in again.stderr

        send(server, plan("u-5", "vip"))
        wait_until("live again", lambda: len(activations(fake, "/crm")) == 4, timeout_s=30)
        trail = server.api("/api/v1/audit").json()
        actions = [e["action"] for e in trail["entries"] if "audiences/main/vip/crm" in
                   e["resource"]]  # fmt: skip
        assert sorted(actions) == ["pause", "resume"], "who paused and resumed, in the audit"
    finally:
        fake.stop()


def test_an_audience_added_later_is_backfilled_from_the_log(make_server: Any) -> None:
    fake = FakeDestination().start()
    try:
        before = PAUSABLE.format(url=fake.url).split("    audiences:")[0]  # the space alone
        server = make_server(before)
        send(server,
             ("identify", {"user_id": "u-7", "traits": {"plan": "vip"}, "message_id": "m-7"}),
             ("identify", {"user_id": "u-8", "traits": {"plan": "free"}, "message_id": "m-8"}),
             ("track", {"user_id": "u-8", "event": "Order Completed", "message_id": "m-8o"}))  # fmt: skip
        found(server, "user_id:u-8/traits", lambda doc: doc["traits"].get("plan") == "free")
        server.stop()
        config = server.config.read_text()
        later = PAUSABLE.format(url=fake.url).strip("\n") + (
            "\n      - key: buyers\n        where: {performed: {event: Order Completed}}"
        )
        server.config.write_text(config.replace(before.strip("\n"), later))
        server.start()

        def ready() -> bool:
            docs = [audience(server, "vip"), audience(server, "buyers")]
            return all(d["backfill"]["state"] == "ready" and d["size"] == 1 for d in docs)

        wait_until("the backfill", ready, timeout_s=30)
        wait_until("the member's entry sent", lambda: len(activations(fake, "/crm")) == 1,
                   timeout_s=30)  # fmt: skip
        (entry,) = activations(fake, "/crm")
        assert entry["userId"] == "u-7" and entry["traits"]["vip"] is True
        buyers = audience(server, "buyers")
        assert buyers["backfill"]["counted_offsets"] == buyers["backfill"]["history_offsets"] > 0
        assert server.api("/api/v1/spaces/main/audiences/buyers/why/user_id:u-8").json()[
            "why"]["says"] == "Order Completed at least 1 times: 1 time"  # fmt: skip
    finally:
        fake.stop()


def check_console(server: Server) -> None:
    """The console's audience pages: sizes, the 24 hours, the latest changes, why."""
    with httpx.Client(base_url=server.url, timeout=10, follow_redirects=True) as client:
        page = client.get("/console/login")
        signed = client.post("/console/login", data={"csrf_token": _form_csrf(page.text),
                                                      "token": ADMIN_TOKEN, "next": "/console/"})  # fmt: skip
        assert signed.status_code == 200, signed.text
        listing = client.get("/console/audiences")
        assert listing.status_code == 200 and 'data-audience="big_spenders"' in listing.text
        assert 'href="/console/audiences"' in listing.text, "in the navigation"
        one = client.get("/console/audiences/main/big_spenders", params={"id": "user_id:u-1"})
        assert one.status_code == 200, one.text
        assert 'data-member="no"' in one.text and "not a member of churned" not in one.text
        assert "a member of churned" in one.text, "why: the not member_of churned fails"
        assert "m-o2" in one.text, "the entry's cause, linked to its trace"
        unknown = client.get("/console/audiences/main/big_spenders", params={"id": "user_id:x"})
        assert unknown.status_code == 404 and "No profile" in unknown.text
