"""The results service: decisions and PLC acks in, MES rows out.

At start the database's schema revision is checked: the service never migrates (its
role needs no DDL rights; `lineguard db upgrade` is a step of its own) and refuses to
start, saying what to run, when the schema is not this lineguard's. A decision or
an ack is acked only after its rows are committed, in whichever order the two come;
a database that is down raises, so the worker naks and the message comes back later,
for as long as the outage lasts. A stop first writes what the streams already hold."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import stamina
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from lineguard.bus import BadMessage, Delivery, Retry
from lineguard.bus.side import unsubscribe
from lineguard.contracts import stream_name, verdict_name
from lineguard.runtime.service import ServiceContext
from lineguard.services.results.api.server import ApiServer
from lineguard.services.results.archive.archiver import keep_images
from lineguard.services.results.dashboard.follow import follow_bus
from lineguard.services.results.dashboard.live import LiveFeed
from lineguard.services.results.db import check_schema, make_engine
from lineguard.services.results.drift import setup_drift
from lineguard.services.results.records import InvalidRecord, LineFacts
from lineguard.services.results.shadow import LiveNotWritten, write_shadow_verdict
from lineguard.services.results.store import record_plc_ack, write_decision
from lineguard.services.results.writer import ROWS, DecisionWriter, retry_delay
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.plc_pb2 import PlcAck

log = structlog.get_logger("lineguard.results")

# How long a stop waits for the messages already on the streams to be written. A line's backlog
# of a few seconds is written in well under it; what is left (the database is away) stays on the
# streams for the next start.
STOP_DRAIN_S = 10.0


@dataclass
class ResultsHandlers:
    """The two consumers' handlers, over one engine."""

    engine: Engine
    nak_delay_s: float = 1.0
    facts: LineFacts = field(default_factory=LineFacts)  # product, shifts, reason severities: the line's config

    async def _store(self, write: Callable[[Engine, Any], bool], delivery: Delivery[Any]) -> bool:
        """Run one write off the event loop: a bad record is a dead letter, a database down a retry."""
        try:
            return await asyncio.to_thread(write, self.engine, delivery.message)
        except InvalidRecord as exc:
            raise BadMessage(str(exc)) from None
        except DBAPIError as exc:
            # Unreachable, restarting, refusing connections, or a connection cut under us: the database is
            # away, not the message wrong. Anything else (a bug) is retried max_deliver times, then dead-lettered.
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise Retry(f"database unavailable: {exc.orig or exc}", delay_s=self._backoff(delivery)) from exc
            raise

    async def decision(self, delivery: Delivery[Decision]) -> None:
        write = functools.partial(write_decision, facts=self.facts, trace_id=delivery.trace_id)
        new = await self._store(write, delivery)
        ROWS.labels("new" if new else "duplicate").inc()
        log.debug(
            "inspection written" if new else "inspection already written",
            verdict=verdict_name(delivery.message.verdict),
            tries=delivery.num_delivered,
        )

    async def ack(self, delivery: Delivery[PlcAck]) -> None:
        found = await self._store(record_plc_ack, delivery)
        # An ack can overtake its decision (a backlog of decisions, a decision service restarted under load):
        # it is kept all the same, and the decision's write fills the row in.
        log.debug(
            "PLC result recorded" if found else "PLC result recorded before its inspection row",
            delivered=delivery.message.delivered,
            tries=delivery.num_delivered,
        )

    async def shadow_verdict(self, delivery: Delivery[Decision]) -> None:
        try:
            new = await self._store(write_shadow_verdict, delivery)
        except LiveNotWritten as exc:  # its live decision, on another stream, is not written yet
            raise Retry(str(exc), delay_s=self._backoff(delivery)) from None
        log.debug("shadow verdict written" if new else "shadow verdict already written", tries=delivery.num_delivered)

    def _backoff(self, delivery: Delivery) -> float:
        return retry_delay(delivery, self.nak_delay_s)


