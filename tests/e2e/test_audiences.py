"""Audiences in a real ``headwater serve``: the real analytics-python SDK sends, the worker
process keeps the audiences, the management API and ``headwater audiences`` show sizes,
members and why, the Profile API shows the membership as a trait of class audience, and a
restart neither repeats nor loses an entry."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import Server
from tests.e2e.test_protocols import cli, wait_until
from tests.e2e.test_unify import BASE, BASIC, found, send

SPACE = """
spaces:
  - name: main
    sources: [website, backend]
    audiences:
      - key: big_spenders
        where:
          all:
            - performed: {event: Order Completed, at_least: 2, within: 30d,
                          where: 'properties.revenue > 10'}
            - trait: {name: plan, op: "!=", value: free}
            - not: {member_of: churned}
      - key: churned
        where: {trait: {name: churned, op: "=", value: true}}
"""


def audience(server: Server, key: str) -> dict[str, Any]:
    response = server.api(f"/api/v1/spaces/main/audiences/{key}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_audiences_through_the_worker_process(make_server: Any) -> None:
    server = make_server(SPACE)
    send(server,
         ("identify", {"user_id": "u-1", "traits": {"plan": "pro"}, "message_id": "m-id"}),
         ("track", {"user_id": "u-1", "event": "Order Completed", "message_id": "m-o1",
                    "properties": {"revenue": 20}}),
         ("track", {"user_id": "u-1", "event": "Order Completed", "message_id": "m-o2",
                    "properties": {"revenue": 30}}))  # fmt: skip
    wait_until("u-1 in big_spenders", lambda: audience(server, "big_spenders")["size"] == 1,
               timeout_s=30)  # fmt: skip
    doc = audience(server, "big_spenders")
    assert doc["changes"][0]["entered"] is True and doc["changes"][0]["message_id"] == "m-o2"
    assert doc["last_hour"] == {"entered": 1, "exited": 0}

    traits = httpx.get(f"{server.url}{BASE}/user_id:u-1/traits", params={"class": "audience"},
                       headers=BASIC, timeout=10).json()  # fmt: skip
    assert traits["traits"] == {"big_spenders": True}, "the membership is a trait"

    why = cli(server, "audiences", "why", "big_spenders", "user_id:u-1")
    assert why.returncode == 0, why.stderr
    assert "is a member since" in why.stdout and "2 times" in why.stdout

    send(server, ("identify", {"user_id": "u-1", "traits": {"churned": True}}))
    wait_until("u-1 out of big_spenders", lambda: audience(server, "big_spenders")["size"] == 0,
               timeout_s=30)  # fmt: skip
    listed = cli(server, "audiences", "list")
    assert listed.returncode == 0, listed.stderr
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
