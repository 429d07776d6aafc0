"""The one form of every database time lineguard prints (the API's JSON and CSV, `lineguard trace --json`, the shadow
report): ISO 8601 in UTC with a `Z`, always to the microsecond, e.g. `2026-05-28T14:02:11.000000Z` (docs/api.md).

A fixed width, so the text sorts as the times do and one format string parses every value. The database hands the
same column back in several shapes: SQLite as naive values or, through plain SQL, as text (`2026-05-28 14:02:11.5`),
PostgreSQL in its session's time zone; every one of them is the UTC time lineguard wrote."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime | str) -> datetime:
    """`value` as an aware UTC datetime: a naive one, or text without an offset, is taken as UTC (what lineguard
    wrote), one with an offset is converted."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def utc_iso(value: datetime | str) -> str:
    """`value` in the one printed form, `2026-05-28T14:02:11.000000Z`."""
    # isoformat, not strftime: 1.2 us a value against 1.9, and every time of an API page comes through here. A UTC
    # value's ends in +00:00, which the Z replaces.
    return as_utc(value).isoformat(timespec="microseconds")[:-6] + "Z"
