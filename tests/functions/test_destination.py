"""Destination functions in the delivery engine: delivered, discarded, retried, per event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.delivery.outcomes import EventState
from tests.delivery.conftest import FAST, event
from tests.fakes import FakeDestination

POSTS = """
from headwater.functions import fetch, ValidationError, RetryError

def on_track(event, settings):
    kind = event["properties"].get("kind")
    if kind == "invalid":
        raise ValidationError("no email on the event")
    if kind == "retry":
        raise RetryError("the CRM answered 503")
    if kind == "boom":
        {}["missing"]
    print("posting", event["messageId"])
    answer = fetch(settings["url"] + "/crm", method="POST", json={"id": event["messageId"]})
    if answer.status_code >= 500:
        raise RetryError(f"CRM {answer.status_code}")
"""


async def test_a_destination_function_posts_to_an_api(
    make_fn_pipeline: Callable[..., Any],
    code_dir: Callable[[str, str], str],
    fake: FakeDestination,
) -> None:
    fn = {"name": "crm", "kind": "destination", "file": code_dir("crm", POSTS),
          "sources": ["website"], "settings": {"url": fake.url}, "delivery": FAST}  # fmt: skip
    p = await make_fn_pipeline([fn])
    ok = [event(properties={"kind": "ok"}) for _ in range(3)]
    ids = await p.send(ok)
    await p.wait_states("crm", ids, EventState.DELIVERED)
    assert sorted(r.json()["id"] for r in fake.requests) == sorted(ids)
    stats = p.engine.functions.pool("crm").stats.snapshot()  # type: ignore[union-attr]
    assert stats["invocations"] >= 3
    assert any("posting" in line["line"] for line in stats["logs"])


async def test_each_error_class_gets_segments_outcome(
    make_fn_pipeline: Callable[..., Any],
    code_dir: Callable[[str, str], str],
    fake: FakeDestination,
) -> None:
    fn = {"name": "crm", "kind": "destination", "file": code_dir("crm", POSTS),
          "sources": ["website"], "settings": {"url": fake.url},
          "delivery": {**FAST, "batch_max_events": 10}}  # fmt: skip
    p = await make_fn_pipeline([fn])
    invalid, retry, boom, ok = (event(properties={"kind": k}) for k in
                                ("invalid", "retry", "boom", "ok"))  # fmt: skip
    ids = await p.send([invalid, retry, boom, ok])
    await p.wait_states("crm", [ids[0], ids[2]], EventState.DISCARDED)
    await p.wait_states("crm", [ids[3]], EventState.DELIVERED)
    await p.wait_states("crm", [ids[1]], EventState.RETRYING)
    (discarded,) = [r for r in await p.ledger("crm", ids[0]) if r.state is EventState.DISCARDED]
    assert discarded.reason == "ValidationError: no email on the event"
    (failed,) = [r for r in await p.ledger("crm", ids[2]) if r.state is EventState.DISCARDED]
    assert failed.reason is not None and "KeyError" in failed.reason
    assert "crm.py" in failed.reason  # the traceback names the user's file
    retried = [r for r in await p.ledger("crm", ids[1]) if r.state is EventState.RETRYING]
    assert "RetryError: the CRM answered 503" in (retried[0].reason or "")
    stats = p.engine.functions.pool("crm").stats.snapshot()  # type: ignore[union-attr]
    assert stats["errorsByKind"]["ValidationError"] >= 1
    assert any(f["traceback"] and "KeyError" in f["traceback"] for f in stats["failures"])


BATCH = """
def on_track(event, settings):  # the fallback for batches of one
    answer = on_batch([event], settings)[0]
    if answer["status"] == 400:
        raise ValidationError("400: bad n")
    if answer["status"] >= 500:
        raise RetryError("503: later")

def on_batch(events, settings):
    out = []
    for e in events:
        n = e["properties"]["n"]
        if n == 1:
            out.append({"status": 400, "errormessage": "bad n"})
        elif n == 2:
            out.append({"status": 503, "errormessage": "later"})
        else:
            out.append({"status": 200})
    return out
"""


async def test_on_batch_answers_per_event(
    make_fn_pipeline: Callable[..., Any], code_dir: Callable[[str, str], str]
) -> None:
    fn = {"name": "batched", "kind": "destination", "file": code_dir("batched", BATCH),
          "sources": ["website"], "delivery": {**FAST, "batch_max_events": 10}}  # fmt: skip
    p = await make_fn_pipeline([fn])
    ids = await p.send([event(properties={"n": n}) for n in range(4)])
    await p.wait_states("batched", [ids[0], ids[3]], EventState.DELIVERED)
    await p.wait_states("batched", [ids[1]], EventState.DISCARDED)
    await p.wait_states("batched", [ids[2]], EventState.RETRYING)
    calls = p.engine.functions.pool("batched").stats  # type: ignore[union-attr]
    assert calls.calls < calls.invocations  # batches went in one round trip
