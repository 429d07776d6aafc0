"""The results service: decisions and PLC acks in, MES rows out.

At start the database is brought to the current schema (a fresh SQLite file gets
it whole). A decision is acked only after its row is committed; a database that
is down raises, so the worker naks and the message comes back later."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stamina
import structlog
from prometheus_client import Counter
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from lineguard.bus import BadMessage, Delivery, Retry
from lineguard.contracts import verdict_name
from lineguard.runtime.service import ServiceContext
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.records import InvalidRecord
from lineguard.services.results.store import record_plc_ack, write_decision
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.plc_pb2 import PlcAck

log = structlog.get_logger("lineguard.results")

ROWS = Counter("lineguard_results_inspections_total",
               "Decisions handled by the results service: new rows, or duplicates already written",
               ["outcome"])
BACKOFF_MAX_S = 30.0


@dataclass
class ResultsHandlers:
    """The two consumers' handlers, over one engine."""

    engine: Engine
    nak_delay_s: float = 1.0

    async def _store(self, write: Callable[[Engine, Any], bool], delivery: Delivery[Any]) -> bool:
        """Run one write off the event loop: a bad record is a dead letter, a database down a retry."""
        try:
            return await asyncio.to_thread(write, self.engine, delivery.message)
        except InvalidRecord as exc:
            raise BadMessage(str(exc)) from None
        except OperationalError as exc:
            raise Retry(f"database unavailable: {exc.orig or exc}", delay_s=self._backoff(delivery)) from exc

    async def decision(self, delivery: Delivery[Decision]) -> None:
        new = await self._store(write_decision, delivery)
        ROWS.labels("new" if new else "duplicate").inc()
        log.debug("inspection written" if new else "inspection already written",
                  verdict=verdict_name(delivery.message.verdict), tries=delivery.num_delivered)

    async def ack(self, delivery: Delivery[PlcAck]) -> None:
        found = await self._store(record_plc_ack, delivery)
        if not found:
            # The ack can overtake its decision (a backlog of decisions after a restart).
            raise Retry(f"no inspection row for {delivery.inspection_id} yet: its decision is not written",
                        delay_s=self._backoff(delivery))

    def _backoff(self, delivery: Delivery) -> float:
        # Doubling delays, capped: a database restart is not hammered, and a long
        # outage is retried every BACKOFF_MAX_S until it is over.
        return min(self.nak_delay_s * 2 ** min(delivery.num_delivered - 1, 16), BACKOFF_MAX_S)


async def prepare_database(url: str) -> Engine:
    """Migrate the database at `url` (waiting while it comes up) and return an engine for it."""
    async for attempt in stamina.retry_context(on=OperationalError, timeout=120, wait_max=5.0):
        with attempt:
            revision = await asyncio.to_thread(upgrade_database, url)
    engine = make_engine(url)
    log.info("database ready", dialect=engine.dialect.name, revision=revision)
    return engine


async def setup(ctx: ServiceContext) -> None:
    ctx.not_ready_reason = "migrating the database"
    engine = await prepare_database(ctx.config.database.url)

    async def dispose() -> None:
        await asyncio.to_thread(engine.dispose)

    ctx.on_stop(dispose)
    handlers = ResultsHandlers(engine, nak_delay_s=ctx.config.nats.nak_delay_s)
    # A decision is never given up on: JetStream holds it through a database outage of
    # any length (bad records are still dead-lettered at once). An ack whose decision
    # never comes is given up on after max_deliver tries.
    ctx.consume("decision", Decision, handlers.decision, retry_forever=True)
    ctx.consume("ack", PlcAck, handlers.ack)
