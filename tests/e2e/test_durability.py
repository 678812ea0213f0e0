"""Ack means durable: ``kill -9`` of the server under load loses no acknowledged event.

Many concurrent clients send single calls and batches, each event with its own
``messageId``; the server is killed with SIGKILL while requests are in flight, then started
again on the same data directory. Every event whose request got a 2xx must be in the log,
exactly once; the requests that failed or were cut are sent again (what an SDK does), and an
event that had been committed before its answer was lost must be recognised as a duplicate.
Both ``durability`` settings must pass: ``os`` only gives up power-loss safety, not safety
against a crash of the process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import WRITE_KEY, Server

SENDERS = 24  # concurrent clients
BATCH_EVENTS = 50
MAX_REQUESTS_PER_SENDER = 400  # the load stops by itself even if the kill never came
KILL_AFTER_ACKED_REQUESTS = 300
KILL_AFTER_SECS = 1.5  # ... or this long after the start, once a few requests are acked
MIN_ACKED_REQUESTS = 5
LOAD_DEADLINE_SECS = 15.0  # the test fails rather than waiting longer for acks
RESEND_CHUNK = 500  # events per request when re-sending acknowledged events
TIMEOUT = httpx.Timeout(30.0)


@dataclass
class Sent:
    """One request of the load: its endpoint, its body and the message ids it carries."""

    path: str
    body: dict[str, Any]
    ids: list[str]


@dataclass
class Load:
    acked: list[Sent] = field(default_factory=list)  # got a 2xx
    failed: list[Sent] = field(default_factory=list)  # got no answer, or a refusal
    refusals: list[tuple[int, str]] = field(default_factory=list)  # non-2xx (status, body)
    errors_before_kill: list[str] = field(default_factory=list)
    in_flight: int = 0
    in_flight_at_kill: int = 0
    killed: bool = False

    @property
    def acked_ids(self) -> set[str]:
        return {i for s in self.acked for i in s.ids}

    @property
    def failed_ids(self) -> set[str]:
        return {i for s in self.failed for i in s.ids}


def make_request(tag: str, sender: int, seq: int) -> Sent:
    """Even requests are batches of ``BATCH_EVENTS``, odd ones single ``/v1/track`` calls."""
    prefix = f"{tag}-s{sender}-r{seq}"
    user = f"user-{sender}"
    if seq % 2:
        mid = f"{prefix}-0"
        props = {"sender": sender, "seq": seq}
        body = {"userId": user, "event": "Single", "messageId": mid, "properties": props}
        return Sent("/v1/track", body, [mid])
    items: list[dict[str, Any]] = []
    for j in range(BATCH_EVENTS):
        item: dict[str, Any] = {"userId": user, "messageId": f"{prefix}-{j}"}
        if j % 10 == 9:
            item |= {"type": "identify", "traits": {"seq": seq}}
        else:
            item |= {"type": "track", "event": "Batched", "properties": {"seq": seq, "j": j}}
        items.append(item)
    return Sent("/v1/batch", {"batch": items}, [item["messageId"] for item in items])


async def sender(client: httpx.AsyncClient, load: Load, tag: str, number: int) -> None:
    for seq in range(MAX_REQUESTS_PER_SENDER):
        if load.killed:
            return
        request = make_request(tag, number, seq)
        load.in_flight += 1
        try:
            response = await client.post(request.path, json=request.body)
        except httpx.HTTPError as exc:
            load.failed.append(request)
            if not load.killed:
                load.errors_before_kill.append(repr(exc))
            return  # the server is gone: this client stops like an SDK would, keeping it
        finally:
            load.in_flight -= 1
        if response.is_success:
            load.acked.append(request)
        else:
            load.failed.append(request)
            load.refusals.append((response.status_code, response.text))


async def load_and_kill(server: Server, tag: str) -> Load:
    """Run the load, SIGKILL the server while requests are in flight, let the load end."""
    load = Load()
    limits = httpx.Limits(max_connections=SENDERS, max_keepalive_connections=SENDERS)
    async with httpx.AsyncClient(
        base_url=server.url, auth=(WRITE_KEY, ""), timeout=TIMEOUT, limits=limits
    ) as client:
        tasks = [asyncio.create_task(sender(client, load, tag, n)) for n in range(SENDERS)]
        started = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started
            enough = len(load.acked) >= KILL_AFTER_ACKED_REQUESTS or (
                elapsed >= KILL_AFTER_SECS and len(load.acked) >= MIN_ACKED_REQUESTS
            )
            if enough or all(t.done() for t in tasks) or elapsed > LOAD_DEADLINE_SECS:
                break
        # Nothing else runs on this loop while we kill: every sender still running is
        # awaiting its request, so ``in_flight`` counts the requests the kill cuts into.
        load.in_flight_at_kill = load.in_flight
        load.killed = True
        server.kill()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    assert len(load.acked) >= MIN_ACKED_REQUESTS, (
        f"only {len(load.acked)} requests acknowledged in {LOAD_DEADLINE_SECS}s; "
        f"refusals: {load.refusals[:3]}, errors: {load.errors_before_kill[:3]}"
    )
    return load


def last_offset(server: Server) -> int:
    """The log's newest offset, as ``/readyz`` reports it; the server must be ready."""
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    offset = ready.json()["log"]["last_offset"]
    assert isinstance(offset, int), ready.text
    return offset


