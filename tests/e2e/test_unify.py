"""Unify in a real ``headwater serve``: the real analytics-python SDK sends, identity
processing runs in the worker process, the Profile API answers on the main address in
Segment's shapes, the CLI and the trace show profiles, and kill -9 keeps the graph."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
from segment.analytics import Client

from tests.e2e.conftest import ADMIN_TOKEN, WRITE_KEY, Server
from tests.e2e.test_protocols import cli, wait_until

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"
SPACE = """
spaces:
  - name: main
    sources: [website, backend]
    identity:
      identifiers:
        - {type: user_id, limit: 1}
        - {type: email, limit: 5}
        - {type: anonymous_id, limit: 1000}
      blocked_values: [test@example.com, "null", "undefined", "0"]
    computed_traits:
      - {name: Orders last 30 days, type: event_counter, event: Order Completed, window: 30d}
      - {name: revenue, type: aggregation, aggregation: sum, event: Order Completed,
         property: revenue}
"""
BASIC = {"authorization": "Basic " + base64.b64encode(f"{ADMIN_TOKEN}:".encode()).decode()}
BASE = "/v1/spaces/main/collections/users/profiles"


def profile_api(server: Server, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{BASE}/{path}", params=params, headers=BASIC, timeout=10)


def send(server: Server, *calls: tuple[str, dict[str, Any]]) -> None:
    client = Client(WRITE_KEY, host=server.url, sync_mode=True, max_retries=2)
    for method, kwargs in calls:
        getattr(client, method)(**kwargs)


def found(server: Server, path: str, check: Any = None) -> Any:
    answer: dict[str, Any] = {}

    def ready() -> bool:
        response = profile_api(server, path)
        if response.status_code != 200:
            return False
        answer.update(response.json())
        return check is None or bool(check(answer))

    wait_until(f"{path} in the Profile API", ready, timeout_s=30)
    return answer


def test_profiles_through_the_worker_process(make_server: Any) -> None:
    server = make_server(SPACE)
    send(server,
         ("page", {"anonymous_id": "anon-1", "name": "Home", "message_id": "m-page"}),
         ("track", {"anonymous_id": "anon-1", "event": "Order Completed", "message_id": "m-o1",
                    "properties": {"revenue": 20}}),
         ("identify", {"anonymous_id": "anon-1", "user_id": "u-42", "message_id": "m-login",
                       "traits": {"email": "Jane@Example.com", "name": "Jane"}}),
         ("track", {"user_id": "u-42", "event": "Order Completed", "message_id": "m-o2",
                    "properties": {"revenue": 22.5}}))  # fmt: skip

    traits = found(
        server, "user_id:u-42/traits", lambda a: a["traits"].get("orders_last_30_days") == 2
    )
    assert traits["traits"] == {"email": "Jane@Example.com", "name": "Jane",
                                "orders_last_30_days": 2, "revenue": 42.5}  # fmt: skip
    cursor = traits["cursor"]
    assert set(cursor) == {"url", "has_more", "next", "limit"} and cursor["has_more"] is False
    segment_id = cursor["url"].split("/profiles/")[1].split("/")[0]
    assert segment_id.startswith("use_") and len(segment_id) == 31

    page = profile_api(server, "user_id:u-42/traits", limit=2).json()
    assert list(page["traits"]) == ["email", "name"] and page["cursor"]["has_more"] is True
    assert page["cursor"]["next"] == "orders_last_30_days"
    rest = profile_api(server, "user_id:u-42/traits", limit=2, next=page["cursor"]["next"]).json()
    assert list(rest["traits"]) == ["orders_last_30_days", "revenue"]
    verbose = profile_api(server, f"{segment_id}/traits", include="name", verbose="true").json()
    assert set(verbose["traits"]["name"]) == {"value", "source_id", "updated_at"}
    assert verbose["traits"]["name"]["source_id"] == "website"
    computed = profile_api(server, "email:jane@example.com/traits", **{"class": "computed_trait"})
    assert set(computed.json()["traits"]) == {"orders_last_30_days", "revenue"}

    ids = profile_api(server, "anonymous_id:anon-1/external_ids").json()
    assert {(d["type"], d["id"]) for d in ids["data"]} == {
        ("anonymous_id", "anon-1"),
        ("user_id", "u-42"),
        ("email", "jane@example.com"),
    }
    first = ids["data"][0]
    assert set(first) == {"source_id", "collection", "id", "type", "created_at", "encoding",
                          "first_message_id"}  # fmt: skip
    assert first["collection"] == "users" and first["encoding"] == "none"

    events = profile_api(server, "user_id:u-42/events", limit=3).json()
    assert [e["message_id"] for e in events["data"]] == ["m-o2", "m-login", "m-o1"]
    assert events["cursor"]["has_more"] is True
    newest = events["data"][0]
    assert newest["event"] == "Order Completed" and newest["properties"] == {"revenue": 22.5}
    assert newest["related"] == {"users": segment_id} and newest["source_id"] == "website"
    assert {"collection": "users", "type": "user_id", "id": "u-42",
            "encoding": "none"} in newest["external_ids"]  # fmt: skip
    older = profile_api(server, "user_id:u-42/events", next=events["cursor"]["next"]).json()
    assert [e["message_id"] for e in older["data"]] == ["m-page"]

    meta = profile_api(server, "user_id:u-42/metadata").json()["metadata"]
    assert meta["first_message_id"] == "m-page" and meta["last_message_id"] == "m-o2"
    assert meta["expires_at"] is None
    assert profile_api(server, "user_id:u-42/links").json()["data"] == []

    missing = profile_api(server, "user_id:nobody/traits")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "Profile was not found."}}
    assert "request-id" in missing.headers
    bad = profile_api(server, "phone:123/traits")
    assert (
        bad.status_code == 400 and "user_id, email, anonymous_id" in bad.json()["error"]["message"]
    )
    anonymous = httpx.get(f"{server.url}{BASE}/user_id:u-42/traits")
    assert anonymous.status_code == 401
    wrong = httpx.get(f"{server.url}{BASE}/user_id:u-42/traits", auth=("wrong-token", ""))
    assert wrong.status_code == 401

    trace = server.api("/api/v1/events/m-login").json()
    identity = [s for s in trace["stages"] if s["stage"] == "identity"]
    assert identity and identity[0]["profile"] == segment_id, trace["stages"]

    shown = cli(server, "profiles", "get", "user_id:u-42")
    assert shown.returncode == 0, shown.stderr
    assert segment_id in shown.stdout and "orders_last_30_days (computed)" in shown.stdout
    unknown = cli(server, "profiles", "get", "user_id:nobody")
    assert unknown.returncode == 1 and "no profile 'user_id:nobody'" in unknown.stderr


def test_refusals_are_explained_and_the_graph_survives_kill_9(make_server: Any) -> None:
    server = make_server(SPACE)
    send(server,
         ("identify", {"user_id": "u1", "anonymous_id": "kiosk", "message_id": "k-1"}),
         ("identify", {"user_id": "u2", "anonymous_id": "kiosk", "message_id": "k-2"}))  # fmt: skip
    found(server, "user_id:u2/traits")
    first = found(server, "user_id:u1/merges")
    assert [e["kind"] for e in first["data"]] == ["created", "refused"]
    refused = first["data"][1]
    assert refused["message_id"] == "k-2" and refused["dropped"] == "anonymous_id:kiosk"

    merges = cli(server, "profiles", "merges", "user_id:u1")
    assert merges.returncode == 0, merges.stderr
    assert "refused: anonymous_id:kiosk kept off" in merges.stdout and "k-2" in merges.stdout
    report = server.api("/api/v1/diagnose", since="1h").json()
    titles = [f["title"] for f in report["findings"]]
    assert "Identity Graph of space 'main': 1 merges refused" in titles, titles
    finding = next(f for f in report["findings"] if "merges refused" in f["title"])
    assert finding["evidence"]["samples"][0]["messageId"] == "k-2"
    send(server, ("identify", {"user_id": "u3", "traits": {"email": "test@example.com"},
                               "message_id": "b-1"}))  # fmt: skip
    found(server, "user_id:u3/traits")
    scrape = httpx.get(f"{server.url}/metrics").text  # the serve process reads the worker's graph
    problems = {frozenset(re.findall(r'(\w+)="([^"]*)"', line)): float(line.rsplit(" ", 1)[1])
                for line in scrape.splitlines()
                if line.startswith("headwater_identity_problems_total{")}  # fmt: skip
    main = {("space", "main")}
    assert problems == {frozenset(main | {("kind", "refused"), ("id_type", "anonymous_id")}): 1,
                        frozenset(main | {("kind", "blocked"), ("id_type", "email")}): 1}  # fmt: skip
    documented = re.findall(r"^\| `(headwater_identity_\w+)`", DOCS.read_text(), flags=re.M)
    assert documented == ["headwater_identity_problems_total"]

    send(server, ("track", {"anonymous_id": "web-9", "event": "Viewed", "message_id": "w-1"}))
    found(server, "anonymous_id:web-9/traits")
    before = profile_api(server, "user_id:u1/external_ids").json()["data"]
    server.kill()
    server.start()
    send(server, ("identify", {"user_id": "u1", "anonymous_id": "web-9", "message_id": "w-2"}))
    merged = found(
        server, "anonymous_id:web-9/merges", lambda a: any(e["kind"] == "merged" for e in a["data"])
    )
    linking = next(e for e in merged["data"] if e["kind"] == "merged")
    assert linking["message_id"] == "w-2"
    after = profile_api(server, "user_id:u1/external_ids").json()["data"]
    assert {d["id"] for d in after} == {d["id"] for d in before} | {"web-9"}
    events = profile_api(server, "user_id:u1/events").json()["data"]
    assert sorted(e["message_id"] for e in events) == ["k-1", "w-1", "w-2"], "none twice"

    deleted = cli(server, "profiles", "delete", "user_id:u1", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert profile_api(server, "anonymous_id:web-9/traits").status_code == 404
    assert profile_api(server, "user_id:u2/traits").status_code == 200
