"""The pull-consumer loop: decode, hand to the service, then ack / nak / dead-letter. The messages come one by one
through a pull request kept open ahead of the loop (lineguard.bus.pull), not a fetch per message.

A handler is `async def handle(delivery: Delivery[T]) -> None`:
- returning normally acks the message (its work is done and durable);
- raising settles it by the failure policy (`delivery.fail`, lineguard.bus.policy): `BadMessage`
  terminates it and copies it to `lg.dead.<kind>` with the reason; anything else naks it with a
  delay, and after `max_deliver` tries dead-letters it, except that a worker made to retry forever
  never gives up on `Retry`; `HandBack` (the service is stopping) naks it at once, never given up on;
- calling `delivery.defer()` keeps it unacked: the handler settles it later itself, with `ack()` or
  `fail(exc)`, so a deferred message meets the same policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import structlog
from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry.context import Context

from lineguard.bus.client import Bus
from lineguard.bus.errors import BadMessage
from lineguard.bus.policy import Outcome, describe, settle_failure
from lineguard.bus.pull import PullFeed
from lineguard.contracts import line_subjects, stream_name, subject
from lineguard.runtime import tracing
from lineguard.runtime.metrics import DEAD_LETTERS, HANDLE_SECONDS, MESSAGES

M = TypeVar("M", bound=Message)
VALID_PLACES_KEPT = 256
log = structlog.get_logger("lineguard.bus")


@dataclass
class Delivery(Generic[M]):
    """One decoded message and the means to settle it."""

    message: M
    msg: Msg
    kind: str
    bus: Bus
    retry_forever: bool = False  # the worker's: never give up on `Retry`
    deferred: bool = False
    settled: bool = False
    received_ns: int = field(default_factory=time.time_ns)
    # The context of the span that handled it (tracing on): a step settled later continues the part's trace there.
    trace: Context | None = None

    @property
    def inspection_id(self) -> str:
        return self.message.part.inspection_id  # type: ignore[attr-defined]

    @property
    def trace_id(self) -> str | None:
        """The part's trace id from the message's `traceparent` (None: the part is not traced)."""
        return tracing.trace_id_of(self.msg.headers)

    @property
    def num_delivered(self) -> int:
        return self.msg.metadata.num_delivered

    def defer(self) -> None:
        """Keep the message unacked after the handler returns; settle it later."""
        self.deferred = True

    async def ack(self) -> None:
        if not self.settled:
            self.settled = True
            await self.msg.ack()

    async def nak(self, delay_s: float | None = None) -> None:
        if not self.settled:
            self.settled = True
            await self.msg.nak(delay=delay_s)

    async def dead_letter(self, reason: str) -> None:
        if not self.settled:
            self.settled = True
            await self.bus.dead_letter(self.msg, self.kind, reason)
            await self.msg.term()
            DEAD_LETTERS.labels(self.bus.service, self.kind).inc()

    async def fail(self, exc: BaseException) -> Outcome:
        """Settle the message by the failure policy, as handling it raised `exc`; the outcome for the metrics."""
        settings = self.bus.settings
        tries = self.num_delivered
        settlement = settle_failure(
            exc,
            tries=tries,
            max_deliver=settings.max_deliver,
            nak_delay_s=settings.nak_delay_s,
            retry_forever=self.retry_forever,
        )
        if settlement.action == "dead_letter":
            await self.dead_letter(settlement.reason)
        elif settlement.action == "give_up":
            log.error("giving up on message", kind=self.kind, tries=tries, error=describe(exc), exc_info=exc)
            await self.dead_letter(settlement.reason)
        elif settlement.action == "hand_back":
            log.info("handed back to the bus", kind=self.kind, tries=tries, reason=str(exc))
            await self.nak(settlement.delay_s)
        else:
            log.warning(
                "handling failed, will retry",
                kind=self.kind,
                tries=tries,
                delay_s=settlement.delay_s,
                error=describe(exc),
            )
            await self.nak(settlement.delay_s)
        return settlement.outcome


Handler = Callable[[Delivery[M]], Awaitable[None]]


class Worker(Generic[M]):
    """Consumes `lg.<kind>.<line>.*` through the durable consumer named after the service."""

    def __init__(
        self,
        bus: Bus,
        *,
        kind: str,
        line: str,
        message_type: type[M],
        handler: Handler[M],
        durable: str | None = None,
        max_ack_pending: int = 1000,
        retry_forever: bool = False,
        stations: Collection[str] | None = None,
    ):
        """`stations`: the line's configured stations; a message about any other is dead-lettered (None: any)."""
        self.bus = bus
        self.kind = kind
        self.line = line
        self.message_type = message_type
        self.handler = handler
        self.durable = durable or f"{bus.service}-{kind}"
        self.max_ack_pending = max_ack_pending
        self.retry_forever = retry_forever
        self.stations = frozenset(stations) if stations is not None else None
        self._consumer_ready = False
        # Metric children looked up once: labels() per message is measurable at thousands/s.
        self._outcomes = {o: MESSAGES.labels(bus.service, kind, o) for o in ("ok", "retry", "dead")}
        self._seconds = HANDLE_SECONDS.labels(bus.service, kind)
        # The subject of each (line, station) already checked: a line has a few stations, checked once each.
        self._subjects: dict[tuple[str, str], str] = {}

    async def start(self) -> None:
        await self._ensure_consumer()
        self._consumer_ready = True

    async def _ensure_consumer(self) -> None:
        """The durable consumer, made when it does not exist yet (what nats-py's pull_subscribe does)."""
        settings = self.bus.settings
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait_s,
            # The worker dead-letters at max_deliver itself; the server's own
            # limit only stops a message that crashes the process every time.
            max_deliver=-1 if self.retry_forever else settings.max_deliver + 2,
            max_ack_pending=self.max_ack_pending,
            filter_subject=line_subjects(self.kind, self.line),
        )
        try:
            await self.bus.js.consumer_info(stream_name(self.kind), self.durable)
        except NotFoundError:
            await self.bus.js.add_consumer(stream_name(self.kind), config=config)

    async def run(self, stopping: asyncio.Event) -> None:
        if not self._consumer_ready:
            await self._ensure_consumer()
            self._consumer_ready = True
        feed = PullFeed(self.bus.nc, stream_name(self.kind), self.durable, self.bus.settings.fetch_batch)
        await feed.open()
        closing = asyncio.ensure_future(_close_when(stopping, feed))
        # Chosen once (tracing is set up before the workers run): tracing off costs the loop nothing per message.
        handle = self.handle if tracing.TRACER is None else self._handle_traced
        try:
            while (msg := await feed.next()) is not None:
                if stopping.is_set():
                    await msg.nak()  # received before the stop: back now rather than after ack_wait
                    continue
                await handle(msg)
        finally:
            closing.cancel()
            feed.close()

    async def _handle_traced(self, msg: Msg) -> None:
        # One span per handled message, named after the consumer, under the span the message was published in.
        with tracing.consumer_span(self.durable, msg.subject, msg.headers) as span:
            await self.handle(msg, span)

    async def handle(self, msg: Msg, span: Any = None) -> None:
        """Decode, hand to the handler, settle; `span`: the message's span, when tracing is on."""
        started = time.perf_counter()
        try:
            message = self._decode(msg)
        except BadMessage as exc:
            self._outcomes[await Delivery(self.message_type(), msg, self.kind, self.bus).fail(exc)].inc()
            tracing.failed(span, str(exc))
            return
        delivery: Delivery[M] = Delivery(message, msg, self.kind, self.bus, retry_forever=self.retry_forever)
        if span is not None:
            span.set_attribute("lineguard.inspection_id", delivery.inspection_id)
            delivery.trace = tracing.current()
        # bind + reset rather than structlog's bound_contextvars: the same, without a third of the worker's time.
        log_context = structlog.contextvars.bind_contextvars(inspection_id=delivery.inspection_id)
        try:
            outcome: Outcome | Literal["ok"] = "ok"
            try:
                await self.handler(delivery)
                if not delivery.deferred:
                    await delivery.ack()
            except Exception as exc:  # noqa: BLE001 - every failure is settled by the one policy
                outcome = await delivery.fail(exc)
                tracing.failed(span, f"{outcome}: {describe(exc)}")
            self._outcomes[outcome].inc()
            self._seconds.observe(time.perf_counter() - started)
        finally:
            structlog.contextvars.reset_contextvars(**log_context)

    def _decode(self, msg: Msg) -> M:
        type_name = self.message_type.DESCRIPTOR.full_name
        try:
            message = self.message_type.FromString(msg.data)
        except (DecodeError, ValueError) as exc:
            raise BadMessage(f"undecodable {self.kind} message on {msg.subject}: not a {type_name} ({exc})") from None
        part = getattr(message, "part", None)
        if part is not None and not part.inspection_id:
            raise BadMessage(f"invalid {self.kind} message on {msg.subject}: {type_name} has no part.inspection_id")
        if part is not None:
            self._check_place(msg.subject, part.line, part.station)
        return message

    def _check_place(self, got: str, line: str, station: str) -> None:
        """A message about a part travels on that part's subject, for a station the line has; else it is refused.

        Every consumer relies on it: a service's replies go to the part's subject, and the results service writes
        rows by the part's station, so a part claiming another station than its subject could fake another's."""
        expected = self._subjects.get((line, station))
        if expected is None:
            try:
                expected = subject(self.kind, line, station)
            except ValueError as exc:
                raise BadMessage(f"invalid {self.kind} message on {got}: {exc}") from None
        if got != expected:
            raise BadMessage(
                f"{self.kind} message on {got} is about a part of line {line!r} station {station!r}, whose subject "
                f"is {expected}: refused (a message travels on its own part's subject)"
            )
        if self.stations is not None and station not in self.stations:
            known = ", ".join(sorted(self.stations))
            raise BadMessage(
                f"{self.kind} message on {got} is about station {station!r}, which is not configured on line "
                f"{self.line!r} (known: {known})"
            )
        if len(self._subjects) < VALID_PLACES_KEPT:
            self._subjects[(line, station)] = expected


async def _close_when(stopping: asyncio.Event, feed: PullFeed) -> None:
    await stopping.wait()
    feed.close()
