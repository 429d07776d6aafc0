"""Exactly once under failure: the results service's PostgreSQL connections cut (pg_terminate_backend) again and
again while it writes batches of decisions, some delivered twice, and the PostgreSQL server itself SIGKILLed mid-batch
(a cluster of the test's own) and started again; afterwards every inspection is there once, with all of its defects,
reads and reasons once (real nats-server, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.schema import Code, Defect, Inspection, InspectionReason
from lineguard.services.results.service import setup
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import running_service, throwaway_database
from lineguard.testing.postgres import OwnCluster, cut_connections
from lineguard.testing.records import busy_decision
from lineguard.testing.streams import settled
from lineguard.testing.waiting import wait_for

DECISIONS = 1500
TWICE = 300  # the first TWICE decisions are published again under another message id: a redelivery to the writer


@pytest.fixture
def pg_database() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


def failed_batches() -> float:
    return REGISTRY.get_sample_value("lineguard_results_write_batches_total", {"outcome": "failed"}) or 0.0


@contextlib.asynccontextmanager
async def results_service(nats: EmbeddedNats, url: str) -> AsyncIterator[Bus]:
    upgrade_database(url)
    raw = demo_config_dict(nats_url=nats.url, database_url=url, opcua_endpoint="opc.tcp://127.0.0.1:4840/")
    raw["nats"].update(nak_delay_s=0.05, fetch_batch=64)
    raw["database"].update(write_batch=100, write_wait_ms=5)
    config = LineConfig(**raw)
    async with running_service("results", config, setup, timeout_s=60):
        bus = await Bus.connect(config.nats, "producer")
        try:
            yield bus
        finally:
            await bus.close()


async def test_connections_cut_mid_batch_lose_nothing_and_double_nothing(
    fresh_nats: EmbeddedNats, pg_database: str
) -> None:
    decisions = some_decisions()
    async with results_service(fresh_nats, pg_database) as bus:
        failed = failed_batches()
        cut_mid_batch = 0
        publishing = asyncio.create_task(publish_all(bus, decisions))
        # Cut the writer's connections whenever one is inside a statement or a transaction: a batch half written.
        for _ in range(400):
            cut = await asyncio.to_thread(cut_connections, pg_database, busy_only=True)
            cut_mid_batch += len(cut)
            if publishing.done() and cut_mid_batch >= 5:
                break
            await asyncio.sleep(0.02)
        await publishing

        await wait_for(lambda: settled(bus, "decision", "results-decision"), timeout=120)
        assert cut_mid_batch >= 5, f"only {cut_mid_batch} connections were cut mid-batch"
        assert failed_batches() > failed  # the cuts were felt: batches failed, were handed back and came again
        assert (await bus.js.stream_info(stream_name("dead"))).state.messages == 0
    assert_each_once(pg_database, decisions)


async def test_the_server_killed_mid_batch_and_started_again_loses_nothing_and_doubles_nothing(
    fresh_nats: EmbeddedNats,
) -> None:
    decisions = some_decisions()
    with OwnCluster() as cluster:
        async with results_service(fresh_nats, cluster.url) as bus:
            failed = failed_batches()
            # Paced, so that the kills land while decisions still arrive and batches are being written.
            publishing = asyncio.create_task(publish_all(bus, decisions, per_s=400))
            # Twice while the writer is busy (a third and two thirds of the way): no shutdown checkpoint, the batch in
            # hand lost with its transaction.
            for written in (DECISIONS // 3, 2 * DECISIONS // 3):
                await wait_for(lambda w=written: rows_written(cluster.url) >= w, timeout=120)
                await asyncio.to_thread(cluster.kill)
                await asyncio.sleep(1.0)  # away long enough for the writer to fail batches and hand them back
                await asyncio.to_thread(cluster.start)
            await publishing
            await wait_for(lambda: settled(bus, "decision", "results-decision"), timeout=180)
            assert failed_batches() > failed  # the kills were felt
            assert (await bus.js.stream_info(stream_name("dead"))).state.messages == 0
        assert_each_once(cluster.url, decisions)


def rows_written(url: str) -> int:
    """Inspections on record now (0 while the server is away)."""
    try:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM inspections").fetchone()
    except psycopg.OperationalError:
        return 0
    return int(row[0]) if row else 0


def some_decisions() -> list:
    return [busy_decision(i, triggered_ns=1_780_000_000_000_000_000 + i * 1_000_000) for i in range(DECISIONS)]


async def publish_all(bus: Bus, decisions: list, per_s: float | None = None) -> None:
    """Each decision once (the first TWICE again under another message id); at `per_s` when given."""
    for i, decision in enumerate(decisions):
        if per_s is not None and i % 50 == 0:
            await asyncio.sleep(50 / per_s)
        part = decision.part
        where = subject("decision", part.line, part.station)
        await bus.publish(where, decision, msg_id=msg_id(part.inspection_id, "decision"))
        if i < TWICE:
            await bus.publish(where, decision, msg_id=msg_id(part.inspection_id, "decision-again"))


def assert_each_once(url: str, decisions: list) -> None:
    """Every decision's inspection on record once, with each of its defects, reads and reasons once."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ids = {d.part.inspection_id for d in decisions}
            assert set(conn.execute(select(Inspection.inspection_id)).scalars()) == ids
            for table, each in ((Defect, 3), (Code, 2), (InspectionReason, 2)):
                counts = conn.execute(select(table.inspection_id, func.count()).group_by(table.inspection_id)).all()
                assert len(counts) == DECISIONS, table.__tablename__
                assert {n for _, n in counts} == {each}, f"{table.__tablename__}: {sorted({n for _, n in counts})}"
    finally:
        engine.dispose()
