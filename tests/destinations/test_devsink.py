"""The devsink destination: the newest deliveries kept in memory, newest first."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from headwater.delivery.http import HttpClient
from headwater.delivery.outcomes import Delivered, Exchange
from headwater.destinations.devsink import Devsink
from headwater.destinations.devsink.settings import DevsinkSettings
from tests.destinations.conftest import build, outbounds


def devsink(http: HttpClient, keep: int | None = None) -> Devsink:
    destination = build("devsink", {} if keep is None else {"keep": keep}, http, batch_events=100)
    assert isinstance(destination, Devsink)
    return destination


async def test_keeps_the_newest_n_newest_first(http: HttpClient) -> None:
    sink = devsink(http, keep=3)
    sent = outbounds(5)
    await sink.deliver(sent[:2])
    await sink.deliver(sent[2:])
    assert [e["messageId"] for e in sink.recent()] == [e.message_id for e in reversed(sent[2:])]
    assert [e["messageId"] for e in sink.recent(limit=2)] == [
        sent[4].message_id,
        sent[3].message_id,
    ]
    assert sink.delivered_total == 5


async def test_an_entry_is_the_event_and_when_it_arrived(http: HttpClient) -> None:
    sink = devsink(http)
    [event] = outbounds(1)
    before = int(time.time() * 1000)
    attempt = await sink.deliver([event])
    assert isinstance(attempt.outcome, Delivered)
    assert attempt.exchange == Exchange()  # nothing went over a wire
    [entry] = sink.recent()
    assert entry["messageId"] == event.message_id
    assert entry["event"] == event.event
    assert entry["deliveredAtMs"] >= before
    assert entry["latencyMs"] == entry["deliveredAtMs"] - event.received_at_ms


async def test_a_batch_larger_than_keep_leaves_its_newest_events(http: HttpClient) -> None:
    sink = devsink(http, keep=2)
    sent = outbounds(10)
    await sink.deliver(sent)
    assert [e["messageId"] for e in sink.recent()] == [sent[9].message_id, sent[8].message_id]


def test_keep_defaults_and_bounds() -> None:
    assert DevsinkSettings().keep == 1000
    for bad in (0, -1, 100_001):
        with pytest.raises(ValidationError, match="keep"):
            DevsinkSettings.model_validate({"keep": bad})
