"""lineguard.timestamps: the one printed form of a database time, from each shape the databases hand one back in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from lineguard.timestamps import as_utc, utc_iso

BERLIN_SUMMER = timezone(timedelta(hours=2))


def test_every_shape_of_one_time_prints_the_same() -> None:
    shapes = (
        datetime(2026, 5, 28, 20, 26, 40, 123456, tzinfo=UTC),  # through the schema's UTCDateTime
        datetime(2026, 5, 28, 20, 26, 40, 123456),  # SQLite, naive: written as UTC
        "2026-05-28 20:26:40.123456",  # SQLite through plain SQL: its text
        datetime(2026, 5, 28, 22, 26, 40, 123456, tzinfo=BERLIN_SUMMER),  # PostgreSQL in a session's zone
    )
    assert {utc_iso(s) for s in shapes} == {"2026-05-28T20:26:40.123456Z"}
    assert {as_utc(s) for s in shapes} == {datetime(2026, 5, 28, 20, 26, 40, 123456, tzinfo=UTC)}


def test_a_whole_second_keeps_its_six_digits() -> None:
    # One width for every value: the text sorts as the times do and one format string parses them all.
    assert utc_iso(datetime(2026, 5, 28, 20, tzinfo=UTC)) == "2026-05-28T20:00:00.000000Z"
    assert utc_iso("2026-05-28 20:00:00") == "2026-05-28T20:00:00.000000Z"
