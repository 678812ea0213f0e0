"""The delivery state of an event with each destination, queried by messageId."""

from __future__ import annotations

from typing import Any

from headwater.delivery.outcomes import EventState
from tests.delivery.conftest import Pipeline, event
from tests.fakes import FakeDestination, Reply, always


def hook(name: str, url: str, **delivery: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "sources": ["website"],
            "settings": {"url": url}, "delivery": delivery}  # fmt: skip


async def states_by_destination(pipeline: Pipeline, message_id: str) -> dict[str, Any]:
    found = await pipeline.engine.states(message_id)
    assert found is not None, f"{message_id} is not in the log"
    _, states = found
    return {s.destination: s for s in states}


async def test_each_destination_has_its_own_state(make_pipeline: Any) -> None:
    with (
        FakeDestination() as ok,
        FakeDestination(always(401, body=b'{"error":"token revoked"}')) as refused,
        FakeDestination(always(503)) as failing,
    ):
        pipeline = await make_pipeline(
            [
                hook("ok", ok.url),
                hook("refused", refused.url),
                hook("failing", failing.url, backoff_base_secs=30),
                {"name": "other", "type": "devsink", "sources": ["backend"]},
            ]
        )
        [mid] = await pipeline.send([event()])
        await pipeline.wait(lambda: ok.requests and refused.requests and failing.requests)
        await pipeline.wait(lambda: pipeline.engine.workers["failing"].stats.retried > 0)
        await pipeline.wait(lambda: pipeline.engine.workers["refused"].stats.discarded > 0)

        states = await states_by_destination(pipeline, mid)
        assert set(states) == {"ok", "refused", "failing"}, "'other' takes another source"

        delivered = states["ok"]
        assert delivered.state is EventState.DELIVERED and delivered.state.terminal
        assert (delivered.attempts, delivered.status) == (1, 200) and delivered.at_ms

        discarded = states["refused"]
        assert discarded.state is EventState.DISCARDED and discarded.status == 401
        assert "token revoked" in (discarded.reason or "")
        [row] = discarded.history
        assert row.exchange is not None and row.exchange["response"]["status"] == 401

        retrying = states["failing"]
        assert retrying.state is EventState.RETRYING and not retrying.state.terminal
        assert retrying.status == 503 and retrying.attempts == 1
        assert retrying.next_attempt_ms is not None and retrying.next_attempt_ms > delivered.at_ms
        assert "HTTP 503" in (retrying.reason or "")


async def test_filtered_and_queued_states(make_pipeline: Any) -> None:
    gate = {"open": False}
    with FakeDestination(lambda _r, _i: Reply(200, delay_secs=0 if gate["open"] else 2)) as slow:
        pipeline = await make_pipeline([hook("slow", slow.url, concurrency=1)])
        [_first, second] = await pipeline.send([event(), event()])
        [skipped] = await pipeline.send([event(integrations={"All": False})])
        await pipeline.wait(lambda: len(slow.requests) >= 1)
        states = await states_by_destination(pipeline, second)
        assert states["slow"].state is EventState.QUEUED
        gate["open"] = True
        await pipeline.wait(lambda: len(slow.requests) >= 2)
        await pipeline.wait(lambda: pipeline.engine.workers["slow"].stats.filtered == 1)
        states = await states_by_destination(pipeline, skipped)
        assert states["slow"].state is EventState.FILTERED
        assert "integrations.All is false" in (states["slow"].reason or "")
    assert await pipeline.engine.states("no-such-id") is None
