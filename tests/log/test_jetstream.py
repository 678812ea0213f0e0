"""The JetStream log against real servers: the promises the conformance suite checks with a
fake clock (dedupe window, retention), and the faults of a cluster (a server killed under
load, a quorum lost, a server frozen as in a partition)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from headwater.config import LogConfig
from headwater.errors import LogError, LogUnavailable
from headwater.log import Record, jetstream
from headwater.log.jetstream import JetStreamLog, bucket_subject
from headwater.log.nats_local import LocalNats
from headwater.status.model import REPLICA_SILENT_SECS
from tests.jetstream_cluster import delete_streams, leader_index

CEILING = 60.0
# nats-py leaves the socket of a server it lost to the garbage collector after reconnecting
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function StreamWriter.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


def rec(mid: str, size: int = 0) -> Record:
    payload = b'{"messageId":"%s","pad":"%s"}' % (mid.encode(), b"x" * size)
    return Record(mid, "web", "track", 1_790_000_000_000, payload)


def config(servers: list[str], **overrides: Any) -> LogConfig:
    base = LogConfig(backend="jetstream", servers=servers, stream=f"t{uuid.uuid4().hex[:12]}")
    return base.model_copy(update=overrides)


async def eventually(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + CEILING
    while not await check():
        assert time.monotonic() < deadline, f"not within {CEILING:.0f} s: {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def make(nats_cluster: LocalNats) -> AsyncIterator[Callable[..., JetStreamLog]]:
    opened: list[JetStreamLog] = []

    def make(**overrides: Any) -> JetStreamLog:
        log = JetStreamLog(config(nats_cluster.urls, **overrides))
        opened.append(log)
        return log

    yield make
    for log in opened:
        await log.close()
    await delete_streams(nats_cluster.urls, [log.stream for log in opened])


async def test_events_carry_their_fields_and_odd_ids_survive_the_header(
    make: Callable[..., JetStreamLog],
) -> None:
    log = make()
    odd = "line\r\nNats-Msg-Id: forged %ü"
    [first, second] = await log.append([rec(odd), rec("forged")])
    assert not first.duplicate and not second.duplicate, "the id must not reach the headers raw"
    found = await log.get(odd)
    assert found is not None and found.message_id == odd and found.offset == first.offset
    assert [r.message_id for r in await log.read(0)] == [odd, "forged"]


async def test_get_walks_a_bucket_shared_by_other_ids(make: Callable[..., JetStreamLog]) -> None:
    log = make()
    target = bucket_subject(log.stream, "wanted")
    sharing = [f"other-{i}" for i in range(200_000)
               if bucket_subject(log.stream, f"other-{i}") == target][:3]  # fmt: skip
    assert sharing, "no id found in the same bucket"
    await log.append([rec(m) for m in sharing] + [rec("wanted")])
    found = await log.get("wanted")
    assert found is not None and found.message_id == "wanted"
    assert await log.get("absent") is None


async def test_the_duplicate_window_ends(make: Callable[..., JetStreamLog]) -> None:
    # the window is the stream's max_age when that is shorter than 24 h: 2 s here
    log = make(retention_max_age_secs=2)
    await log.append([rec("x")])
    [again] = await log.append([rec("x")])
    assert again.duplicate

    async def stored_again() -> bool:
        [result] = await log.append([rec("x")])
        return not result.duplicate

    await eventually(stored_again, "a retry past the window is stored again")


async def test_retention_by_age_is_the_servers_and_is_reported(
    make: Callable[..., JetStreamLog],
) -> None:
    log = make(retention_max_age_secs=1)
    await log.append([rec(f"a{i}") for i in range(5)])
    assert len(await log.read(0)) == 5
    dropped = 0

    async def gone() -> bool:
        nonlocal dropped
        dropped += (await log.enforce_retention()).records_dropped
        return dropped == 5

    await eventually(gone, "the servers drop events past max_age, and the log reports it")
    assert log.stats().records == 0

    async def unreadable() -> bool:
        # Each server expires its copy on its own timer: a reader's consumer may sit on a
        # replica that has not yet, for a moment after the leader did.
        return await log.read(0) == []

    await eventually(unreadable, "no reader gets an event past max_age")


async def test_retention_by_size_keeps_the_newest(make: Callable[..., JetStreamLog]) -> None:
    log = make(retention_max_bytes=5000)
    for i in range(10):
        await log.append([rec(f"s{i}", size=1000)])
    await log.enforce_retention()
    remaining = [r.message_id for r in await log.read(0)]
    assert 0 < len(remaining) < 10
    assert remaining == [f"s{i}" for i in range(10 - len(remaining), 10)]
    assert log.stats().payload_bytes <= 5000


async def test_a_limit_the_servers_cannot_hold_is_refused_at_open(
    make: Callable[..., JetStreamLog],
) -> None:
    log = make(retention_max_bytes=10**15)  # a petabyte: more than the servers may reserve
    with pytest.raises(LogError, match=r"insufficient storage.*Lower log\.retention_max_bytes"):
        await asyncio.wait_for(log.open(), 20)  # at once: waiting would not make room


async def test_more_replicas_than_servers_are_refused_after_a_while_naming_the_replicas(
    make: Callable[..., JetStreamLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too few peers may pass (one restarting, the cluster forming): asked again for
    PLACEMENT_SECS, then refused with what to do."""
    monkeypatch.setattr(jetstream, "PLACEMENT_SECS", 1.5)
    log = make(replicas=5)  # three servers
    started = time.monotonic()
    with pytest.raises(LogError, match=r"5 replicas needs that many servers.*log\.replicas"):
        await asyncio.wait_for(log.open(), 30)
    assert time.monotonic() - started >= 1.5, "asked again before giving up"
    assert log._nc is None, "the connection is closed, not left reconnecting"


