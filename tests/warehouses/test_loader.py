"""Syncs into DuckDB and a real PostgreSQL: Segment's tables and columns, users upserted,
conflicts kept in _discards, loads that are all or nothing and never twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from headwater.warehouses.duckdb import DuckDBWarehouse
from headwater.warehouses.postgres import PostgresWarehouse
from headwater.warehouses.schema import MAX_COLUMNS
from tests.warehouses.helpers import Target, append, event, flat, memory_log

TS = ("timestamp with time zone",)


async def test_track_lands_in_tracks_and_its_own_table(target: Target) -> None:
    log = memory_log()
    await append(log, [event("track", event="Order Completed", userId="u1",
                             properties={"total": 42.5, "orderId": "o-1", "coupon": None,
                                         "products": [{"sku": "a"}, {"sku": "b"}],
                                         "shipping": {"address": {"city": "Lyon"}},
                                         "gift": True, "placedAt": "2026-02-28T09:00:00Z"})])  # fmt: skip
    record = await target.loader(log).sync()
    assert record.status == "success", record.error
    assert record.rows["website.tracks"] == 1 and record.rows["website.order_completed"] == 1
    rows = target.query("SELECT event, event_text, user_id, anonymous_id, context_library_name,"
                        " context_page_url FROM website.tracks")  # fmt: skip
    assert rows == [("order_completed", "Order Completed", "u1", "anon-1", "analytics-python",
                     "https://shop.example.com/cart")]  # fmt: skip
    assert "total" not in target.columns("website", "tracks")  # tracks holds no properties
    rows = target.query("SELECT total, order_id, products, shipping_address_city, gift, "
                        "placed_at FROM website.order_completed")  # fmt: skip
    total, order_id, products, city, gift, placed = rows[0]
    assert (total, order_id, city, gift) == (42.5, "o-1", "Lyon", True)
    assert products.replace(" ", "") == '[{"sku":"a"},{"sku":"b"}]'
    assert placed.isoformat().startswith("2026-02-28T09:00:00")
    columns = target.columns("website", "order_completed")
    assert "coupon" not in columns  # a column appears with its first non-null value
    for name in ("id", "received_at", "sent_at", "timestamp", "original_timestamp", "uuid_ts",
                 "user_id", "anonymous_id", "event", "event_text"):  # fmt: skip
        assert name in columns
    assert columns["received_at"] in TS and columns["placed_at"] in TS
    assert columns["gift"] == "boolean" and columns["total"] in ("double", "double precision")


async def test_every_call_type_has_its_table(target: Target) -> None:
    log = memory_log()
    await append(log, [
        event("page", name="Cart", category="Shop", properties={"title": "Your cart"}),
        event("screen", name="Home", properties={"variant": "b"}),
        event("group", groupId="g1", userId="u1", traits={"company": "ACME", "seats": 12}),
        event("alias", userId="u1", previousId="anon-1"),
        event("identify", userId="u1", traits={"email": "a@example.com"}),
    ])  # fmt: skip
    assert (await target.loader(log).sync()).status == "success"
    assert target.query("SELECT name, category, title FROM website.pages") == [
        ("Cart", "Shop", "Your cart")
    ]
    assert target.query("SELECT name, variant FROM website.screens") == [("Home", "b")]
    assert target.query("SELECT group_id, company, seats FROM website.groups") == [
        ("g1", "ACME", 12)
    ]
    assert target.query("SELECT user_id, previous_id FROM website.aliases") == [("u1", "anon-1")]
    assert target.query("SELECT user_id, email FROM website.identifies") == [
        ("u1", "a@example.com")
    ]


async def test_users_holds_the_latest_traits_per_user(target: Target) -> None:
    log = memory_log()
    loader = target.loader(log)
    await append(log, [event("identify", userId="u1", traits={"email": "a@x.com", "plan": "free"}),
                       event("identify", userId="u2", traits={"plan": "pro"}),
                       event("identify", anonymousId="anon-9", traits={"plan": "x"})])  # fmt: skip
    await loader.sync()
    await append(log, [event("identify", userId="u1", traits={"plan": "team", "seats": 3})])
    await loader.sync()
    rows = target.query("SELECT id, email, plan, seats FROM website.users ORDER BY id")
    assert rows == [("u1", "a@x.com", "team", 3), ("u2", None, "pro", None)]
    assert "anonymous_id" not in target.columns("website", "users")
    assert target.query("SELECT count(*) FROM website.identifies") == [(4,)]


async def test_a_type_conflict_goes_to_discards_and_the_column_keeps_its_type(
    target: Target,
) -> None:
    log = memory_log()
    loader = target.loader(log)
    await append(log, [event("track", event="Signed Up", properties={"age": 31})])
    await loader.sync()
    bad = event("track", event="Signed Up", properties={"age": "thirty-one", "vip": 1.0})
    await append(log, [bad, event("track", event="Signed Up", properties={"age": 40.0})])
    record = await loader.sync()
    assert record.status == "success" and record.discards == 1
    assert target.columns("website", "signed_up")["age"] == "bigint"
    assert target.query("SELECT age FROM website.signed_up ORDER BY received_at") == [
        (31,),
        (None,),
        (40,),
    ]
    discards = target.query("SELECT table_name, column_name, column_value, row_id, reason "
                            "FROM website._discards")  # fmt: skip
    assert discards == [("signed_up", "age", "thirty-one", bad["messageId"],
                         "type conflict: the column is bigint")]  # fmt: skip


async def test_reserved_property_names_are_discarded_not_lost(target: Target) -> None:
    log = memory_log()
    sent = event("track", event="Clicked", userId="real", properties={"userId": "fake", "ok": 1})
    await append(log, [sent])
    await target.loader(log).sync()
    assert target.query("SELECT user_id, ok FROM website.clicked") == [("real", 1)]
    assert target.query("SELECT column_name, column_value, reason FROM website._discards") == [
        ("user_id", "fake", "reserved column name")
    ]


async def test_of_two_keys_with_one_column_name_the_direct_one_wins(target: Target) -> None:
    log = memory_log()
    # "a": {"b"} comes first, yet the object's own key a_b names the column (docs/warehouses.md)
    sent = event("track", event="Clicked", properties={"a": {"b": 1}, "a_b": 2, "A B": 3})
    await append(log, [sent, event("track", event="Clicked", properties={"a": {"b": 4}})])
    await target.loader(log).sync()
    assert target.query("SELECT a_b FROM website.clicked ORDER BY received_at") == [(2,), (4,)]
    reasons = target.query("SELECT column_name, column_value, reason FROM website._discards "
                           "ORDER BY column_name")  # fmt: skip
    assert reasons == [("A B", "3", "same column name as another key (a_b)"),
                       ("b", "1", "same column name as another key (a_b)")]  # fmt: skip


async def test_timestamps_in_any_iso_form_are_the_same_instants(target: Target) -> None:
    log = memory_log()
    forms = ["2026-03-01T10:00:00.250Z", "2026-03-01T11:00:00.25+01:00", "2026-03-01T10:00:00.250",
             "2026-03-01T10:00:00.250000999Z", "2026-03-01 10:00:00.25+0000"]  # fmt: skip
    # one batch whose column is all zoned text (parsed by Arrow), one with each other form too
    await append(log, [event("track", event="Timed", properties={"seen_at": f}) for f in forms[:2]])
    await target.loader(log).sync()
    await append(log, [event("track", event="Timed", properties={"seen_at": f}) for f in forms])
    await target.loader(log).sync()
    assert target.columns("website", "timed")["seen_at"] == TS[0]
    got = {at for (at,) in target.query("SELECT seen_at FROM website.timed")}
    assert got == {datetime(2026, 3, 1, 10, 0, 0, 250_000, UTC)}  # equal as instants
    assert target.query("SELECT count(*) FROM website.timed") == [(7,)]


async def test_hostile_names_cannot_inject_or_break_a_sync(target: Target) -> None:
    log = memory_log()
    properties = {
        'x"; DROP TABLE website.tracks; --': "quoted",
        "select": "keyword",
        "from": 1,
        "n" * 4096: "long",
        "🙂": "emoji only",
    } | {f"prop{i}": i for i in range(MAX_COLUMNS + 50)}
    sent = event("track", event='Evil"; DROP SCHEMA website; --', properties=properties)
    await append(log, [sent])
    record = await target.loader(log).sync()
    assert record.status == "success", record.error
    assert target.query("SELECT count(*) FROM website.tracks") == [(1,)]
    table = "evil_drop_schema_website"
    columns = target.columns("website", table)
    assert len(columns) == MAX_COLUMNS
    assert "x_drop_table_website_tracks" in columns and "_select" in columns
    assert "_from" in columns
    reasons = target.query("SELECT reason, count(*) FROM website._discards GROUP BY reason")
    by_reason = dict(reasons)
    assert by_reason["no usable name"] == 1  # the emoji-only name
    assert by_reason[f"column limit ({MAX_COLUMNS} columns per table)"] > 0
    kept = target.query(f"SELECT count(*) FROM website._discards WHERE table_name = '{table}'")
    assert kept[0][0] == len(properties) - (MAX_COLUMNS - 13)  # 10 fixed, 3 context columns


async def test_selective_sync(target_factory) -> None:  # type: ignore[no-untyped-def]
    target: Target = target_factory(tables=["tracks", "order_completed"],
                                    exclude_events=["Heartbeat"])  # fmt: skip
    log = memory_log()
    await append(log, [event("track", event="Order Completed", properties={"a": 1}),
                       event("track", event="Heartbeat"),
                       event("track", event="Viewed", properties={"b": 2}),
                       event("identify", userId="u1", traits={"c": 3})])  # fmt: skip
    await target.loader(log).sync()
    assert sorted(flat(target.query("SELECT event FROM website.tracks"))) == [
        "order_completed",
        "viewed",
    ]
    tables = set(flat(target.query("SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = 'website'")))  # fmt: skip
    assert tables == {"tracks", "order_completed"}


async def test_other_sources_are_not_loaded(target: Target) -> None:
    log = memory_log()
    await append(log, [event("track", event="Mine")])
    await append(log, [event("track", event="Theirs")], source="backend")
    record = await target.loader(log).sync()
    assert record.events == 1 and record.last_offset == 2
    assert target.query("SELECT event FROM website.tracks") == [("mine",)]


async def test_a_failed_transaction_loads_nothing_and_the_next_sync_everything_once(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = memory_log()
    await append(log, [event("track", event="A", properties={"n": i}) for i in range(30)])
    backend = DuckDBWarehouse if target.config.type == "duckdb" else PostgresWarehouse
    original = backend._load_table
    calls = []

    def fail_on_the_second_table(self, *args):  # type: ignore[no-untyped-def]
        calls.append(args[-1].table)
        if len(calls) == 2:
            raise OSError("No space left on device")
        original(self, *args)

    monkeypatch.setattr(backend, "_load_table", fail_on_the_second_table)
    loader = target.loader(log, batch_events=10)
    with pytest.raises(OSError, match="No space left"):
        await loader.sync()
    failed = loader.state.syncs("analytics", 1)[0]
    assert (failed.status, failed.error_kind) == ("failed", "disk_full")
    monkeypatch.setattr(backend, "_load_table", original)
    record = await loader.sync()
    assert record.status == "success" and record.events == 30
    assert target.query("SELECT count(*), count(DISTINCT id) FROM website.a") == [(30, 30)]
    assert target.query("SELECT count(*) FROM website.tracks") == [(30,)]


async def test_backfill_reloads_what_is_missing_and_nothing_twice(target: Target) -> None:
    log = memory_log()
    loader = target.loader(log)
    await append(log, [event("track", event="A", receivedAt="2026-03-01T10:00:00Z"),
                       event("track", event="B", receivedAt="2026-03-02T10:00:00Z"),
                       event("identify", userId="u1", traits={"plan": "new"},
                             receivedAt="2026-03-03T10:00:00Z")])  # fmt: skip
    await loader.sync()
    target.query("SELECT 1")
    if target.config.type == "duckdb":
        import duckdb

        from headwater.warehouses.loader import duckdb_path

        with duckdb.connect(str(duckdb_path(target.config, target.data_dir))) as conn:
            conn.execute("DROP TABLE website.b")
    else:
        import psycopg

        with psycopg.connect(target.config.dsn or "", autocommit=True) as conn:
            conn.execute("DROP TABLE website.b")
    position = await loader.rewind(1_772_409_600_000)  # 2026-03-02T00:00:00Z
    assert position == 1
    record = await loader.sync()
    assert record.status == "success" and record.after_offset == 1
    assert target.query("SELECT count(*) FROM website.b") == [(1,)]
    assert target.query("SELECT count(*) FROM website.tracks") == [(3 - 1,)]
    assert target.query("SELECT plan FROM website.users") == [("new",)]
