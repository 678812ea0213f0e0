"""The fast paths of normalisation agree with the slow, obviously-right ones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from headwater.gateway.normalize import _parse_slow, iso_ms, new_message_id, parse_ms

moments = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC))


@given(moments)
def test_sdk_shaped_timestamps_parse_as_fromisoformat_does(moment: datetime) -> None:
    text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert len(text) == 24
    expected = _parse_slow(text, "timestamp")
    assert parse_ms(text, "timestamp") == expected
    assert parse_ms(text, "timestamp") == expected, "the cached second gives the same answer"


@given(moments)
def test_formatting_round_trips(moment: datetime) -> None:
    epoch_ms = round(moment.timestamp() * 1000)
    text = iso_ms(epoch_ms)
    assert datetime.fromisoformat(text) == moment
    assert parse_ms(text, "timestamp") == epoch_ms


def test_other_shapes_take_the_slow_path() -> None:
    base = datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=UTC)
    for text in ("2026-11-26T12:00:00.123+00:00", "2026-11-26T13:00:00.123+01:00",
                 "2026-11-26T12:00:00.123456Z", "2026-11-26 12:00:00.123"):  # fmt: skip
        assert parse_ms(text, "t") == round(base.timestamp() * 1000), text
    assert (
        parse_ms("2026-11-26T12:00:00.123Z", "t") - parse_ms("2026-11-26T12:00:01.123Z", "t")
        == -1000
    )


def test_generated_message_ids_are_version_4_uuids() -> None:
    ids = [new_message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