async def test_a_follower_in_another_process_sees_every_event_once(
    make: Callable[..., JetStreamLog],
    nats_cluster: LocalNats,
) -> None:
    writer = make()
    reader = JetStreamLog(writer.config)  # another connection, as another process has
    try:
        seen: list[str] = []
        position = 0

        async def follow() -> None:
            nonlocal position
            while len(seen) < 1200:
                if await reader.wait(position, 5):
                    batch = await reader.read(position, 100)
                    seen.extend(r.message_id for r in batch)
                    position = batch[-1].offset if batch else position

        follower = asyncio.create_task(follow())
        for i in range(12):
            await writer.append([rec(f"f{i}-{j}") for j in range(100)])
        await asyncio.wait_for(follower, CEILING)
        assert seen == [f"f{i}-{j}" for i in range(12) for j in range(100)]
    finally:
        await reader.close()


async def under_load(
    cluster: LocalNats, batches: int, fault: Callable[[JetStreamLog], Awaitable[None]]
) -> tuple[set[str], list[str]]:
    """An SDK sends ``batches`` of 50, each retried until acknowledged (503s are expected);
    ``fault`` strikes after the 20th. Returns the acknowledged ids and what the stream holds."""
    log = JetStreamLog(config(cluster.urls), ack_secs=3)
    acked: set[str] = set()
    started = asyncio.Event()

    async def produce() -> None:
        for b in range(batches):
            batch = [rec(f"p{b}-{i}", size=200) for i in range(50)]
            while True:
                try:
                    await log.append(batch)
                    break
                except LogUnavailable:
                    await asyncio.sleep(0.2)
            acked.update(r.message_id for r in batch)
            if b == 20:
                started.set()

    try:
        await log.open()
        producer = asyncio.create_task(produce())
        await asyncio.wait_for(started.wait(), CEILING)
        await fault(log)
        await asyncio.wait_for(producer, 4 * CEILING)  # ingestion goes on through the fault
    finally:
        await log.close()
    stored = await all_stored(cluster.urls, log.stream)
    assert len(acked) == batches * 50
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged events lost"
    assert len(stored) == len(set(stored)), "a retried batch was stored twice"
    return acked, stored


async def all_stored(servers: list[str], stream: str) -> list[str]:
    """Every id in the stream, read by a new client. Right after a fault the cluster may
    still be electing a leader: a read that fails then (LogError, as a delivery worker would
    see and retry) is tried again, within a generous ceiling."""
    fresh = JetStreamLog(LogConfig(backend="jetstream", servers=servers, stream=stream))
    try:
        ids: list[str] = []
        position = 0
        deadline = time.monotonic() + 90
        while True:
            try:
                batch = await fresh.read(position, 500)
            except LogError:
                assert time.monotonic() < deadline, "the stream stayed unreadable"
                await asyncio.sleep(0.5)
                continue
            if not batch:
                return ids
            ids.extend(r.message_id for r in batch)
            position = batch[-1].offset
    finally:
        await fresh.close()


