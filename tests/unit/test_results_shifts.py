"""The shift calendar: a part's shift by the plant's wall clock, night shifts across midnight and daylight saving."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import yaml

from lineguard.config import ConfigError, parse_config
from lineguard.config.model import ShiftCalendar
from lineguard.services.results.shifts import ShiftSlot, shift_at

BERLIN = ShiftCalendar(
    timezone="Europe/Berlin",
    shifts=[
        {"name": "early", "start": "06:00", "end": "14:00"},
        {"name": "late", "start": "14:00", "end": "22:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
        {"name": "night", "start": "22:00", "end": "06:00"},
    ],
)


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("utc", "slot"),
    [
        ("2026-05-28T04:00:00", ShiftSlot("early", date(2026, 5, 28))),  # 06:00 CEST: the first minute of early
        ("2026-05-28T11:59:59", ShiftSlot("early", date(2026, 5, 28))),  # 13:59:59 CEST
        ("2026-05-28T12:00:00", ShiftSlot("late", date(2026, 5, 28))),
        ("2026-05-28T20:00:00", ShiftSlot("night", date(2026, 5, 28))),
        ("2026-05-29T03:59:59", ShiftSlot("night", date(2026, 5, 28))),  # Friday 05:59 is Thursday's night
        ("2026-05-30T13:00:00", None),  # Saturday 15:00: late runs Monday to Friday
        # Daylight saving starts 2026-03-29 at 02:00 CET: the night from Saturday is an hour short, by the wall clock.
        ("2026-03-29T03:59:00", ShiftSlot("night", date(2026, 3, 28))),  # 05:59 CEST
        ("2026-03-29T04:00:00", ShiftSlot("early", date(2026, 3, 29))),  # 06:00 CEST
        # It ends 2026-10-25 at 03:00 CEST: 02:30 happens twice, both in Saturday's night.
        ("2026-10-25T00:30:00", ShiftSlot("night", date(2026, 10, 24))),
        ("2026-10-25T01:30:00", ShiftSlot("night", date(2026, 10, 24))),
        ("2026-10-25T05:00:00", ShiftSlot("early", date(2026, 10, 25))),  # 06:00 CET
    ],
)
def test_shift_by_the_plants_wall_clock(utc: str, slot: ShiftSlot | None) -> None:
    assert shift_at(BERLIN, at(utc)) == slot


def test_no_calendar_no_shift() -> None:
    assert shift_at(ShiftCalendar(), at("2026-05-28T04:00:00")) is None


def config_with(calendar: dict) -> str:
    from lineguard.sim.lineconfig import demo_config_dict

    raw = demo_config_dict(nats_url="nats://127.0.0.1:1", database_url="sqlite://", opcua_endpoint="opc.tcp://x:1/")
    return yaml.safe_dump({**raw, "calendar": calendar}, sort_keys=False)


@pytest.mark.parametrize(
    ("calendar", "problem"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        (
            {
                "shifts": [
                    {"name": "a", "start": "06:00", "end": "14:00"},
                    {"name": "b", "start": "13:00", "end": "15:00"},
                ]
            },
            "shifts overlap: a (mon 06:00) and b (mon 13:00)",
        ),
        ({"shifts": [{"name": "a", "start": "25:00", "end": "14:00"}]}, "calendar.shifts[0].start"),
        (
            {"shifts": [{"name": "a", "start": "06:00", "end": "14:00", "days": ["someday"]}]},
            "calendar.shifts[0].days[0]",
        ),
    ],
)
def test_a_bad_calendar_is_a_config_error_naming_the_field(calendar: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(config_with(calendar))
    assert problem in str(refused.value)
