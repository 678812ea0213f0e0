"""The protocols store with real SQLite files: blocked events, violation counts, pruning."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from headwater.config.workspace import StateConfig
from headwater.processor.protocols import PlanEnforcer, PlanVerdict, TrackingPlanConfig
from headwater.processor.protocols.segment_import import import_segment_plan
from headwater.processor.protocols_store import (
    DB_FILE,
    NOT_KEPT,
    RETENTION_MS,
    SAMPLES_PER_FIELD,
    NewBlocked,
    ProtocolsDB,
    ProtocolsStore,
    db_path,
)

FIXTURE = Path(__file__).parent / "fixtures" / "ecommerce_plan.json"
PLAN = import_segment_plan(json.loads(FIXTURE.read_text()), name="ecommerce", sources=["website"])
DAY_MS = 86_400_000
T0 = 1_718_000_000_000  # 2024-06-10


def enforcer(**enforcement: Any) -> PlanEnforcer:
    data = PLAN.model_dump(by_alias=True)
    data["enforcement"] = enforcement
    return PlanEnforcer(TrackingPlanConfig.model_validate(data))


BLOCKING = enforcer(unplanned_events="block", on_violation="block")
ALLOWING = enforcer()


def track(name: str, message_id: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "messageId": message_id, "userId": "u1",
            "properties": properties}  # fmt: skip


def blocked_verdict(message_id: str) -> PlanVerdict:
    verdict = BLOCKING.apply(track("Order Completed", message_id, revenue="9"), "website")
    assert verdict.blocked == "violation"
    return verdict


State = StateConfig | None  # the store on SQLite (None) and on PostgreSQL: state_backend


@pytest.fixture
def db(tmp_path: Path, state_backend: State) -> Iterator[ProtocolsDB]:
    store = ProtocolsDB.open(db_path(tmp_path).parent, state_backend)
    yield store
    store.close()


@pytest.fixture
async def store(tmp_path: Path, state_backend: State) -> AsyncIterator[ProtocolsStore]:
    store = ProtocolsStore(tmp_path / "protocols", flush_every_secs=3600, state=state_backend)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[ProtocolsStore]:
    """For what only a SQLite file has (its pragmas, its tables dropped under it)."""
    store = ProtocolsStore(tmp_path / "protocols", flush_every_secs=3600)
    await store.open()
    yield store
    await store.close()


def test_blocked_events_round_trip(db: ProtocolsDB) -> None:
    verdict = blocked_verdict("m1")
    unplanned = BLOCKING.apply(track("Order Refunded", "m2"), "website")
    ids = db.put_blocked([NewBlocked.of("website", verdict, T0),
                          NewBlocked.of("website", unplanned, T0 + 5)])  # fmt: skip
    assert len(ids) == 2 and ids[0] < ids[1]
    [first, second] = list(db.blocked("website"))
    assert (first.id, first.plan, first.message_id, first.reason) == (ids[0], "ecommerce", "m1",
                                                                      "violation")  # fmt: skip
    assert first.event() == verdict.event
    assert [(v["type"], v["field"]) for v in first.violations] == [
        ("Required", "properties.order_id"), ("Required", "properties.currency"),
        ("Required", "properties.products"), ("Invalid Type", "properties.revenue")]  # fmt: skip
    assert first.violations[3]["expected"] == "number" and first.violations[3]["got"] == "string"
    assert first.violations[0]["rule"] == 'TRACK "Order Completed"'
    assert (second.reason, second.violations) == ("unplanned_event", [])
    assert db.blocked_event("m2") == second
    assert db.blocked_event("nope") is None
    assert list(db.blocked("backend")) == []
    assert db.blocked_counts() == {"website": 2}


def test_blocked_events_are_read_by_time_window_a_page_at_a_time(db: ProtocolsDB) -> None:
    items = [NewBlocked.of("website", blocked_verdict(f"m{i}"), T0 + i) for i in range(1200)]
    db.put_blocked(items)
    window = list(db.blocked("website", T0 + 100, T0 + 1150))
    assert [b.message_id for b in window] == [f"m{i}" for i in range(100, 1150)]
    assert len(list(db.blocked("website"))) == 1200


def test_delete_blocked_after_a_resend(db: ProtocolsDB) -> None:
    ids = db.put_blocked([NewBlocked.of("website", blocked_verdict(f"m{i}"), T0) for i in range(3)])
    assert db.delete_blocked(ids[:2]) == 2
    assert [b.message_id for b in db.blocked("website")] == ["m2"]
    assert db.delete_blocked([]) == 0


def test_prune_drops_what_is_older_than_30_days(db: ProtocolsDB, tmp_path: Path) -> None:
    db.put_blocked([NewBlocked.of("website", blocked_verdict("old"), T0),
                    NewBlocked.of("website", blocked_verdict("new"), T0 + 20 * DAY_MS)])  # fmt: skip
    from headwater.processor.protocols_store import _Pending, findings

    pending = _Pending()
    for at, mid in ((T0, "old"), (T0 + 20 * DAY_MS, "new")):
        verdict = ALLOWING.apply(track("Order Completed", mid, revenue="9"), "website")
        pending.add("website", verdict, findings(verdict), at)
    db.write(pending=pending)
    pruned = db.prune(T0 + RETENTION_MS + DAY_MS)
    assert pruned.blocked == 1 and pruned.counts == 4 and pruned.samples == 4
    assert [b.message_id for b in db.blocked("website")] == ["new"]
    summary = db.violations("website", 0)
    assert summary.total == 4
    assert {s.message_id for e in summary.events for f in e.fields for s in f.samples} == {"new"}


async def test_violation_counts_are_summed_by_event_and_type(store: ProtocolsStore) -> None:
    for i in range(3):
        bad = ALLOWING.apply(track("Order Completed", f"a{i}", order_id="1", revenue="9",
                                   currency="USD", products=[], gift=True), "website")  # fmt: skip
        store.record("website", bad, T0 + i * 30_000)
    store.record("website", ALLOWING.apply(track("Order Refunded", "r1"), "website"), T0)
    store.record("website", ALLOWING.apply(track("Order Completed", "ok", order_id="1",
                                                 revenue=9, currency="USD", products=[]),
                                           "website"), T0)  # fmt: skip
    store.record("backend", ALLOWING.apply(track("Order Refunded", "r2"), "backend"), T0)
    summary = await store.violations("website", T0)
    assert summary.total == 7
    [completed, refunded] = summary.events
    assert (completed.event, completed.plan, completed.event_type) == (
        "Order Completed",
        "ecommerce",
        "track",
    )
    assert completed.by_type == {"Invalid Type": 3, "Unplanned Property": 3}
    assert [(f.violation_type, f.field, f.count) for f in completed.fields] == [
        ("Unplanned Property", "properties.gift", 3),
        ("Invalid Type", "properties.revenue", 3),
    ]
    samples = completed.fields[1].samples
    assert [s.message_id for s in samples] == ["a2", "a1", "a0"]
    assert (samples[0].expected, samples[0].got) == ("number", "string")
    assert samples[0].description == "Invalid type. Expected: number, given: string"
    assert refunded.by_type == {"Unplanned Event": 1}
    assert refunded.fields[0].samples[0].got == "Order Refunded"
    later = await store.violations("website", T0 + 60_000)
    assert later.total == 2  # the minute buckets after T0 + 60 s only hold a2
    assert (await store.violations("backend", 0)).total == 1


async def test_samples_keep_the_latest_few_per_field(store: ProtocolsStore) -> None:
    for i in range(SAMPLES_PER_FIELD + 4):
        verdict = ALLOWING.apply(track("Products Searched", f"q{i}", query=i), "website")
        store.record("website", verdict, T0 + i)
        if i % 3 == 0:
            await store.flush()
    summary = await store.violations("website", 0)
    [field] = summary.events[0].fields
    assert field.count == SAMPLES_PER_FIELD + 4
    assert [s.message_id for s in field.samples] == [f"q{i}" for i in range(8, 3, -1)]


async def test_counts_reach_the_file_within_the_flush_interval(
    tmp_path: Path, state_backend: State
) -> None:
    store = ProtocolsStore(tmp_path, flush_every_secs=0.05, state=state_backend)
    await store.open()
    try:
        store.record("website", ALLOWING.apply(track("Order Refunded", "r1"), "website"), T0)
        reader = ProtocolsDB.open(tmp_path, state_backend)
        for _ in range(100):
            if reader.violations("website", 0).total:
                break
            await asyncio.sleep(0.02)
        assert reader.violations("website", 0).total == 1
        reader.close()
    finally:
        await store.close()


async def test_close_writes_pending_counts(tmp_path: Path, state_backend: State) -> None:
    store = ProtocolsStore(tmp_path, flush_every_secs=3600, state=state_backend)
    await store.open()
    store.record("website", ALLOWING.apply(track("Order Refunded", "r1"), "website"), T0)
    await store.close()
    db = ProtocolsDB.open(tmp_path, state_backend)
    assert db.violations("website", 0).total == 1
    db.close()


async def test_concurrent_put_blocked_share_transactions_and_all_land(
    tmp_path: Path, state_backend: State
) -> None:
    store = ProtocolsStore(tmp_path, flush_every_secs=3600, state=state_backend)
    await store.open()
    store.record("website", ALLOWING.apply(track("Order Refunded", "r1"), "website"), T0)

    async def put(i: int) -> list[int]:
        return await store.put_blocked([NewBlocked.of("website", blocked_verdict(f"m{i}"), T0 + i)])

    results = await asyncio.gather(*(put(i) for i in range(200)))
    commits = await store.run(lambda db: db.commits)
    await store.close()
    ids = [r[0] for r in results]
    assert all(len(r) == 1 for r in results) and len(set(ids)) == 200
    assert commits < 100, f"{commits} transactions for 200 concurrent puts: no group commit"
    db = ProtocolsDB.open(tmp_path, state_backend)
    stored = {b.id: b.message_id for b in db.blocked("website")}
    assert {stored[ids[i]] for i in range(200)} == {f"m{i}" for i in range(200)}
    assert db.violations("website", 0).total == 1  # the pending count went with a group
    db.close()


async def test_put_blocked_is_durable_when_it_returns(
    sqlite_store: ProtocolsStore, tmp_path: Path
) -> None:
    store = sqlite_store
    [row_id] = await store.put_blocked([NewBlocked.of("website", blocked_verdict("m1"), T0)])
    # another connection (another process would do the same) sees the committed row
    conn = sqlite3.connect(tmp_path / "protocols" / DB_FILE)
    row = conn.execute("SELECT message_id, payload FROM blocked WHERE id=?", (row_id,)).fetchone()
    conn.close()
    assert row[0] == "m1" and orjson.loads(row[1])["messageId"] == "m1"
    sync = await store.run(lambda db: db.conn.execute("PRAGMA synchronous").fetchone()[0])
    assert sync == 2  # FULL


async def test_a_failed_write_fails_the_callers_and_keeps_the_counts(
    sqlite_store: ProtocolsStore,
) -> None:
    store = sqlite_store
    store.record("website", ALLOWING.apply(track("Order Refunded", "r1"), "website"), T0)
    await store.run(lambda db: db.conn.execute("DROP TABLE blocked"))
    with pytest.raises(sqlite3.OperationalError):
        await store.put_blocked([NewBlocked.of("website", blocked_verdict("m1"), T0)])
    await store.flush()  # the counts taken by the failed transaction were put back
    assert (await store.violations("website", 0)).total == 1
    await store.run(lambda db: db.conn.execute(
        "CREATE TABLE blocked(id INTEGER PRIMARY KEY, source TEXT, plan TEXT, message_id TEXT,"
        " received_ms INTEGER, reason TEXT, violations BLOB, payload BLOB)"))  # fmt: skip


async def test_async_reads(store: ProtocolsStore) -> None:
    ids = await store.put_blocked(
        [NewBlocked.of("website", blocked_verdict(f"m{i}"), T0 + i) for i in range(5)]
    )
    assert [b.message_id for b in await store.blocked("website", T0 + 1, T0 + 4)] == [
        "m1", "m2", "m3"]  # fmt: skip
    assert len(await store.blocked("website", limit=2)) == 2
    found = await store.blocked_event("m4")
    assert found is not None and found.id == ids[4]
    assert await store.delete_blocked(ids[:4]) == 4
    pruned = await store.prune(T0 + RETENTION_MS + 10)
    assert pruned.blocked == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    ProtocolsDB(tmp_path / DB_FILE).close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="protocols store schema 99"):
        ProtocolsDB(tmp_path / DB_FILE)


def test_blocked_events_past_the_byte_budget_are_counted_not_kept(
    tmp_path: Path, state_backend: State
) -> None:
    one = NewBlocked.of("website", blocked_verdict("b1"), T0)
    budget = 2 * len(one.payload) + 10
    db = ProtocolsDB.open(db_path(tmp_path).parent, state_backend, max_blocked_bytes=budget)
    first = db.put_blocked([one, NewBlocked.of("website", blocked_verdict("b2"), T0)])
    assert NOT_KEPT not in first
    assert db.put_blocked([NewBlocked.of("website", blocked_verdict("b3"), T0)]) == [NOT_KEPT]
    assert db.not_kept == 1 and db.blocked_event("b3") is None
    db.delete_blocked(first[:1])  # a re-send makes room
    assert db.put_blocked([NewBlocked.of("website", blocked_verdict("b4"), T0)]) != [NOT_KEPT]
    db.close()
    reopened = ProtocolsDB.open(db_path(tmp_path).parent, state_backend, max_blocked_bytes=budget)
    assert reopened.blocked_bytes > len(one.payload)  # counted again from the file
    reopened.close()


async def test_names_the_sender_chooses_are_counted_apart_up_to_a_bound(
    store: ProtocolsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("headwater.processor.protocols_store.MAX_DISTINCT_NAMES", 3)
    for i in range(6):  # unplanned events, each with a name of its own
        store.record("website", ALLOWING.apply(track(f"Made Up {i}", f"u{i}"), "website"), T0)
    summary = await store.violations("website", 0)
    names = {e.event: e.total for e in summary.events}
    assert names == {"Made Up 0": 1, "Made Up 1": 1, "Made Up 2": 1,
                     "(other unplanned events)": 3}  # fmt: skip
