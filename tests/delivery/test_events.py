"""The compact forms of events and offsets the delivery store keeps."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from headwater.delivery.events import (
    OutboundEvent,
    count_offsets,
    offsets_contain,
    pack_events,
    pack_offsets,
    unpack_events,
    unpack_runs,
)

events = st.builds(
    OutboundEvent,
    offset=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    message_id=st.text(max_size=100),
    received_at_ms=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    payload=st.binary(max_size=300),
)


@given(st.lists(events, max_size=30))
def test_events_round_trip(batch: list[OutboundEvent]) -> None:
    back = unpack_events(pack_events(batch))
    assert [(e.offset, e.message_id, e.received_at_ms, e.payload) for e in back] == [
        (e.offset, e.message_id, e.received_at_ms, e.payload) for e in batch
    ]


def test_event_parses_its_payload_once() -> None:
    event = OutboundEvent(7, "m1", 1, b'{"type":"track","event":"A"}')
    assert event.event == {"type": "track", "event": "A"}
    assert event.event is event.event
    assert OutboundEvent(8, "m2", 1, b"[1,2]").event == {}
    [back] = unpack_events(pack_events([OutboundEvent(9, "ü-✓", 3, b"{}")]))
    assert back.message_id == "ü-✓"


offsets = st.lists(st.integers(min_value=-50, max_value=2**62), max_size=80)


@given(offsets)
def test_offset_runs_round_trip(values: list[int]) -> None:
    data = pack_offsets(values)
    runs = unpack_runs(data)
    expanded = [o for first, last in runs for o in range(first, last + 1)] if values else []
    if max(values, default=0) - min(values, default=0) < 10_000:
        assert expanded == sorted(set(values))
    assert count_offsets(data) == len(set(values))
    # runs are sorted, disjoint and not adjacent (else they would be one run)
    for (_, last), (first, _) in itertools.pairwise(runs):
        assert first > last + 1


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=60), st.data())
def test_offset_membership(values: list[int], data: st.DataObject) -> None:
    packed = pack_offsets(values)
    for probe in [*values, -1, 0, 201, *data.draw(st.lists(st.integers(-5, 205), max_size=30))]:
        assert offsets_contain(packed, probe) == (probe in values), probe


def test_offset_runs_are_compact() -> None:
    consecutive = pack_offsets(range(1, 100_001))
    assert unpack_runs(consecutive) == [(1, 100_000)]
    assert len(consecutive) == 12
    assert offsets_contain(consecutive, 1) and offsets_contain(consecutive, 100_000)
    assert not offsets_contain(consecutive, 0) and not offsets_contain(consecutive, 100_001)
    assert unpack_runs(pack_offsets([5, 3, 4, 4, 9, 10, 1])) == [(1, 1), (3, 5), (9, 10)]
    assert pack_offsets([]) == b"" and not offsets_contain(b"", 1)
