"""Insert functions rewriting and dropping events before a destination, and hostile
functions (an endless loop, a 10 GB allocation, killing the parent, reading the data
directory, sys.exit): each fails visibly, and every other destination keeps delivering."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import orjson

from headwater.delivery.outcomes import EventState
from headwater.functions.pool import CallResult, inconsistent
from headwater.functions.runtime import Returned, describe, diff, undoes
from tests.delivery.conftest import FAST, event, webhook
from tests.fakes import FakeDestination, always

SCRUB = """
def on_track(event, settings):
    if event["properties"].get("internal"):
        return None
    props = dict(event["properties"])
    props.pop("email", None)
    props["scrubbed"] = True
    return {**event, "properties": props}
"""

HOSTILE = {
    "loop": "def on_track(event, settings):\n    while True:\n        pass\n",
    "memory": "def on_track(event, settings):\n    blob = bytearray(10 * 1024**3)\n"
              "    return len(blob)\n",
    "kill": "import os\n\ndef on_track(event, settings):\n    os.kill(os.getppid(), 9)\n",
    "snoop": "def on_track(event, settings):\n    with open(settings['path'], 'rb') as f:\n"
             "        return f.read()\n",
    "exits": "import sys\n\ndef on_track(event, settings):\n    sys.exit(3)\n",
}  # fmt: skip


async def test_an_insert_function_rewrites_and_drops_events_before_its_destination(
    make_fn_pipeline: Callable[..., Any],
    code_dir: Callable[[str, str], str],
    fake: FakeDestination,
) -> None:
    fn = {"name": "scrub", "kind": "insert", "file": code_dir("scrub", SCRUB),
          "destination": "hook"}  # fmt: skip
    p = await make_fn_pipeline([fn], [webhook("hook", fake.url, **FAST),
                                      webhook("raw", fake.url + "/raw", **FAST)])  # fmt: skip
    kept = event(properties={"email": "jane@example.com", "plan": "pro"})
    internal = event(properties={"internal": True})
    ids = await p.send([kept, internal])
    await p.wait_states("hook", [ids[0]], EventState.DELIVERED)
    await p.wait_states("hook", [ids[1]], EventState.FILTERED)
    await p.wait_states("raw", ids, EventState.DELIVERED)
    (filtered,) = [r for r in await p.ledger("hook", ids[1]) if r.state is EventState.FILTERED]
    assert filtered.reason == "dropped by insert function scrub (it returned None)"

    def bodies(path: str) -> list[dict[str, Any]]:
        return [e for r in fake.requests if r.path == path for e in r.events()]

    (sent,) = [b for b in bodies("/") if b["messageId"] == ids[0]]
    assert sent["properties"] == {"plan": "pro", "scrubbed": True}, "rewritten before mapping"
    raw = [b for b in bodies("/raw") if b["messageId"] == ids[0]]
    assert raw[0]["properties"]["email"] == "jane@example.com", "other destinations untouched"
    (delivered,) = [r for r in await p.ledger("hook", ids[0]) if r.state is EventState.DELIVERED]
    assert delivered.reason == ("changed by insert function scrub: properties.email removed, "
                                "properties.scrubbed added"), "the trace says what it did"  # fmt: skip
    (untouched,) = await p.ledger("raw", ids[0])
    assert untouched.reason is None
    stats = p.engine.functions.pool("scrub").stats  # type: ignore[union-attr]
    assert (stats.changed, stats.dropped) == (1, 1)


async def test_hostile_functions_fail_visibly_and_others_keep_delivering(
    make_fn_pipeline: Callable[..., Any],
    code_dir: Callable[[str, str], str],
    fake: FakeDestination,
    tmp_path: Any,
) -> None:
    assert os.geteuid() == 0, (
        "run as root: a function's handlers drop to `nobody` only then, which is what keeps "
        "os.kill(os.getppid(), 9) from killing the test run (docs/functions.md)"
    )
    secret = tmp_path / "data0" / "secret.txt"  # inside the pipeline's 0700 data directory
    functions = [
        {"name": name, "kind": "destination", "file": code_dir(name, code),
         "sources": ["website"], "settings": {"path": str(secret)},
         "limits": {"timeout_secs": 1, "memory_bytes": "512MB"},
         "delivery": {**FAST, "retry_window_secs": 600}}
        for name, code in HOSTILE.items()
    ]  # fmt: skip
    p = await make_fn_pipeline(functions, [webhook("hook", fake.url, **FAST)])
    secret.write_text("the data directory's contents")
    ids = await p.send([event(properties={"n": n}) for n in range(5)])
    await p.wait_states("hook", ids, EventState.DELIVERED, within=60)
    assert {e["messageId"] for e in fake.events()} == set(ids)

    for name in ("memory", "kill", "snoop", "exits"):
        await p.wait_states(name, ids, EventState.DISCARDED, within=60)
    await p.wait_states("loop", ids[:1], EventState.RETRYING, within=60)

    async def reason(destination: str) -> str:
        rows = await p.ledger(destination, ids[0])
        return next(r.reason or "" for r in reversed(rows) if r.reason)

    assert "MemoryError" in await reason("memory")
    assert "PermissionError" in await reason("kill"), "nobody cannot signal Headwater"
    assert "PermissionError" in await reason("snoop") and "data0" in await reason("snoop")
    assert "sys.exit(3)" in await reason("exits")
    assert "ran past its 1 s limit" in await reason("loop")
    loop = p.engine.functions.pool("loop").stats  # type: ignore[union-attr]
    assert loop.errors["Timeout"] >= 1, "each attempt was cut at the limit and counted"
    for name in HOSTILE:
        failures = p.engine.functions.pool(name).stats.snapshot()["failures"]  # type: ignore[union-attr]
        assert failures, f"{name}'s failure is sampled"


def changes(old: Any, new: Any) -> list[str]:
    return [describe(c) for c in diff(old, new)]


def test_changes_name_each_path_an_insert_function_touched() -> None:
    old = {"userId": "u1", "properties": {"email": "a@b.c", "plan": "pro"}, "context": {}}
    new = {"userId": "u2", "properties": {"plan": "pro", "scrubbed": True},
           "context": {"ip": "0.0.0.0"}}  # fmt: skip
    assert changes(old, new) == ["userId changed", "properties.email removed",
                                 "properties.scrubbed added", "context.ip added"]  # fmt: skip
    assert changes({"a": {"b": 1}}, {"a": [1]}) == ["a changed"]
    many = changes({}, {f"k{i}": i for i in range(30)})
    assert len(many) == 10 and many[0] == "k0 added", "at most ten, in the event's order"


def returned(events: list[dict[str, Any]], change: Callable[[dict[str, Any]], Any]) -> Returned:
    """What the worker answers for ``events`` after ``change`` ran on each (in place, as a
    handler may; a result it returns stands for the event's), the events from before kept as
    JSON as the runtime keeps them."""
    before = [orjson.dumps(e) for e in events]
    results: list[dict[str, Any]] = []
    for e in events:
        value = change(e)
        results.append(value or {"s": "ok", "v": e})
    return Returned(results, before)


def test_a_batch_changed_alike_names_its_change_once_and_each_event_exactly() -> None:
    events = [{"type": "track", "event": "E", "properties": {"n": n, "email": f"{n}@x.io"}}
              for n in range(6)]  # fmt: skip

    def change(e: dict[str, Any]) -> Any:
        n = e["properties"]["n"]
        if n == 3:
            return None  # unchanged
        if n == 4:
            del e["properties"]["email"]  # changed otherwise
        if n == 5:
            e["properties"]["n"] = 50  # the same key added as the others, and more
        if n == 2:
            return {"s": "err", "k": "ValidationError", "m": "no"}  # passed on as it is
        e["properties"]["enriched"] = True
        return None

    answer = returned(events, change)
    added, both = (
        ["properties.enriched added"],
        ["properties.n changed", "properties.enriched added"],
    )
    assert answer.changes == [
        added,
        ["properties.email removed", "properties.enriched added"],
        both,
    ]
    assert answer.compact[:2] == [1, 1] and answer.compact[3:] == [0, 2, 3]
    assert answer.compact[2] == {"s": "err", "k": "ValidationError", "m": "no"}
    result = CallResult(answer.compact, tail=b"".join(answer.texts), lens=answer.lens,
                        changes=answer.changes)  # fmt: skip
    assert inconsistent(result) is None
    got = [orjson.loads(text) for text in result.returned()]
    assert got == [events[0], events[1], events[4], events[5]], "each changed event's own JSON"


def test_a_change_is_reused_only_when_undoing_it_gives_the_event_back() -> None:
    old = {"userId": "u1", "properties": {"plan": "pro", "email": "a@b.c"}, "context": {"ip": "1"}}
    before = orjson.dumps(old)
    added = ((("properties", "scrubbed"), "added"),)
    assert undoes(added, {**old, "properties": {**old["properties"], "scrubbed": True}}, before)
    moved = {**old, "properties": {"scrubbed": True, "email": "a@b.c", "plan": "pro"}}
    assert not undoes(added, moved, before), "keys reordered too: compared path by path"
    assert not undoes(added, {**old, "userId": "u2", "properties": {**old["properties"],
                                                                   "scrubbed": True}}, before)  # fmt: skip
    removed = ((("properties", "email"), "removed"),)
    assert undoes(removed, {**old, "properties": {"plan": "pro"}}, before)
    assert not undoes(removed, {**old, "properties": {}}, before)
    changed = ((("context",), "changed"),)
    assert undoes(changed, {**old, "context": "gone"}, before)
    assert not undoes(added, {**old, "properties": "flat"}, before)
    assert not undoes(((((), "changed"),)), old, before)
    ten = tuple(((f"k{i}",), "added") for i in range(10))
    assert not undoes(ten, {**old, **{f"k{i}": i for i in range(10)}}, before), "cut short"
    # and the engine refuses an answer whose parts do not agree
    assert inconsistent(CallResult([1], tail=b"{}", lens=[3], changes=[[]])) is not None
    assert inconsistent(CallResult([2], tail=b"{}", lens=[2], changes=[[]])) is not None


async def test_a_changed_event_the_destination_refuses_says_what_the_function_did(
    make_fn_pipeline: Callable[..., Any],
    code_dir: Callable[[str, str], str],
    fake: FakeDestination,
) -> None:
    fake.script = always(400, body=b'{"error": "email is required"}')
    fn = {"name": "scrub", "kind": "insert", "file": code_dir("scrub", SCRUB),
          "destination": "hook"}  # fmt: skip
    p = await make_fn_pipeline([fn], [webhook("hook", fake.url, **FAST)])
    ids = await p.send([event(properties={"email": "jane@example.com"})])
    await p.wait_states("hook", ids, EventState.DISCARDED)
    (refused,) = [r for r in await p.ledger("hook", ids[0]) if r.state is EventState.DISCARDED]
    assert refused.reason is not None and refused.reason.endswith(
        "(the event as changed by insert function scrub: properties.email removed, "
        "properties.scrubbed added)"), refused.reason  # fmt: skip