async def test_killing_the_stream_leader_under_load_loses_no_acknowledged_event(
    own_cluster: LocalNats,
) -> None:
    async def kill_leader(log: JetStreamLog) -> None:
        own_cluster.kill(await leader_index(own_cluster, log.stream))  # kill -9

    await under_load(own_cluster, 120, kill_leader)


async def test_without_a_quorum_appends_are_refused_then_resume(own_cluster: LocalNats) -> None:
    log = JetStreamLog(config(own_cluster.urls), ack_secs=2)
    try:
        [kept] = await log.append([rec("before")])
        own_cluster.kill(1)
        own_cluster.kill(2)
        with pytest.raises(LogUnavailable) as refused:
            await log.append([rec("during")])
        assert refused.value.reason == "jetstream_unavailable"
        assert refused.value.retry_after_secs > 0 and log.stats().refusing is not None
        own_cluster.restart(1)
        own_cluster.restart(2)

        async def accepted() -> bool:
            try:
                await log.append([rec("during")])  # the SDK's retry
                return True
            except LogUnavailable:
                return False

        await eventually(accepted, "appends resume once a quorum is back")
        found = await log.get("before")
        assert found is not None and found.offset == kept.offset
        ids = [r.message_id for r in await log.read(0)]
        assert ids.count("during") == 1 and ids[0] == "before"
    finally:
        await log.close()


async def test_stats_say_the_cluster_is_unreachable_without_an_append_failing(
    own_cluster: LocalNats,
) -> None:
    log = JetStreamLog(config(own_cluster.urls))
    try:
        await log.open()
        assert log.stats().refusing is None
        for i in range(3):
            own_cluster.kill(i)

        async def says_down() -> bool:
            return log.stats().refusing == "jetstream_unavailable"

        await eventually(says_down, "stats() report the cluster unreachable")
        # a follower waiting meanwhile hears "nothing yet", not an exception
        assert not await asyncio.wait_for(log.wait(0, 1), CEILING)
        own_cluster.restart(0, 1, 2)

        async def says_up() -> bool:
            return log.stats().refusing is None

        await eventually(says_up, "stats() report the cluster back")
    finally:
        await log.close()


async def test_stats_name_a_copy_the_leader_stopped_hearing_from(own_cluster: LocalNats) -> None:
    """The status page's "log degraded" (docs/scale-out.md): a server holding a copy is
    killed; the leader's report names it within seconds, and all is well once it is back."""
    log = JetStreamLog(config(own_cluster.urls))
    try:
        await log.append([rec("one")])

        async def all_heard() -> bool:
            copies = log.stats().replicas
            return len(copies) == 3 and all(
                not r.offline and r.seen_secs < REPLICA_SILENT_SECS for r in copies
            )

        await eventually(all_heard, "three copies, all heard from")
        assert log.stats().replicas[0].leader
        leader = await leader_index(own_cluster, log.stream)
        other = next(i for i in range(3) if i != leader)
        name = own_cluster.servers[other].name
        own_cluster.kill(other)

        async def named() -> bool:
            found = {r.name: r for r in log.stats().replicas}.get(name)
            return found is not None and (found.offline or found.seen_secs > REPLICA_SILENT_SECS)

        await eventually(named, f"the leader's report names {name}")
        await log.append([rec("two")])  # two of three: still a quorum
        own_cluster.restart(other)
        await eventually(all_heard, f"{name} heard from again")
    finally:
        await log.close()


async def test_a_frozen_server_is_routed_around(own_cluster: LocalNats) -> None:
    """SIGSTOP on the server the client is connected to: to the rest, a network partition;
    it comes back (SIGCONT) while the load still runs."""

    async def freeze_own_server(log: JetStreamLog) -> None:
        assert log._nc is not None and log._nc.connected_url is not None
        port = log._nc.connected_url.port
        assert port is not None
        frozen = [s.client_port for s in own_cluster.servers].index(port)
        own_cluster.pause(frozen)
        await asyncio.sleep(8)  # past the client's stale-connection detection (2 pings)
        own_cluster.resume(frozen)

    await under_load(own_cluster, 80, freeze_own_server)
