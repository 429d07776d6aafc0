"""The results service's decision consumer: decisions written in batches, each acked only after its commit.

The bus worker hands decisions over one at a time. The handler makes the decision's rows on the spot
(records.decision_rows: a decision that can never be written is dead-lettered there, with every reason),
queues them and defers its ack. A loop (lineguard.runtime.batching.MicroBatcher) takes up to
`database.write_batch` queued decisions, waiting at most `database.write_wait_ms` after the first for more,
and writes them in one go off the event loop (batch.write_batch), while the handler already makes the next
batch's rows. Each decision is then settled on its own:
- written, or already there (a redelivery): acked;
- refused by the database (its batch was split until the bad one stood alone): dead-lettered with the
  database's reason, while the others of its batch are written and acked;
- the database away (unreachable, restarting, the connection cut): nothing of the batch was committed, so
  each is nak'd with a doubling delay (`Retry`, never given up on) and comes back in a later batch: the
  consumer keeps its place for as long as the outage lasts.
JetStream's redelivery and the insert-if-absent make that exactly once: a decision acked is committed, one
not acked comes back and, if its batch had committed after all, finds its row and writes nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from lineguard.bus import BadMessage, Delivery, Retry
from lineguard.config.model import DatabaseSettings
from lineguard.runtime.batching import MicroBatcher
from lineguard.services.results.batch import Outcome, Refused, write_batch
from lineguard.services.results.records import InspectionRows, InvalidRecord, LineFacts, decision_rows
from lineguard.v1.decision_pb2 import Decision

log = structlog.get_logger("lineguard.results")
BACKOFF_MAX_S = 30.0
ROWS = Counter(
    "lineguard_results_inspections_total",
    "Decisions handled by the results service: new rows, or duplicates already written",
    ["outcome"],
)
BATCHES = Counter(
    "lineguard_results_write_batches_total",
    "Batches of decisions the results service wrote (written) or could not write and hands back (failed)",
    ["outcome"],
)


def retry_delay(delivery: Delivery[Any], nak_delay_s: float) -> float:
    """The wait before a message's next try: doubling from nak_delay_s, capped, so a database restart is not
    hammered and a long outage is retried every BACKOFF_MAX_S until it is over."""
    return min(nak_delay_s * 2 ** min(delivery.num_delivered - 1, 16), BACKOFF_MAX_S)


def database_failure(exc: DBAPIError, delivery: Delivery[Any], nak_delay_s: float) -> Exception:
    """What a failed write becomes: a `Retry` with a doubling delay when the database is away, else `exc`.

    Unreachable, restarting, refusing connections, or a connection cut under us: the database is away, not
    the message wrong. Anything else (a bug) is retried max_deliver times, then dead-lettered."""
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return Retry(f"database unavailable: {exc.orig or exc}", delay_s=retry_delay(delivery, nak_delay_s))
    return exc


@dataclass
class DecisionWriter:
    """The decision handler over one engine: rows made as decisions come, written a batch at a time."""

    engine: Engine
    settings: DatabaseSettings = field(default_factory=DatabaseSettings)
    facts: LineFacts = field(default_factory=LineFacts)
    nak_delay_s: float = 1.0
    settling: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.batcher: MicroBatcher[InspectionRows, bool] = MicroBatcher(
            self._write, batch_size=self.settings.write_batch, max_wait_s=self.settings.write_wait_ms / 1000
        )

    def _write(self, batch: list[InspectionRows]) -> list[Outcome]:
        try:
            outcomes = write_batch(self.engine, batch)
        except Exception:
            BATCHES.labels("failed").inc()
            raise
        BATCHES.labels("written").inc()
        return outcomes

    async def handle(self, delivery: Delivery[Decision]) -> None:
        try:
            rows = decision_rows(delivery.message, self.facts)
        except InvalidRecord as exc:
            raise BadMessage(str(exc)) from None
        rows.inspection["trace_id"] = delivery.trace_id
        # Stopped, when the service is stopping, hands the decision back: it is written at the next start.
        future = await self.batcher.submit(rows)
        delivery.defer()
        task = asyncio.create_task(self._settle(delivery, future))
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)

    async def _settle(self, delivery: Delivery[Decision], future: asyncio.Future[bool]) -> None:
        try:
            new = await future  # the batcher hands an outcome that is an exception (Refused) over as one
        except Refused as exc:
            await delivery.fail(BadMessage(str(exc)))
        except DBAPIError as exc:
            await delivery.fail(database_failure(exc, delivery, self.nak_delay_s))
        except Exception as exc:  # noqa: BLE001 - deferred, so settled here by the bus's one failure policy
            await delivery.fail(exc)
        else:
            await delivery.ack()
            ROWS.labels("new" if new else "duplicate").inc()

    async def run(self, stopping: asyncio.Event) -> None:
        await self.batcher.run(stopping)

    async def drain(self) -> None:
        """Wait for every queued decision to be settled (on stop, before the engine and the bus close)."""
        if self.settling:
            await asyncio.wait(set(self.settling), timeout=10)
