"""A space's profiles in PostgreSQL, shared by the nodes: one writes (a session lock), the
others stand by and take over when it stops; no batch is applied twice, whoever writes."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from headwater.config import LogConfig
from headwater.config.workspace import StateConfig
from headwater.log import Record
from headwater.log.base import StoredRecord
from headwater.log.sqlite import SqliteLog
from headwater.unify import consumer as consumer_module
from headwater.unify.config import SpaceConfig
from headwater.unify.consumer import SpaceConsumer, SpaceProcessor
from headwater.unify.store import (
    NotTheWriter,
    PositionMoved,
    PostgresProfileStore,
    open_profile_store,
)
from tests.postgres import Postgres, state_config
from tests.unify.helpers import space

CEILING_SECS = 60.0


def identify(n: int) -> Record:
    event = {"type": "identify", "messageId": f"m-{n}", "userId": f"u-{n}",
             "timestamp": "2026-12-01T10:00:00.000Z", "traits": {"n": n}}  # fmt: skip
    return Record(f"m-{n}", "website", "identify", 1_796_000_000_000, orjson.dumps(event))


async def until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + CEILING_SECS
    while not condition():
        assert time.monotonic() < deadline, f"not within {CEILING_SECS} s: {what}"
        await asyncio.sleep(0.05)


def test_one_writer_per_space_and_the_next_takes_the_lock_when_it_closes(
    postgres: Postgres,
) -> None:
    state = state_config(postgres)
    first = PostgresProfileStore(state, "main", writer=True)
    second = PostgresProfileStore(state, "main", writer=True)
    reader = PostgresProfileStore(state, "main")
    try:
        assert first.try_writer() and first.try_writer(), "the holder keeps it"
        assert not second.try_writer()
        with pytest.raises(NotTheWriter, match="another node writes"):
            second.begin()
        reader.begin()  # a reader's transaction (a profile deleted by the API) needs no lock
        reader.rollback()
        other = PostgresProfileStore(state, "other", writer=True)  # each space its own
        assert other.try_writer()
        other.close()
        first.close()  # its session ends (the server sees it a moment later), and the lock
        deadline = time.monotonic() + CEILING_SECS
        while not second.try_writer():
            assert time.monotonic() < deadline, "the lock outlived its session"
            time.sleep(0.05)
    finally:
        for store in (first, second, reader):
            store.close()


def test_a_batch_read_after_a_position_the_store_has_left_is_refused(
    tmp_path: Path, postgres: Postgres
) -> None:
    state = state_config(postgres)
    config = SpaceConfig.model_validate(space())
    store = open_profile_store(tmp_path, "main", state, writer=True)
    processor = SpaceProcessor(config, store)
    try:
        records = [StoredRecord(i, r.message_id, r.source, r.type, r.received_at_ms, r.payload)
                   for i, r in enumerate([identify(1), identify(2)], start=1)]  # fmt: skip
        processor.apply(records[:1], after=0)
        assert store.position() == 1
        # a COMMIT whose answer was lost, or another writer: the batch after 0 is applied
        with pytest.raises(PositionMoved):
            processor.apply(records, after=0)
        assert store.position() == 1 and store.find(("user_id", "u-2")) is None
        processor.apply(records[1:], after=1)
        assert store.find(("user_id", "u-2")) is not None
    finally:
        store.close()


async def test_two_nodes_consumers_one_writes_the_other_takes_over_and_none_applies_twice(
    tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "STANDBY_SECS", 0.2)
    state: StateConfig = state_config(postgres)
    config = SpaceConfig.model_validate(space())
    log = SqliteLog(tmp_path / "log", LogConfig())
    nodes = [SpaceConsumer(config, log, tmp_path / f"node-{i}", state=state) for i in (1, 2)]
    reader = open_profile_store(tmp_path, "main", state)
    try:
        await log.append([identify(n) for n in range(1, 51)])
        for node in nodes:
            await node.start()
        writing = [n for n in nodes if not n.standing_by]
        assert len(writing) == 1, "one node writes the space"
        [standby] = [n for n in nodes if n.standing_by]
        await until("the writer applies the first events", lambda: reader.position() == 50)

        await writing[0].stop()  # the writer goes away: the other takes over
        await log.append([identify(n) for n in range(51, 101)])
        await until("the other node applies the rest", lambda: reader.position() == 100)
        assert not standby.standing_by
        ids = [reader.find(("user_id", f"u-{n}")) for n in range(1, 101)]
        assert all(ids) and len(set(ids)) == 100
        created = [h for seg in set(ids) for h in reader.history(seg or "")]
        assert len(created) == 100, "each profile made once: no batch applied twice"
    finally:
        for node in nodes:
            await node.stop()
        reader.close()
        await log.close()


def test_activation_position_and_pauses_are_the_clusters_with_shared_state(
    tmp_path: Path, postgres: Postgres
) -> None:
    """Two gateways activate one space: they go on from the same change, and a pause made
    on one holds on the other (no file in either data directory)."""
    from headwater.engage.activation import STATE_DIR, SpaceActivator

    state = state_config(postgres)
    config = SpaceConfig.model_validate(space(audiences=[{
        "key": "vip", "where": {"trait": {"name": "plan", "op": "=", "value": "vip"}},
        "destinations": [{"name": "sink"}]}]))  # fmt: skip
    one, two = (SpaceActivator(config, tmp_path / name, state) for name in ("gw1", "gw2"))
    try:
        assert one.position() == 0 and one.paused() == {}
        one.set_position(7)
        assert two.position() == 7
        one.pause("vip", "sink", 1_000)
        assert two.paused() == {}, "as last read: asked on the event loop, never waits"
        assert two.position() == 7  # the activator's poll reads the state again
        assert two.paused() == {"vip/sink": {"at": 7, "since_ms": 1_000}}
        one.set_position(9)  # moving the position never writes back a pause it read
        two.unpause("vip", "sink")
        assert one.position() == 9 and one.paused() == {}
        one.pause("vip", "sink", 2_000)  # each pause is a value of its own: one gateway's
        two.pause("vip", "crm", 2_001)  # pause never writes over another's
        one.position()
        assert set(one.paused()) == {"vip/sink", "vip/crm"}, "neither pause lost"
        assert not (tmp_path / "gw1" / STATE_DIR).exists()
        assert not (tmp_path / "gw2" / STATE_DIR).exists()
    finally:
        one.close()
        two.close()


def test_an_event_postgresql_refuses_is_skipped_alone_not_retried_forever(
    tmp_path: Path, postgres: Postgres
) -> None:
    """A trait name over PostgreSQL's index row limit fails its INSERT: that is the event's
    fault (retried alone, counted, skipped), not the store's (the batch would fail for ever)."""
    config = SpaceConfig.model_validate(space())
    store = open_profile_store(tmp_path, "main", state_config(postgres), writer=True)
    try:
        processor = SpaceProcessor(config, store)
        huge = orjson.loads(identify(2).payload)
        huge["traits"] = {secrets.token_hex(6000): 1}  # random: PostgreSQL cannot compress it
        records = [identify(1), Record("m-2", "website", "identify", 1, orjson.dumps(huge)),
                   identify(3)]  # fmt: skip
        stored = [StoredRecord(i, r.message_id, r.source, r.type, r.received_at_ms, r.payload)
                  for i, r in enumerate(records, start=1)]  # fmt: skip
        processor.apply(stored, after=0)
        assert store.position() == 3
        assert store.find(("user_id", "u-1")) and store.find(("user_id", "u-3"))
        assert processor.counts.errors == 1
    finally:
        store.close()
