""" "This shift" and "today" as UTC ranges, by the line's calendar and the plant's wall clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from lineguard.config.model import ShiftCalendar
from lineguard.services.results.shifts import shift_at


@dataclass(frozen=True)
class Period:
    label: str
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive


def today(calendar: ShiftCalendar, now: datetime) -> Period:
    zone = ZoneInfo(calendar.timezone)
    local = now.astimezone(zone)
    midnight = datetime.combine(local.date(), datetime.min.time(), tzinfo=zone)
    following = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return Period(f"today ({local:%Y-%m-%d})", midnight.astimezone(UTC), following.astimezone(UTC))


def this_shift(calendar: ShiftCalendar, now: datetime) -> Period | None:
    """The shift running now; None when the calendar has none now (or no shifts at all)."""
    slot = shift_at(calendar, now)
    if slot is None:
        return None
    shift = next(s for s in calendar.shifts if s.name == slot.name)
    zone = ZoneInfo(calendar.timezone)
    start = datetime.combine(slot.day, shift.start, tzinfo=zone)
    end = datetime.combine(slot.day, shift.start) + timedelta(minutes=shift.minutes())
    return Period(
        f"shift {slot.name} ({slot.day:%Y-%m-%d})", start.astimezone(UTC), end.replace(tzinfo=zone).astimezone(UTC)
    )
