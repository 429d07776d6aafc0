"""yield_hours, the writer's hourly counts, against the truth: a GROUP BY over every inspection, on SQLite and
PostgreSQL, with redeliveries, a refused record, batches written at once by two writers, and the migration's count
of the hours recorded before it."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from lineguard.config import LineConfig
from lineguard.services.results.api.filters import AggregateFilters
from lineguard.services.results.api.queries import grouped_yield_buckets, yield_buckets
from lineguard.services.results.batch import Refused, write_batch
from lineguard.services.results.db import downgrade_database, make_engine, upgrade_database
from lineguard.services.results.records import InspectionRows, LineFacts, decision_rows, to_unix_ns
from lineguard.services.results.schema import Inspection, YieldHour
from lineguard.testing.postgres import empty_database
from lineguard.testing.records import sample_decision
from lineguard.v1.decision_pb2 import Verdict

START = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)  # Europe/Berlin moves its clocks the night after
SPAN = timedelta(days=3)
VERDICTS = (Verdict.VERDICT_PASS,) * 6 + (Verdict.VERDICT_FAIL, Verdict.VERDICT_REWORK, Verdict.VERDICT_ERROR)


def _facts(line_config_dict: Any) -> LineFacts:
    raw = line_config_dict()
    raw["calendar"] = {
        "timezone": "Europe/Berlin",
        "shifts": [
            {"name": "early", "start": "06:00", "end": "14:00"},
            {"name": "late", "start": "14:00", "end": "22:00"},
            {"name": "night", "start": "22:00", "end": "06:00"},
        ],
    }
    return LineFacts.of(LineConfig(**raw))


def _decisions(facts: LineFacts, count: int, rng: random.Random) -> list[InspectionRows]:
    """`count` decisions at random instants of SPAN, each decided 10 ms to 3 s after its trigger (so some cross
    an hour, and a shift, between the two), random verdicts and stations."""
    made = []
    for i in range(count):
        triggered = START + timedelta(seconds=rng.uniform(0, SPAN.total_seconds()))
        decision = sample_decision(
            i, verdict=rng.choice(VERDICTS), station=rng.choice(("s1", "s2")), triggered_ns=to_unix_ns(triggered)
        )
        decision.decided_unix_ns = decision.part.triggered_unix_ns + rng.randrange(10, 3000) * 1_000_000
        if decision.verdict == Verdict.VERDICT_PASS:
            del decision.reason_codes[:]
        made.append(decision_rows(decision, facts))
    return made


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as found:
        upgrade_database(found)
        yield found


def _hours(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(select(*YieldHour.__table__.c).order_by(*YieldHour.__table__.primary_key))
        ]


def _write_with_redeliveries(engine: Engine, made: list[InspectionRows], rng: random.Random) -> int:
    """`made` in batches of random sizes, a fifth of them delivered again (in their own batch or a later one), one
    record the database refuses among them; the inspections written."""
    queue = list(made) + rng.sample(made, len(made) // 5)
    rng.shuffle(queue)
    refused = InspectionRows({**made[0].inspection, "inspection_id": "f" * 8 + made[0].inspection_id[8:]})
    refused.inspection["verdict"] = "MAYBE"  # passes nothing but the database's CHECK: split out, not counted
    queue.insert(len(queue) // 2, refused)
    outcomes: list[Any] = []
    while queue:
        size = rng.randrange(1, 120)
        outcomes += write_batch(engine, queue[:size])
        queue = queue[size:]
    assert sum(isinstance(o, Refused) for o in outcomes) == 1
    return sum(o is True for o in outcomes)


def _ranges(rng: random.Random) -> Iterator[tuple[datetime, datetime]]:
    yield START - timedelta(hours=3), START + SPAN + timedelta(hours=1)  # whole hours only
    yield START + timedelta(minutes=7, seconds=3.5), START + timedelta(hours=30, minutes=59)  # both ends partial
    yield START + timedelta(hours=5, minutes=10), START + timedelta(hours=5, minutes=50)  # inside one hour
    yield START + timedelta(hours=5, minutes=10), START + timedelta(hours=6)  # up to the next whole hour
    for _ in range(6):
        a, b = sorted(START + timedelta(seconds=rng.uniform(0, SPAN.total_seconds())) for _ in range(2))
        yield a, b


def test_yield_from_the_writers_counts_equals_the_group_by_of_every_inspection(url: str, line_config_dict) -> None:
    rng = random.Random(8)
    facts = _facts(line_config_dict)
    engine = make_engine(url)
    try:
        made = _decisions(facts, 600, rng)
        assert _write_with_redeliveries(engine, made, rng) == len(made)
        with engine.connect() as conn:
            assert conn.scalar(select(func.sum(YieldHour.parts))) == conn.scalar(
                select(func.count(Inspection.inspection_id))
            )
        asked = 0
        for start, end in _ranges(rng):
            for by in ("hour", "day", "shift"):
                for where in ({}, {"line": "l1"}, {"station": "s2"}, {"line": "l2"}):
                    filters = AggregateFilters(start=start, end=end, by=by, **where)
                    truth = grouped_yield_buckets(engine, filters)
                    assert yield_buckets(engine, filters) == truth, (start, end, by, where)
                    asked += bool(truth)
        assert asked > 60  # most questions had parts to count
    finally:
        engine.dispose()


def test_two_writers_at_once_count_each_inspection_once(url: str, line_config_dict) -> None:
    rng = random.Random(9)
    facts = _facts(line_config_dict)
    engine = make_engine(url)
    made = _decisions(facts, 400, rng)
    written: list[int] = []
    failures: list[BaseException] = []

    def writer(seed: int) -> None:
        # The same decisions in the same order (as two consumers handed the same redeliveries), cut differently.
        size, done = 17 + seed * 23, 0
        try:
            for i in range(0, len(made), size):
                done += sum(o is True for o in write_batch(engine, made[i : i + size]))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failures.append(exc)
        written.append(done)

    try:
        threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures and sum(written) == len(made)
        filters = AggregateFilters(start=START, end=START + SPAN + timedelta(hours=1), by="hour")
        assert yield_buckets(engine, filters) == grouped_yield_buckets(engine, filters)
    finally:
        engine.dispose()


def test_0008_counts_the_hours_recorded_before_it_as_the_writer_does(url: str, line_config_dict) -> None:
    rng = random.Random(10)
    facts = _facts(line_config_dict)
    engine = make_engine(url)
    try:
        made = _decisions(facts, 300, rng)
        assert all(o is True for o in write_batch(engine, made))
        kept = _hours(engine)
        assert kept and sum(row[6] for row in kept) == len(made)
        downgrade_database(url, "0007")
        upgrade_database(url)
        assert _hours(engine) == kept
        # The writer goes on counting into the very rows the migration made (the same keys, bound the same way).
        more = _decisions(facts, 100, rng)
        assert all(o is True for o in write_batch(engine, more))
        assert len(_hours(engine)) == len({row[:4] for row in _hours(engine)})
        filters = AggregateFilters(start=START, end=START + SPAN + timedelta(hours=1), by="hour")
        assert yield_buckets(engine, filters) == grouped_yield_buckets(engine, filters)
    finally:
        engine.dispose()


def test_a_value_too_long_for_its_column_is_refused_not_cut(line_config_dict) -> None:
    # PostgreSQL's: the inspections go in as one JSON document (batch.py), each value through its column's type.
    with empty_database("postgresql", Path()) as found:
        upgrade_database(found)
        engine = make_engine(found)
        try:
            made = _decisions(_facts(line_config_dict), 5, random.Random(11))
            made[2].inspection["lot"] = "L" * 65  # the column holds 64
            outcomes = write_batch(engine, made)
            assert isinstance(outcomes[2], Refused) and "too long" in str(outcomes[2])
            assert [o for i, o in enumerate(outcomes) if i != 2] == [True] * 4
            with engine.connect() as conn:
                assert conn.scalar(select(func.sum(YieldHour.parts))) == 4
                assert conn.scalar(select(func.count()).where(Inspection.lot.is_not(None))) == 0
        finally:
            engine.dispose()
