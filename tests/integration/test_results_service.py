"""The results service against a real nats-server and a SQLite file: each inspection written once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, Row, func, select
from sqlalchemy.exc import OperationalError

from lineguard.bus import DEAD_REASON, Bus, Delivery, Worker
from lineguard.config import LineConfig
from lineguard.contracts import dead_subject, msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.runtime.service import run_service
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.schema import Defect, Inspection
from lineguard.services.results.service import ResultsHandlers, setup
from lineguard.testing.records import sample_ack, sample_decision
from lineguard.testing.streams import stored
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Decision


@dataclass
class Running:
    bus: Bus
    engine: Engine

    def count(self, table: type = Inspection) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()

    def row(self, inspection_id: str) -> Row | None:
        with self.engine.connect() as conn:
            return conn.execute(select(Inspection.__table__).where(Inspection.inspection_id == inspection_id)).first()

    async def publish(self, decision: Decision, stage: str = "decision") -> None:
        part = decision.part
        await self.bus.publish(
            subject("decision", part.line, part.station), decision, msg_id=msg_id(part.inspection_id, stage)
        )

    async def settled(self, kind: str) -> bool:
        info = await self.bus.js.consumer_info(stream_name(kind), f"results-{kind}")
        return info.num_pending == 0 and info.num_ack_pending == 0


async def dead_letters(bus: Bus, kind: str) -> list:
    return await stored(bus, dead_subject(kind), stream_name("dead"))


async def dead_count(bus: Bus) -> int:
    return (await bus.js.stream_info(stream_name("dead"))).state.messages


@pytest.fixture
async def results(fresh_nats: EmbeddedNats, tmp_path: Path, bus_factory, line_config_dict) -> AsyncIterator[Running]:
    """The service as `lineguard-results` runs it, on a new SQLite file that the migrator's step made."""
    url = f"sqlite:///{tmp_path / 'data' / 'lineguard.db'}"
    upgrade_database(url)
    raw = line_config_dict(nats_url=fresh_nats.url, database_url=url)
    raw["nats"].update(nak_delay_s=0.05)
    stopping = asyncio.Event()
    service = asyncio.create_task(run_service("results", LineConfig(**raw), setup, stopping=stopping))
    bus = await bus_factory("producer")
    await wait_for(lambda: (tmp_path / "data" / "lineguard.db").exists())
    engine = make_engine(url)

    async def consumers_exist() -> bool:
        try:
            await bus.js.consumer_info(stream_name("ack"), "results-ack")
            return True
        except Exception:  # noqa: BLE001 - not made yet, or the service ended early: its task says which
            return service.done()

    await wait_for(consumers_exist)
    assert not service.done(), service.exception()
    yield Running(bus, engine)
    stopping.set()
    await asyncio.wait_for(service, 15)
    engine.dispose()


async def test_twenty_decisions_with_duplicates_make_twenty_rows(results: Running) -> None:
    decisions = [sample_decision(i) for i in range(20)]
    for decision in decisions:
        await results.publish(decision)
    for decision in decisions[:5]:  # stored again under another id: the service sees them twice
        await results.publish(decision, stage="decision-retry")
    for decision in decisions[5:8]:  # the same id: JetStream drops these
        await results.publish(decision)

    await wait_for(lambda: results.count() == 20)
    await wait_for(lambda: results.settled("decision"))
    assert results.count() == 20
    assert results.count(Defect) == 40  # two per decision, none twice
    row = results.row(decisions[3].part.inspection_id)
    assert row is not None and row.sequence == 3 and row.verdict == "FAIL"


async def test_plc_acks_fill_the_rows_even_when_they_overtake_the_decision(results: Running) -> None:
    early, normal = sample_decision(1), sample_decision(2)
    await results.publish(normal)
    await wait_for(lambda: results.count() == 1)
    for decision in (normal, early):
        ack = sample_ack(decision)
        await results.bus.publish(subject("ack", "l1", "s1"), ack, msg_id=msg_id(decision.part.inspection_id, "ack"))
    await asyncio.sleep(0.2)  # the early ack finds no row and is retried with a growing delay
    await results.publish(early)
    await wait_for(
        lambda: all(
            results.row(d.part.inspection_id) is not None
            and results.row(d.part.inspection_id).plc_delivered_at is not None
            for d in (early, normal)
        )
    )
    await wait_for(lambda: results.settled("ack"))
    assert results.row(early.part.inspection_id).plc_verdict == "FAIL"
    assert await dead_count(results.bus) == 0


async def test_a_bad_decision_is_dead_lettered_with_its_reason_and_the_next_is_written(results: Running) -> None:
    bad = sample_decision(1)
    bad.verdict = 9  # type: ignore[assignment]
    no_station = sample_decision(2)
    no_station.part.ClearField("station")
    good = sample_decision(3)
    await results.publish(bad)
    await results.bus.publish(
        subject("decision", "l1", "s1"), no_station, msg_id=msg_id(no_station.part.inspection_id, "decision")
    )
    await results.bus.publish(subject("decision", "l1", "s1"), b"\x08\xff garbage", msg_id="garbage")
    await results.publish(good)

    await wait_for(lambda: results.row(good.part.inspection_id) is not None)
    await wait_for(lambda: results.settled("decision"))
    assert results.count() == 1
    dead = await dead_letters(results.bus, "decision")
    reasons = sorted(d.headers[DEAD_REASON] for d in dead)
    assert len(reasons) == 3
    assert any(f"invalid decision {bad.part.inspection_id}: verdict: unknown value 9" in r for r in reasons)
    assert any("station id '' cannot be part of a NATS subject" in r for r in reasons)
    assert any("undecodable decision message" in r for r in reasons)


async def test_a_database_that_is_down_is_retried_until_it_is_back(bus_factory, tmp_path: Path) -> None:
    bus = await bus_factory("results", max_deliver=5, nak_delay_s=0.05)
    url = f"sqlite:///{tmp_path / 'not-yet' / 'lineguard.db'}"
    engine = make_engine(url)  # its folder does not exist: every connect fails until it does
    handlers = ResultsHandlers(engine, nak_delay_s=0.05)
    attempts: list[int] = []

    async def handle(delivery: Delivery[Decision]) -> None:
        attempts.append(delivery.num_delivered)
        if len(attempts) == 3:
            await asyncio.to_thread(upgrade_database, url)  # the database comes back
        await handlers.decision(delivery)

    decision = sample_decision()
    await bus.publish(subject("decision", "l1", "s1"), decision, msg_id="d1")
    worker = Worker(bus, kind="decision", line="l1", message_type=Decision, handler=handle)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:

        def written() -> bool:
            try:
                with engine.connect() as conn:
                    return conn.execute(select(func.count()).select_from(Inspection)).scalar_one() == 1
            except OperationalError:  # not there yet, or being migrated
                return False

        await wait_for(written)
    finally:
        stopping.set()
        await task
    assert attempts == [1, 2, 3]  # nak'd twice, written on the third delivery
    assert await dead_count(bus) == 0
    info = await bus.js.consumer_info(stream_name("decision"), "results-decision")
    assert info.num_ack_pending == 0 and info.num_pending == 0
    engine.dispose()
