"""The results service keeps every PLC ack: through a PostgreSQL outage longer than max_deliver tries, ahead of
its decision by longer than those tries, and across a stop (real nats-server, real SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func, select

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.schema import Inspection
from lineguard.services.results.service import setup
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import running_service, throwaway_database
from lineguard.testing.postgres import give_database_back, take_database_away
from lineguard.testing.records import sample_ack, sample_decision
from lineguard.testing.services import RunningService
from lineguard.testing.streams import settled
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Decision

MAX_DELIVER = 3
NAK_DELAY_S = 0.1
# What the ack consumer used to try before it gave up: NAK_DELAY_S doubling, MAX_DELIVER times.
GIVE_UP_AFTER_S = sum(NAK_DELAY_S * 2**i for i in range(MAX_DELIVER))


@dataclass
class Results:
    """A results service running in this test, its bus and its database."""

    bus: Bus
    engine: Engine
    service: RunningService

    async def decide(self, decision: Decision) -> None:
        part = decision.part
        await self.bus.publish(
            subject("decision", part.line, part.station), decision, msg_id=msg_id(part.inspection_id, "decision")
        )

    async def ack(self, decision: Decision) -> None:
        await self.bus.publish(
            subject("ack", "l1", "s1"), sample_ack(decision), msg_id=msg_id(decision.part.inspection_id, "ack")
        )

    def filled(self, decisions: list[Decision]) -> int:
        """How many of `decisions` have their row with the PLC columns filled."""
        ids = [d.part.inspection_id for d in decisions]
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(Inspection)
                .where(Inspection.inspection_id.in_(ids), Inspection.plc_delivered_at.is_not(None))
            ).scalar_one()

    async def settled(self, kind: str) -> bool:
        return await settled(self.bus, kind, f"results-{kind}")

    async def dead(self) -> int:
        return (await self.bus.js.stream_info(stream_name("dead"))).state.messages


def retries(kind: str) -> float:
    return (
        REGISTRY.get_sample_value("lineguard_messages_total", {"service": "results", "kind": kind, "outcome": "retry"})
        or 0.0
    )


@contextlib.asynccontextmanager
async def results_service(nats: EmbeddedNats, url: str) -> AsyncIterator[Results]:
    upgrade_database(url)  # the migrator's step: the service itself never migrates
    raw = demo_config_dict(nats_url=nats.url, database_url=url, opcua_endpoint="opc.tcp://127.0.0.1:4840/")
    raw["nats"].update(max_deliver=MAX_DELIVER, nak_delay_s=NAK_DELAY_S)
    config = LineConfig(**raw)
    async with running_service("results", config, setup, timeout_s=60) as service:
        bus = await Bus.connect(config.nats, "producer")
        engine = make_engine(url)
        try:
            yield Results(bus, engine, service)
        finally:
            await bus.close()
            engine.dispose()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test's own: it is taken away and given back, never the server."""
    with throwaway_database() as url:
        yield url


async def test_acks_through_a_postgresql_outage_longer_than_max_deliver_tries_are_all_recorded(
    fresh_nats: EmbeddedNats, pg_database: str
) -> None:
    before = [sample_decision(i) for i in range(10)]  # written before the outage, acked during it
    during = [sample_decision(i) for i in range(10, 20)]  # acked, then decided, during the outage
    async with results_service(fresh_nats, pg_database) as results:
        for decision in before:
            await results.decide(decision)
        await wait_for(lambda: results.settled("decision"))
        tried = retries("ack")
        take_database_away(pg_database)
        try:
            for decision in before + during:
                await results.ack(decision)
            for decision in during:
                await results.decide(decision)
            await asyncio.sleep(4 * GIVE_UP_AFTER_S)
            assert await results.dead() == 0
            # Every ack was tried more often than the ack consumer used to before it dead-lettered it.
            assert retries("ack") - tried >= len(before + during) * MAX_DELIVER
        finally:
            give_database_back(pg_database)
        await wait_for(lambda: results.filled(before + during) == 20, timeout=30)
        await wait_for(lambda: results.settled("ack"))
        await wait_for(lambda: results.settled("decision"))
        assert await results.dead() == 0


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_an_ack_far_ahead_of_its_decision_is_recorded_at_once_and_fills_the_row_later(
    dialect: str, fresh_nats: EmbeddedNats, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A decision service killed under load: its held inputs come back after ack_wait_s (30 s), the part's ack
    # (FAIL / TIMEOUT at the PLC) long before its decision.
    url = f"sqlite:///{tmp_path / 'lineguard.db'}" if dialect == "sqlite" else request.getfixturevalue("postgres_url")
    decision = sample_decision()
    async with results_service(fresh_nats, url) as results:
        await results.ack(decision)
        await wait_for(lambda: results.settled("ack"))  # written at once, not waiting for the decision
        await asyncio.sleep(GIVE_UP_AFTER_S)
        await results.decide(decision)
        await wait_for(lambda: results.filled([decision]) == 1)
        assert await results.dead() == 0


async def test_a_stop_first_writes_the_acks_waiting_for_a_retry(fresh_nats: EmbeddedNats, pg_database: str) -> None:
    # The demo's last part: its ack was waiting for a retry when the results service was told to stop.
    decisions = [sample_decision(i) for i in range(5)]
    async with results_service(fresh_nats, pg_database) as results:
        for decision in decisions:
            await results.decide(decision)
        await wait_for(lambda: results.settled("decision"))
        tried = retries("ack")
        take_database_away(pg_database)
        try:
            for decision in decisions:
                await results.ack(decision)
            await wait_for(lambda: retries("ack") - tried >= len(decisions))
            results.service.stopping.set()
            await asyncio.sleep(0.5)
            assert not results.service.task.done()  # still draining
        finally:
            give_database_back(pg_database)
        await results.service.stop()
        assert results.filled(decisions) == len(decisions)


async def test_a_stop_first_writes_the_backlog_on_the_streams(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    decisions = [sample_decision(i) for i in range(60)]
    async with results_service(fresh_nats, f"sqlite:///{tmp_path / 'lineguard.db'}") as results:
        for decision in decisions:
            await results.decide(decision)
            await results.ack(decision)
        await results.service.stop()
        assert results.filled(decisions) == len(decisions)
