"""The process layout of ``headwater serve``: a gateway supervising the log writer and the
delivery worker (docs/architecture.md). ``kill -9`` of any child under load loses no
acknowledged event; a killed child is restarted, the restart shows in status, delivery
resumes where it stopped; children never outlive the gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.e2e.conftest import WRITE_KEY, Server
from tests.e2e.test_delivery import webhook_yaml
from tests.fakes import FakeDestination

SENDERS = 8
BATCH_EVENTS = 20
WAIT_SECS = 60.0  # ceilings for conditions; never a fixed sleep


def wait_until(what: str, check: Callable[[], bool], timeout: float = WAIT_SECS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def processes(server: Server) -> dict[str, dict[str, Any]]:
    ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
    return {p["name"]: p for p in ready.get("processes", [])}


def component(server: Server, component_id: str) -> dict[str, Any]:
    doc = httpx.get(f"{server.url}/api/v2/components.json", timeout=10).json()
    found: dict[str, Any] = next(c for c in doc["components"] if c["id"] == component_id)
    return found


def gone(pid: int) -> bool:
    """The process ended (a zombie waiting for a reaper counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@dataclass
class Load:
    acked: list[str] = field(default_factory=list)  # message ids whose request got a 2xx
    refused: list[int] = field(default_factory=list)  # statuses of non-2xx answers
    acked_after_restart: int = 0
    stop: bool = False
    restarted: bool = False


async def _sender(client: httpx.AsyncClient, load: Load, tag: str, number: int) -> None:
    seq = 0
    while not load.stop:
        ids = [f"{tag}-s{number}-r{seq}-{j}" for j in range(BATCH_EVENTS)]
        batch = [{"type": "track", "event": "Load", "userId": f"user-{number}", "messageId": m,
                  "properties": {"seq": seq}} for m in ids]  # fmt: skip
        seq += 1
        response = await client.post("/v1/batch", json={"batch": batch})
        if response.is_success:
            load.acked.extend(ids)
            if load.restarted:
                load.acked_after_restart += 1
        else:  # an SDK keeps these and sends them again; they were not acknowledged
            load.refused.append(response.status_code)
            await asyncio.sleep(0.05)


async def load_while(server: Server, tag: str, during: Callable[[Load], bool]) -> Load:
    """Send batches until ``during(load)`` (called every 10 ms off the loop) says stop."""
    load = Load()
    async with httpx.AsyncClient(
        base_url=server.url, auth=(WRITE_KEY, ""), timeout=httpx.Timeout(30.0)
    ) as client:
        tasks = [asyncio.create_task(_sender(client, load, tag, n)) for n in range(SENDERS)]
        deadline = time.monotonic() + WAIT_SECS
        while not await asyncio.to_thread(during, load):
            assert time.monotonic() < deadline, f"load did not finish: {len(load.acked)} acked"
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.01)
        load.stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return load


def kill_child_under_load(server: Server, name: str, tag: str) -> tuple[Load, int]:
    """Load the server, SIGKILL its ``name`` child after some acks, go on until the child
    has been restarted and more requests were acknowledged. Returns the load and old pid."""
    old_pid: int = processes(server)[name]["pid"]
    state = {"killed": False}

    def during(load: Load) -> bool:
        if not state["killed"]:
            if len(load.acked) >= 20 * BATCH_EVENTS:
                os.kill(old_pid, signal.SIGKILL)
                state["killed"] = True
            return False
        if not load.restarted:
            child = processes(server)[name]
            load.restarted = child["restarts"] >= 1 and child["state"] == "running"
            return False
        return load.acked_after_restart >= 20

    return asyncio.run(load_while(server, tag, during)), old_pid


def test_kill_9_of_the_writer_under_load_loses_no_acknowledged_event(make_server: Any) -> None:
    server: Server = make_server("status: {canary_enabled: false}\n")

    load, old_pid = kill_child_under_load(server, "writer", "writer-kill")

    # refusals while the writer restarts are back-pressure (SDKs retry), nothing else
    assert load.refused, "the kill must cut into the load (some requests refused meanwhile)"
    assert set(load.refused) == {503}, load.refused[:5]
    stored = [orjson.loads(p)["messageId"] for _, p in server.rows()]
    assert len(stored) == len(set(stored)), "an event is stored twice"
    missing = set(load.acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    writer = processes(server)["writer"]
    assert writer["pid"] != old_pid and writer["restarts"] == 1, writer
    assert writer["lastExit"] == "killed by SIGKILL", writer
    wait_until("status to show the restart",
               lambda: component(server, "process:writer")["status"] == "degraded_performance")  # fmt: skip


def test_kill_9_of_the_worker_under_load_delivers_every_event_in_order(make_server: Any) -> None:
    with FakeDestination() as fake:
        server: Server = make_server(
            webhook_yaml(fake.url, batch_max_events=50, concurrency=1)
            + "status: {canary_enabled: false}\n"
        )

        def delivering(load: Load) -> bool:  # the worker is killed in the midst of delivery
            return len(fake.requests) >= 5

        asyncio.run(load_while(server, "before", delivering))
        load, old_pid = kill_child_under_load(server, "worker", "worker-kill")

        stored = [orjson.loads(p)["messageId"] for _, p in server.rows()]
        assert set(load.acked) <= set(stored)
        wait_until("every stored event at the webhook",
                   lambda: set(stored) <= {e["messageId"] for e in fake.events(200)})  # fmt: skip
        arrived = [e["messageId"] for e in fake.events(200)]
        first_seen = list(dict.fromkeys(arrived))  # at-least-once: duplicates only re-send
        assert first_seen == stored, "events reach the destination in log order"
        worker = processes(server)["worker"]
        assert worker["pid"] != old_pid and worker["restarts"] == 1, worker
        assert worker["lastExit"] == "killed by SIGKILL", worker
        wait_until("status to show the restart",
                   lambda: component(server, "process:worker")["status"] == "degraded_performance")  # fmt: skip
        assert component(server, "process:writer")["status"] == "operational"


def test_children_do_not_outlive_a_gateway_killed_with_kill_9(server: Server) -> None:
    pids = [p["pid"] for p in processes(server).values()]
    assert len(pids) == 2, processes(server)

    server.kill()

    wait_until("the writer and the worker to end with the gateway",
               lambda: all(gone(pid) for pid in pids))  # fmt: skip
    server.start()  # and a new gateway starts its own on the same data directory
    again = processes(server)
    assert {p["state"] for p in again.values()} == {"running"}
    assert not {p["pid"] for p in again.values()} & set(pids)


def test_sigterm_stops_every_child(server: Server) -> None:
    pids = [p["pid"] for p in processes(server).values()]
    assert server.process is not None

    server.stop()

    # uvicorn exits through the signal it handled, after its graceful shutdown
    assert server.process.returncode in (0, -signal.SIGTERM), server.output.read_text()[-2000:]
    wait_until("the children to stop", lambda: all(gone(pid) for pid in pids))
    assert "Traceback" not in server.output.read_text(), server.output.read_text()[-3000:]
