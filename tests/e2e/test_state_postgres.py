"""``headwater serve`` with its state in PostgreSQL (``state: {backend: postgres}``,
docs/scale-out.md): positions, ledger, dead letters and the ingest flow counts live in a real
server that the test crashes and starts again mid-delivery, and Headwater itself is
restarted on the same schema; a space's profiles are built there through the crash."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, Server
from tests.e2e.test_delivery import delivered_ids, post_batches, webhook_yaml
from tests.fakes import FakeDestination, always
from tests.postgres import Postgres, cluster


@pytest.fixture(scope="module")
def own_pg() -> Iterator[Postgres]:
    """A cluster of this module's own: the test crashes it."""
    with cluster() as server:
        yield server


def state_yaml(pg: Postgres, schema: str) -> str:
    return (f"state: {{backend: postgres, dsn: '{pg.dsn()}', schema: {schema}, "
            "reconnect_secs: 5}\n")  # fmt: skip


def rows(pg: Postgres, schema: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(query).fetchall()


def wait_for_state(server: Server, wanted: str) -> str:
    """The state store's component on the status page once it shows ``wanted``, and the
    page's open incidents (which say why)."""
    deadline = time.monotonic() + 60
    while True:
        doc = httpx.get(f"{server.url}/api/v2/summary.json", timeout=10).json()
        [state] = [c for c in doc["components"] if c["name"] == "State store (PostgreSQL)"]
        if state["status"] == wanted:
            return str(doc["incidents"])
        assert time.monotonic() < deadline, f"the state component stayed {state}"
        time.sleep(0.2)


def test_delivery_state_in_postgres_survives_a_postgres_crash_and_a_restart(
    make_server: Any, own_pg: Postgres
) -> None:
    schema = f"e2e_{uuid.uuid4().hex[:8]}"
    with FakeDestination(always(200, delay_secs=0.002)) as fake:
        server: Server = make_server(
            state_yaml(own_pg, schema) + webhook_yaml(fake.url, concurrency=2)
            + "spaces: [{name: main, sources: [website]}]\n"
        )  # fmt: skip
        first = [str(uuid.uuid4()) for _ in range(1500)]
        post_batches(server, first)
        fake.wait_for(lambda f: len(delivered_ids(f)) >= 200, timeout=60)

        own_pg.stop("immediate")  # a crash, mid-delivery
        during = [str(uuid.uuid4()) for _ in range(500)]
        post_batches(server, during)  # the Tracking API does not need PostgreSQL
        incidents = wait_for_state(server, "major_outage")  # "is it down?": it says so, and why
        assert f"PostgreSQL at 127.0.0.1:{own_pg.port}/postgres schema {schema}" in incidents
        own_pg.start()
        wait_for_state(server, "operational")

        every = first + during
        fake.wait_for(lambda f: set(every) <= set(delivered_ids(f)), timeout=120)
        assert not (server.data_dir / "delivery" / "delivery.sqlite").exists()
        sent = sum(delivered_ids(fake).values())
        # Outcomes and position are in PostgreSQL: every event has a ledger row, once.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            [(ledgered,)] = rows(own_pg, schema, "SELECT coalesce(sum(count), 0) FROM ledger"
                                 " WHERE state='delivered' AND destination='hook'")  # fmt: skip
            if ledgered >= len(every):
                break
            time.sleep(0.2)
        assert ledgered == len(every)
        # The space's profiles are in PostgreSQL too, made once each through the crash
        # (u0..u1499; the 500 sent during it are the same users), and any node reads them.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            [(profiles,)] = rows(own_pg, f"{schema}_unify_main", "SELECT count(*) FROM "
                                 "profiles WHERE canonical IS NULL")  # fmt: skip
            [(refs,)] = rows(own_pg, f"{schema}_unify_main", "SELECT count(*) FROM events")
            if refs >= len(every):
                break
            time.sleep(0.2)
        assert (profiles, refs) == (1500, len(every))
        traits = httpx.get(f"{server.url}/v1/spaces/main/collections/users/profiles/"
                           "user_id:u7/events", auth=(ADMIN_TOKEN, ""), timeout=10)  # fmt: skip
        assert traits.status_code == 200, traits.text
        assert len(traits.json()["data"]) == 2, "its event before the crash and during it"
        assert not (server.data_dir / "unify").exists()
        trace = server.api(f"/api/v1/events/{during[3]}")
        assert trace.status_code == 200, trace.text
        assert {d["destination"]: d["state"] for d in trace.json()["destinations"]} == {
            "hook": "delivered"
        }

        # Headwater restarted on the same schema picks up where it stood: nothing re-sent.
        server.stop()  # writes its last flow counts
        # The ingest counts went to PostgreSQL too, the crash's included (kept, then written).
        [(received,)] = rows(own_pg, schema, "SELECT sum(count) FROM flow WHERE"
                             " source='website' AND step='received'")  # fmt: skip
        assert received == len(every)
        server.start()
        after = [str(uuid.uuid4()) for _ in range(20)]
        post_batches(server, after)
        fake.wait_for(lambda f: set(after) <= set(delivered_ids(f)), timeout=60)
        assert sum(delivered_ids(fake).values()) == sent + len(after)

        listed = subprocess.run(
            [sys.executable, "-m", "headwater.cli", "deadletter", "list", "--config",
             str(server.config), "--data-dir", str(server.data_dir)],
            capture_output=True, text=True, timeout=60,
            env={"HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert "No dead letters." in listed.stdout


def test_serve_refuses_to_start_when_postgres_does_not_answer(make_server: Any) -> None:
    server: Server = make_server(
        "state: {backend: postgres, dsn: 'postgresql://headwater@127.0.0.1:9/hw', "
        "reconnect_secs: 1}\n" + webhook_yaml("http://127.0.0.1:9/hook"),
        start=False,
    )
    with pytest.raises(RuntimeError) as failed:
        server.start(timeout_s=120)
    assert "PostgreSQL at 127.0.0.1:9/hw schema headwater does not answer" in str(failed.value)
