"""Back-pressure, not loss: past its limits the gateway answers 503 + ``Retry-After``.

With a tiny ``log.disk_budget_bytes`` the server must refuse whole requests (nothing of a
refused batch is stored, so an SDK can send it again as it is), keep every event it
acknowledged exactly once, say so on ``/readyz``, and accept the refused events once it has
room again. ``log.max_pending_records`` refuses a request whose events would not fit in the
writer's queue, with reason ``overloaded``.

A refusal is decided in ``SqliteLog.append`` before anything is queued; to prove that
nothing of a refused request was queued and written later, the log is read after a graceful
stop, which lets the writer finish everything that was queued.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.conftest import WRITE_KEY, Server, write_workspace

TINY_BUDGET = "300KB"
ROOMY_BUDGET = "50MB"
BATCH_EVENTS = 50
MAX_BATCHES = 400  # ~6 MB of events: far past the tiny budget, so the loops always end
TIMEOUT = httpx.Timeout(30.0)
PAD = "x" * 200


def log_yaml(**options: object) -> str:
    return "log:\n" + "".join(f"  {key}: {value}\n" for key, value in options.items())


def batch(tag: str, n: int, size: int = BATCH_EVENTS) -> tuple[dict[str, Any], list[str]]:
    ids = [f"{tag}-b{n}-{j}" for j in range(size)]
    items = [
        {"type": "track", "userId": "u1", "event": "Filled", "messageId": mid,
         "properties": {"n": n, "pad": PAD}}
        for mid in ids
    ]  # fmt: skip
    return {"batch": items}, ids


def stored_ids(server: Server) -> list[str]:
    return [event["messageId"] for event in server.events()]


def readyz(server: Server) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=10)


def assert_refusal(response: httpx.Response, reason_words: str, retry_after: int) -> None:
    """503, a positive integer ``Retry-After`` and a JSON body that says why."""
    assert response.status_code == 503, response.text
    header = response.headers.get("retry-after")
    assert header is not None and header.isdigit() and int(header) > 0, header
    assert int(header) == retry_after
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == "unavailable"
    assert reason_words in body["message"], body["message"]
    assert "not stored" in body["message"], body["message"]


def restart_with(server: Server, extra_yaml: str) -> None:
    server.stop()
    write_workspace(server.config, extra_yaml)
    server.start()


def test_tiny_disk_budget_answers_503_and_keeps_what_it_acknowledged(make_server: Any) -> None:
    server: Server = make_server(log_yaml(disk_budget_bytes=TINY_BUDGET))
    ready = readyz(server)
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text

    acked: list[str] = []
    refused: list[tuple[dict[str, Any], list[str]]] = []
    with httpx.Client(base_url=server.url, auth=(WRITE_KEY, ""), timeout=TIMEOUT) as client:
        for n in range(MAX_BATCHES):
            body, ids = batch("fill", n)
            response = client.post("/v1/batch", json=body)
            if response.status_code != 200:
                assert_refusal(response, "over its disk budget (log.disk_budget_bytes)", 30)
                refused.append((body, ids))
                break
            assert response.json() == {"success": True}, response.text
            acked.extend(ids)
        assert refused, f"{MAX_BATCHES} batches accepted under a {TINY_BUDGET} budget"
        assert acked, "the budget is above an empty log's size: the first batches fit"
        ready = readyz(server)
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "refusing_writes"
        assert ready.json()["log"]["refusing"] == "disk_budget"
        refused_at = ready.json()["log"]["last_offset"]
        assert isinstance(refused_at, int) and refused_at >= len(acked)

        # It keeps refusing, batches and single calls alike, while over the budget.
        for n in range(MAX_BATCHES, MAX_BATCHES + 3):
            body, ids = batch("fill", n)
            response = client.post("/v1/batch", json=body)
            assert_refusal(response, "disk budget", 30)
            refused.append((body, ids))
        single = {"userId": "u1", "event": "Single", "messageId": "fill-single"}
        response = client.post("/v1/track", json=single)
        assert_refusal(response, "disk budget", 30)
        refused.append((single, ["fill-single"]))

    ready = readyz(server)
    assert ready.status_code == 503, ready.text
    assert ready.json()["status"] == "refusing_writes"
    assert ready.json()["log"] == {"refusing": "disk_budget", "last_offset": refused_at}
    assert "event log refusing writes: disk_budget" in server.output.read_text()

    # Graceful stop: the writer finishes whatever was queued, so what is in the log now is
    # everything the server will ever store from these requests.
    server.stop()
    ids = stored_ids(server)
    assert ids == acked, "every acknowledged event, once, in order, and nothing else"
    refused_ids = {m for _, batch_ids in refused for m in batch_ids}
    assert not refused_ids & set(ids), "a refused request was partly stored"

    # With room again, the SDK's retries of the refused requests are stored, once.
    restart_with(server, log_yaml(disk_budget_bytes=ROOMY_BUDGET))
    assert readyz(server).status_code == 200
    with httpx.Client(base_url=server.url, auth=(WRITE_KEY, ""), timeout=TIMEOUT) as client:
        for body, _ in refused:
            path = "/v1/batch" if "batch" in body else "/v1/track"
            response = client.post(path, json=body)
            assert response.status_code == 200, response.text
            assert response.json() == {"success": True}, "nothing of it was stored before"
        # an acknowledged request sent again is recognised, not stored twice
        body, _ = batch("fill", 0)
        response = client.post("/v1/batch", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["duplicates"] == BATCH_EVENTS
    expected = acked + [m for _, batch_ids in refused for m in batch_ids]
    assert stored_ids(server) == expected
    ready = readyz(server)
    assert ready.status_code == 200 and ready.json()["log"]["refusing"] is None, ready.text
    assert ready.json()["log"]["last_offset"] >= refused_at + len(expected) - len(acked)


@dataclass
class Outcomes:
    acked: list[list[str]] = field(default_factory=list)
    refused: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)
    other: list[tuple[int, str]] = field(default_factory=list)


async def fill_until_refused(client: httpx.AsyncClient, tag: str, out: Outcomes) -> None:
    """Send batches until this client is refused twice in a row (SDKs back off then)."""
    refusals_in_a_row = 0
    for n in range(MAX_BATCHES):
        body, ids = batch(tag, n)
        response = await client.post("/v1/batch", json=body)
        if response.status_code == 200:
            out.acked.append(ids)
            refusals_in_a_row = 0
        elif response.status_code == 503:
            assert_refusal(response, "disk budget", 30)
            out.refused.append((body, ids))
            refusals_in_a_row += 1
            if refusals_in_a_row == 2:
                return
        else:
            out.other.append((response.status_code, response.text))
            return


async def fill_concurrently(server: Server, senders: int) -> Outcomes:
    out = Outcomes()
    async with httpx.AsyncClient(
        base_url=server.url, auth=(WRITE_KEY, ""), timeout=TIMEOUT
    ) as client:
        await asyncio.wait_for(
            asyncio.gather(*(fill_until_refused(client, f"c{i}", out) for i in range(senders))),
            timeout=120,
        )
    return out


def test_concurrent_clients_over_the_budget_lose_nothing(make_server: Any) -> None:
    """Requests racing the switch to refusing: each is either stored whole or refused whole."""
    server: Server = make_server(log_yaml(disk_budget_bytes=TINY_BUDGET))
    out = asyncio.run(fill_concurrently(server, senders=8))
    assert not out.other, out.other[:3]
    assert out.acked and out.refused
    assert readyz(server).json()["log"]["refusing"] == "disk_budget"

    server.stop()  # the writer finishes what was queued
    ids = stored_ids(server)
    assert len(ids) == len(set(ids))
    assert set(ids) == {m for batch_ids in out.acked for m in batch_ids}
    refused_ids = {m for _, batch_ids in out.refused for m in batch_ids}
    assert not refused_ids & set(ids)

    restart_with(server, log_yaml(disk_budget_bytes=ROOMY_BUDGET))
    with httpx.Client(base_url=server.url, auth=(WRITE_KEY, ""), timeout=TIMEOUT) as client:
        for body, _ in out.refused:
            response = client.post("/v1/batch", json=body)
            assert response.status_code == 200, response.text
            assert response.json() == {"success": True}
    after = stored_ids(server)
    assert after[: len(ids)] == ids
    assert len(after) == len(set(after)) == len(ids) + len(refused_ids)
    assert set(after[len(ids) :]) == refused_ids


def test_a_batch_larger_than_max_pending_records_is_taken_when_nothing_waits(
    make_server: Any,
) -> None:
    # ``overloaded`` protects memory from a queue that grows faster than the writer drains
    # it; a lone request that is larger than the limit must not be refused for ever (the
    # refusal of a second request while one waits is shown in tests/log/test_sqlite.py)
    server: Server = make_server(log_yaml(max_pending_records=10))
    with httpx.Client(base_url=server.url, auth=(WRITE_KEY, ""), timeout=TIMEOUT) as client:
        body, ids = batch("pending", 0, size=BATCH_EVENTS)
        response = client.post("/v1/batch", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}
    assert readyz(server).status_code == 200
    server.stop()
    assert stored_ids(server) == ids