async def prepare_database(url: str) -> Engine:
    """An engine for `url` once the database answers (waiting while it comes up) at this lineguard's schema.

    Raises SchemaNotCurrent, not retried, when it is behind or unknown: the service stops with what to run. A database
    that does not answer is waited for as long as it takes, the service unready: under an orchestrator, giving up
    would only restart it into the same wait (a crash loop) while the database is away."""
    engine = make_engine(url)
    try:
        async for attempt in stamina.retry_context(on=OperationalError, attempts=None, timeout=None, wait_max=5.0):
            with attempt:
                revision = await asyncio.to_thread(check_schema, engine)
    except BaseException:
        engine.dispose()
        raise
    log.info("database ready", dialect=engine.dialect.name, revision=revision)
    return engine


async def setup(ctx: ServiceContext) -> None:
    ctx.not_ready_reason = "waiting for the database"
    engine = await prepare_database(ctx.config.database.connect_url())

    async def dispose() -> None:
        await asyncio.to_thread(engine.dispose)

    ctx.on_stop(dispose)
    handlers = ResultsHandlers(engine, nak_delay_s=ctx.config.nats.nak_delay_s, facts=LineFacts.of(ctx.config))
    # Neither a decision nor an ack (what the PLC was given) is given up on while the database is away:
    # JetStream holds them through an outage of any length. A bad record is still dead-lettered at once.
    # Decisions are written in batches (writer.py), each acked after its batch's commit.
    writer = DecisionWriter(engine, ctx.config.database, handlers.facts, ctx.config.nats.nak_delay_s)
    ctx.run_task(writer.run(ctx.stopping))
    ctx.on_stop(writer.drain)
    # The drift watch sees each production decision on its way to the writer; a self-test part's is not written.
    ctx.consume("decision", Decision, setup_drift(ctx, engine, writer.handle), retry_forever=True)
    ctx.consume("ack", PlcAck, handlers.ack, retry_forever=True)
    # A candidate's would-be verdict is worth less than a record: after max_deliver tries it is dead-lettered.
    ctx.consume("shadow_verdict", Decision, handlers.shadow_verdict)

    async def write_what_is_queued() -> None:
        await drain(ctx, STOP_DRAIN_S)

    ctx.before_stop(write_what_is_queued)
    if ctx.config.archive.enabled:
        keep_images(ctx, engine)
    if ctx.config.api.enabled:
        serve_api(ctx, engine)


def serve_api(ctx: ServiceContext, engine: Engine) -> None:
    """The query API in this process (api.enabled), until the service stops; a port in use fails the start."""
    settings = ctx.config.api
    if settings.database_url is not None:  # a reader's role, apart from the writer's
        engine = make_engine(settings.database_url)
        ctx.on_stop(lambda: asyncio.to_thread(engine.dispose))
    feed = LiveFeed.of(ctx.config)
    server = ApiServer(engine, settings, ctx.config, feed)
    log.info("API serving", url=f"http://{settings.host}:{server.port}", dashboard="/dashboard")

    async def serve_until_stopped() -> None:
        # The dashboard's live view: a side subscription to the line, which no part's path waits on.
        subscriptions = await follow_bus(feed, ctx.bus.nc)
        serving = asyncio.create_task(server.serve())
        stopped = asyncio.create_task(ctx.stopping.wait())
        try:
            await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
            server.stop()
            stopped.cancel()
            await serving
        finally:
            await unsubscribe(subscriptions)

    ctx.run_task(serve_until_stopped())


async def drain(ctx: ServiceContext, timeout_s: float) -> None:
    """Wait, up to `timeout_s`, until the consumers have nothing left to write: none waiting, none unacked.

    Run while the workers still consume, so a message nak'd for a retry is written when it comes back."""
    deadline = time.monotonic() + timeout_s
    left: dict[str, int | str] = {}
    while True:
        for worker in ctx.workers:
            try:
                info = await ctx.bus.js.consumer_info(stream_name(worker.kind), worker.durable)
                left[worker.kind] = info.num_pending + info.num_ack_pending
            except Exception as exc:  # noqa: BLE001 - the bus away: not known to be drained
                left[worker.kind] = f"unknown ({type(exc).__name__})"
        if not any(left.values()):
            return
        if time.monotonic() >= deadline:
            log.error(
                "stopping with messages not yet written; they stay on the streams for the next start",
                left=left,
                waited_s=timeout_s,
            )
            return
        await asyncio.sleep(0.05)
