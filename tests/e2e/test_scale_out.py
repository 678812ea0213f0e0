"""``headwater serve`` with its log on a 3-node NATS JetStream cluster (docs/scale-out.md).

Events go in through the Tracking API, into the stream, out through the delivery worker (a
process of its own, following the stream) to a fake webhook; the trace finds them by
messageId. Then the faults: the stream's leader is killed with SIGKILL, Headwater itself is
killed with SIGKILL and started again, and every acknowledged event still arrives.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from headwater.config import LogConfig
from headwater.config.workspace import StateConfig
from headwater.log.nats_local import LocalNats
from tests.e2e.conftest import Server
from tests.e2e.test_delivery import delivered_ids, post_batches, webhook_yaml
from tests.fakes import FakeDestination, always, free_port_block
from tests.jetstream_cluster import leader_index, require_nats_server
from tests.postgres import Postgres


def jetstream_yaml(cluster: LocalNats, stream: str) -> str:
    servers = ", ".join(cluster.urls)
    return f"log: {{backend: jetstream, servers: [{servers}], replicas: 3, stream: {stream}}}\n"


def test_serve_on_jetstream_delivers_traces_and_survives_kills(
    make_server: Any,
    own_cluster: LocalNats,
) -> None:
    cluster = own_cluster
    stream = f"e2e{uuid.uuid4().hex[:8]}"
    with FakeDestination(always(200, delay_secs=0.005)) as fake:
        server: Server = make_server(
            jetstream_yaml(cluster, stream) + webhook_yaml(fake.url, concurrency=4)
        )
        first = [str(uuid.uuid4()) for _ in range(2000)]
        post_batches(server, first)
        assert not (server.data_dir / "log").exists(), "the events went to SQLite, not NATS"
        fake.wait_for(lambda f: len(delivered_ids(f)) >= 300, timeout=60)

        cluster.kill(asyncio.run(leader_index(cluster, stream)))  # the stream's leader, -9
        server.kill()  # and Headwater too, mid-delivery
        server.start(timeout_s=90)
        second = [str(uuid.uuid4()) for _ in range(1000)]
        post_batches(server, second)  # two of three servers: still a quorum

        fake.wait_for(lambda f: set(first + second) <= set(delivered_ids(f)), timeout=120)
        trace = server.api(f"/api/v1/events/{second[7]}")
        assert trace.status_code == 200, trace.text
        body = trace.json()
        assert body["source"] == "website" and body["event"]["messageId"] == second[7]
        states = {d["destination"]: d["state"] for d in body["destinations"]}
        assert states == {"hook": "delivered"}


def test_serve_refuses_to_start_without_its_servers(make_server: Any) -> None:
    server: Server = make_server(
        "log: {backend: jetstream, servers: ['nats://127.0.0.1:9'], stream: nowhere}\n",
        start=False,
    )
    with pytest.raises(RuntimeError) as failed:
        server.start(timeout_s=120)
    assert "cannot use JetStream at nats://127.0.0.1:9" in str(failed.value)


def test_a_bad_log_backend_setting_is_refused_with_its_location(make_server: Any) -> None:
    server: Server = make_server("log: {backend: jetstream, servers: ['http://x:1']}\n",
                                 start=False)  # fmt: skip
    with pytest.raises(RuntimeError) as failed:
        server.start()
    assert "log" in str(failed.value) and "is not a NATS URL" in str(failed.value)


def test_dev_cluster_runs_the_servers_and_two_gateways_and_two_workers_on_them(
    tmp_path: Path, postgres: Postgres
) -> None:
    """``headwater dev cluster --config``: NATS ×3, PostgreSQL and four Headwater nodes, each
    with a data directory of its own; events sent to either gateway are delivered once, the
    status page of either lists the four nodes, a warehouse sync asked of one gateway is run
    by a worker and shown by the other, and SIGTERM stops everything."""
    require_nats_server()  # and PostgreSQL: the session's fixture fails in CI without it
    # NATS clients on port..port+2, routes on +100, monitoring on +200; gateways on 2 more
    port = free_port_block(*(base + i for base in (0, 100, 200) for i in range(3)))
    pg_port, http_port = free_port_block(0), free_port_block(0, 1)
    output = tmp_path / "cluster.out"
    stores = Path(tempfile.mkdtemp(prefix="headwater-dev-"))  # reachable by the postgres user
    os.chmod(stores, 0o755)
    with FakeDestination(always(200)) as fake:
        workspace = tmp_path / "workspace.yaml"
        workspace.write_text(
            "name: dev\nsources:\n  - {name: website, write_key: wk_dev_1}\n"
            "log: {durability: fsync, retention_max_age_secs: 1d}\n"
            "warehouses:\n  - {name: analytics, sources: [website], sync_interval: 1h}\n"
            + webhook_yaml(fake.url, concurrency=2)
        )
        command = [sys.executable, "-m", "headwater.cli", "dev", "cluster", "--port", str(port),
                   "--dir", str(stores), "--pg-port", str(pg_port), "--config", str(workspace),
                   "--http-port", str(http_port)]  # fmt: skip
        with output.open("wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300  # servers and four nodes on a busy machine
            while "Ctrl-C stops it." not in output.read_text():
                assert process.poll() is None, output.read_text()
                assert time.monotonic() < deadline, output.read_text()
                time.sleep(0.2)
            text = output.read_text()
            lines = text.splitlines()
            block = next(line for line in lines if line.startswith("log:"))
            log = LogConfig.model_validate(yaml.safe_load(block)["log"])
            assert log.servers == [f"nats://127.0.0.1:{port + i}" for i in range(3)]
            block = next(line for line in lines if line.startswith("state:"))
            state = StateConfig.model_validate(yaml.safe_load(block)["state"])
            assert state.dsn == f"postgresql://headwater@127.0.0.1:{pg_port}/postgres"
            for name in ("gateway-1", "gateway-2", "worker-1", "worker-2"):
                assert f"  {name} (pid " in text, text
            assert "Write key of source website: wk_dev_1" in text
            made = yaml.safe_load((stores / "workspace.yaml").read_text())
            assert made["log"] == {"backend": "jetstream", "servers": log.servers, "replicas": 3,
                                   "retention_max_age_secs": "1d"}  # fmt: skip
            # the DuckDB file is one for the workers, who take turns loading it
            assert made["warehouses"][0]["path"] == str(stores.resolve() / "warehouses"
                                                        / "analytics.duckdb")  # fmt: skip
            token = re.search(r"Admin token \(API and console of every gateway\): (\S+)", text)
            assert token is not None, text
            admin = {"authorization": f"Bearer {token[1]}"}

            ids = [str(uuid.uuid4()) for _ in range(400)]
            for i, url in enumerate((f"http://127.0.0.1:{http_port}",
                                     f"http://127.0.0.1:{http_port + 1}")):  # fmt: skip
                batch = [{"type": "track", "event": "Hi", "userId": "u", "messageId": m}
                         for m in ids[i * 200 : (i + 1) * 200]]  # fmt: skip
                answer = httpx.post(f"{url}/v1/batch", json={"batch": batch},
                                    auth=("wk_dev_1", ""), timeout=30)  # fmt: skip
                assert answer.status_code == 200, answer.text
            fake.wait_for(lambda f: set(ids) <= set(delivered_ids(f)), timeout=120)
            assert max(delivered_ids(fake)[i] for i in ids) == 1

            first, second = (f"http://127.0.0.1:{http_port + i}/api/v1/warehouses/analytics"
                             for i in (0, 1))  # fmt: skip
            asked = httpx.post(f"{first}/sync", headers=admin, timeout=10)
            assert asked.status_code == 200, asked.text
            request = asked.json()["request"]
            deadline = time.monotonic() + 120
            while not httpx.get(f"{second}/requests/{request}", headers=admin,
                                timeout=10).json()["done"]:  # fmt: skip
                assert time.monotonic() < deadline, httpx.get(second, headers=admin).text
                time.sleep(0.5)
            doc = httpx.get(second, headers=admin, timeout=10).json()
            assert doc["lastSync"]["status"] == "success", doc
            assert ":worker:" in doc["lastSync"]["node"], doc  # a worker node's, not its own
            assert doc["rowsPerTable"]["website.tracks"] == 400

            deadline = time.monotonic() + 60
            while True:  # the status page of a gateway lists every node
                doc = httpx.get(f"http://127.0.0.1:{http_port + 1}/api/v2/components.json",
                                timeout=10).json()  # fmt: skip
                [nodes] = [c for c in doc["components"] if c["name"] == "Nodes"]
                [hook] = [c for c in doc["components"] if c["name"] == "Destination hook"]
                if nodes["status"] == "operational" and hook["status"] == "operational":
                    break
                assert time.monotonic() < deadline, doc
                time.sleep(0.5)
            # one status for the cluster: both gateways' pages show the same incidents
            deadline = time.monotonic() + 60
            while True:
                pages = [httpx.get(f"http://127.0.0.1:{http_port + i}/api/v2/incidents.json",
                                   timeout=10).json()["incidents"] for i in (0, 1)]  # fmt: skip
                if pages[0] == pages[1]:
                    break
                assert time.monotonic() < deadline, pages
                time.sleep(0.5)
            assert state.dsn is not None
            with psycopg.connect(state.dsn, autocommit=True) as conn:
                writers = conn.execute("SELECT count(DISTINCT node) FROM"
                                       " headwater.status_observations").fetchone()  # fmt: skip
                assert writers == (2,)  # each gateway observes; one of them records
                roles = conn.execute("SELECT role, count(*) FROM headwater.nodes GROUP BY role"
                                     " ORDER BY role").fetchall()  # fmt: skip
            assert roles == [("gateway", 2), ("worker", 2)]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
            shutil.rmtree(stores, ignore_errors=True)
    assert process.returncode == 0 and output.read_text().endswith("stopped.\n")


def owners(pg: Postgres, schema: str) -> dict[str, str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        rows = conn.execute("SELECT name, owner FROM leases WHERE expires_at > now()").fetchall()
    return dict(rows)


def test_two_worker_nodes_share_the_destinations_and_survive_one_killed(
    make_server: Any, nats_cluster: LocalNats, postgres: Postgres, tmp_path: Path
) -> None:
    """Node 1 is ``serve`` (gateway + its worker process), node 2 ``serve --role worker``
    with a data directory of its own, as on another machine: the log is the JetStream
    stream and the state PostgreSQL. Node 2 is killed with SIGKILL mid-delivery."""
    stream, schema = f"share{uuid.uuid4().hex[:8]}", f"share_{uuid.uuid4().hex[:8]}"
    fakes = [FakeDestination(always(200, delay_secs=0.002)) for _ in range(4)]
    for f in fakes:
        f.__enter__()
    worker: subprocess.Popen[bytes] | None = None
    try:
        lines = ["destinations:"]
        for i, f in enumerate(fakes):
            lines += [f"  - {{name: hook{i}, type: webhook, sources: [website], "
                      f"settings: {{url: '{f.url}'}}}}"]  # fmt: skip
        yaml_text = (
            jetstream_yaml(nats_cluster, stream)
            + "\n".join(lines)
            + "\n"
            + f"state: {{backend: postgres, dsn: '{postgres.dsn()}', schema: {schema}}}\n"
        )
        server: Server = make_server(yaml_text)
        worker_out = tmp_path / "worker.out"
        with worker_out.open("wb") as sink:
            worker = subprocess.Popen(
                [sys.executable, "-m", "headwater.cli", "serve", "--role", "worker", "--config",
                 str(server.config), "--data-dir", str(tmp_path / "node2")],
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        hooks = {f"hook{i}" for i in range(4)}

        def spread() -> bool:
            held = owners(postgres, schema)
            return hooks <= set(held) and len({held[h] for h in hooks}) == 2

        deadline = time.monotonic() + 90
        while not spread():
            assert worker.poll() is None, worker_out.read_text()
            assert time.monotonic() < deadline, (owners(postgres, schema), worker_out.read_text())
            time.sleep(0.2)
        node2 = {h for h, o in owners(postgres, schema).items() if f":{worker.pid}:" in o}
        assert node2 and node2 < hooks, "node 2 should deliver some destinations, not all"

        first = [str(uuid.uuid4()) for _ in range(1000)]
        post_batches(server, first)
        for f in fakes:
            f.wait_for(lambda fake: len(delivered_ids(fake)) >= 100, timeout=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        second = [str(uuid.uuid4()) for _ in range(1000)]
        post_batches(server, second)
        every = set(first + second)
        for f in fakes:  # node 1 takes node 2's destinations when their leases expire
            f.wait_for(lambda fake: every <= set(delivered_ids(fake)), timeout=120)
        deadline = time.monotonic() + 60  # "is it down?": the status page names the node
        while True:
            doc = httpx.get(f"{server.url}/api/v2/summary.json", timeout=10).json()
            [nodes] = [c for c in doc["components"] if c["name"] == "Nodes"]
            if nodes["status"] == "degraded_performance":
                break
            assert time.monotonic() < deadline, nodes
            time.sleep(0.2)
        assert f":{worker.pid}:worker:" in str(doc["incidents"])
        held = owners(postgres, schema)
        assert {held[h] for h in hooks} == {held["hook0"]} and f":{worker.pid}:" not in held[
            "hook0"
        ]
        trace = server.api(f"/api/v1/events/{second[5]}")
        assert trace.status_code == 200, trace.text
        assert {d["state"] for d in trace.json()["destinations"]} == {"delivered"}
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        for f in fakes:
            f.__exit__(None, None, None)


def test_two_gateway_nodes_behind_a_balancer_accept_and_deliver_each_event_once(
    make_server: Any, nats_cluster: LocalNats, postgres: Postgres
) -> None:
    """Two ``serve`` nodes (gateway + worker each) on one stream and one state schema, as two
    machines behind a load balancer: each takes half the requests; every event is delivered
    once, and the flow counts of both land in the same rows."""
    stream, schema = f"gw{uuid.uuid4().hex[:8]}", f"gw_{uuid.uuid4().hex[:8]}"
    with FakeDestination(always(200, delay_secs=0.002)) as fake:
        extra = (
            jetstream_yaml(nats_cluster, stream)
            + webhook_yaml(fake.url, concurrency=2)
            + f"state: {{backend: postgres, dsn: '{postgres.dsn()}', schema: {schema}}}\n"
        )
        one: Server = make_server(extra)
        two: Server = make_server(extra)
        ids = [str(uuid.uuid4()) for _ in range(1200)]
        post_batches(one, ids[:600])
        post_batches(two, ids[600:])
        fake.wait_for(lambda f: set(ids) <= set(delivered_ids(f)), timeout=120)
        counts = delivered_ids(fake)
        assert max(counts[i] for i in ids) == 1  # one node at a time delivers "hook"
        for server in (one, two):  # either node traces any event
            trace = server.api(f"/api/v1/events/{ids[900]}")
            assert trace.status_code == 200, trace.text
            assert {d["state"] for d in trace.json()["destinations"]} == {"delivered"}
        one.stop()
        two.stop()  # both write their last flow counts
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            [(received,)] = conn.execute("SELECT sum(count) FROM flow WHERE source='website'"
                                         " AND step='received'").fetchall()  # fmt: skip
        assert received == len(ids)