def post(client: httpx.Client, request: Sent) -> dict[str, Any]:
    response = client.post(request.path, json=request.body)
    assert response.status_code == 200, (request.path, response.status_code, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def duplicates_in(answer: dict[str, Any]) -> int:
    return int(answer.get("duplicates", 0))


def chunks(ids: list[str], size: int) -> list[Sent]:
    """Re-send events as plain batches (what the server stores is the same track event)."""
    out: list[Sent] = []
    for start in range(0, len(ids), size):
        part = ids[start : start + size]
        items = [{"type": "track", "userId": "u", "event": "Resent", "messageId": m} for m in part]
        out.append(Sent("/v1/batch", {"batch": items}, part))
    return out


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_kill_9_under_load_keeps_every_acknowledged_event(
    make_server: Any, durability: str
) -> None:
    server: Server = make_server(f"log:\n  durability: {durability}\n")
    tag = f"kill9-{durability}"

    load = asyncio.run(load_and_kill(server, tag))

    assert not load.errors_before_kill, load.errors_before_kill[:5]
    # Back-pressure is a legitimate answer under load (SDKs keep and re-send); nothing else is.
    assert all(status == 503 for status, _ in load.refusals), load.refusals[:5]
    assert load.in_flight_at_kill > 0, "the kill must cut into requests in flight"
    acked = load.acked_ids
    failed = load.failed_ids
    sent = acked | failed
    assert not acked & failed, "every message id is sent by exactly one request"

    server.start()  # same data directory: the log recovers from its WAL

    # (a) every acknowledged event survived, (b) nothing is stored twice or out of thin air.
    events = server.events()
    ids = [e["messageId"] for e in events]
    assert len(ids) == len(set(ids)), "an event is stored twice"
    missing = acked - set(ids)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert set(ids) <= sent
    assert all(source == "website" for source, _ in server.rows())
    committed_unacked = failed & set(ids)  # committed, but the answer never reached us

    old_last = last_offset(server)
    assert old_last >= len(events), "every stored event has its own offset"

    with httpx.Client(base_url=server.url, auth=(WRITE_KEY, ""), timeout=TIMEOUT) as client:
        # (a, through the server) the restarted server knows every acknowledged event: sent
        # again, each one is a duplicate and nothing new is stored.
        for request in chunks(sorted(acked), RESEND_CHUNK):
            answer = post(client, request)
            assert duplicates_in(answer) == len(request.ids), answer
        # (the canary may append its own events meanwhile: compare events, not offsets)
        assert server.events() == events, "an acknowledged event was stored again"

        # (d) the SDK retry: requests that failed or were cut are sent again as they were.
        # Their events are stored once; those committed before the kill are duplicates.
        retried_duplicates = sum(duplicates_in(post(client, request)) for request in load.failed)
        assert retried_duplicates == len(committed_unacked)

        # (c) new events are accepted, and stored after the old ones with greater offsets.
        fresh = make_request(f"{tag}-after", 0, 0)
        assert duplicates_in(post(client, fresh)) == 0

    after = server.events()
    assert after[: len(events)] == events, "the events stored before the kill are unchanged"
    new_ids = [e["messageId"] for e in after[len(events) :]]
    assert set(new_ids) == (failed - committed_unacked) | set(fresh.ids)
    all_ids = [e["messageId"] for e in after]
    assert len(all_ids) == len(set(all_ids)) == len(sent) + len(fresh.ids)
    assert set(all_ids) == sent | set(fresh.ids)
    assert last_offset(server) >= old_last + len(new_ids)

    # and the restarted server's own writes survive a second kill -9
    server.kill()
    server.start()
    assert server.events() == after
