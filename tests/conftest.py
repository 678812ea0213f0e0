"""Fixtures shared by the suites: a fake destination server and Headwater's HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from headwater.delivery.http import HttpClient
from tests.fakes import FakeDestination
from tests.jetstream_cluster import nats_cluster, own_cluster  # noqa: F401  (JetStream)
from tests.postgres import postgres, profile_backend, state_backend  # noqa: F401  (PostgreSQL)


@pytest.fixture
def fake() -> Iterator[FakeDestination]:
    with FakeDestination() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.close()
