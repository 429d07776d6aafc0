"""Which shift of the line's calendar an inspection fell in, by the plant's wall clock.

A shift is named by the local day it started on and its name: a night shift from 22:00 to
06:00 is one shift, `2026-03-02 night`, on both sides of midnight. Wall-clock times are
compared, so a shift keeps its hours across daylight saving (the night shift of a change
lasts an hour more or less, as it does on the shop floor)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from lineguard.config.model import ShiftCalendar

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ShiftSlot:
    name: str
    day: date  # the plant's local date the shift started on


def shift_at(calendar: ShiftCalendar, at: datetime) -> ShiftSlot | None:
    """The shift `at` (an aware datetime) fell in; None when the calendar has no shift then."""
    local = at.astimezone(ZoneInfo(calendar.timezone)).replace(tzinfo=None)
    for shift in calendar.shifts:
        # A shift lasts at most a day, so it started today or yesterday.
        for day in (local.date(), local.date() - timedelta(days=1)):
            if _WEEKDAYS[day.weekday()] not in shift.days:
                continue
            start = datetime.combine(day, shift.start)
            if start <= local < start + timedelta(minutes=shift.minutes()):
                return ShiftSlot(shift.name, day)
    return None
