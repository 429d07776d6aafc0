"""One station's link between its PLC and the bus.

A trigger from the PLC becomes a lineguard.v1 Trigger on the bus; a decision
from the bus (or the gateway's own FAIL / TIMEOUT when none comes in time) is
handed to the PLC once and recorded as a PlcAck. The PLC never waits on the bus:
triggers and acks go to the station's outbox (outbox.py), published behind the
PLC's back, so a Trigger call answers at once and a deadline's FAIL / TIMEOUT is
delivered on time while NATS is away. The protocol is behind `PlcEndpoint`
(endpoint.py), so this module knows no protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import structlog
from opentelemetry.context import Context

from lineguard.bus import BadMessage
from lineguard.config import LineConfig
from lineguard.contracts import VERDICT_NAMES, now_ns, verdict_name
from lineguard.contracts.opcua import RESULT_VERDICTS
from lineguard.runtime import tracing
from lineguard.runtime.deadlines import Deadlines
from lineguard.services.gateway.endpoint import NotHandedOver, PlcEndpoint, ShowsCapture, ShowsWarning, TriggerRefused
from lineguard.services.gateway.handshake import REMEMBERED_RESULTS, Handshake, Outcome, Resolution, Result
from lineguard.services.gateway.outbox import OUTBOX_LIMIT, Outbox, Publish
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

log = structlog.get_logger("lineguard.gateway")

# On a stop, how long past the longest result timeout the gateway keeps trying to publish its last acks.
ACK_GRACE_S = 2.0
# The message-id stage of the ack recording that the PLC read a result it had missed (the first ack, "ack", said
# not delivered; the bus would drop a second message under the same id).
READ_BACK_STAGE = "ack-read"
_DELIVERABLE = frozenset(RESULT_VERDICTS.values())


def build_ack(result: Result, protocol: str, delivered: bool, delivered_unix_ns: int | None = None) -> PlcAck:
    ack = PlcAck(
        verdict=result.verdict,
        reason_codes=list(result.reasons),
        protocol=protocol,
        delivered=delivered,
        delivered_unix_ns=result.closed_unix_ns if delivered_unix_ns is None else delivered_unix_ns,
        gateway_timeout=result.gateway_timeout,
    )
    ack.part.CopyFrom(result.part)
    return ack


def station_timeout_s(config: LineConfig, station_id: str) -> float:
    """The gateway's own deadline: the recipe's, plus its grace for the decision to travel."""
    recipe = config.recipe(config.station(station_id).recipe)
    return (recipe.deadline_ms + config.gateway.result_grace_ms) / 1000


class StationLink:
    def __init__(self, handshake: Handshake, publish: Publish, *, outbox_limit: int = OUTBOX_LIMIT):
        self.handshake = handshake
        self.plc: PlcEndpoint | None = None  # the endpoint serving this station
        self._busy_shown: bool | None = None
        self.outbox = Outbox(publish, handshake.station, limit=outbox_limit)
        # Results the PLC could not be handed (no session listened), until it reads them back; by inspection id.
        self._missed: OrderedDict[str, None] = OrderedDict()
        # Each open inspection's deadline (monotonic).
        self.deadlines: Deadlines[str] = Deadlines()
        # Parts whose PLC was told their image is taken (a frame redelivered is not news twice).
        self._captured: OrderedDict[str, None] = OrderedDict()
        self.refusing = ""  # why new triggers are refused (the gateway is stopping); empty while it serves
        self.fault = ""  # why the station is in Error (a service it needs is down); empty while it serves
        self.warning = ""  # why the drift watch alerts (docs/drift.md); empty while it does not
        # Tracing on: each open inspection's trigger span, for a delivery no decision's span covers (its deadline).
        self._traces: dict[str, Context] = {}
        # Results being handed to the PLC: closed in the handshake, their acks not yet in the outbox.
        self._delivering = 0

    @property
    def station(self) -> str:
        return self.handshake.station

    def attach(self, plc: PlcEndpoint) -> None:
        self.plc = plc

    @property
    def protocol(self) -> str:
        return self.plc.protocol if self.plc is not None else "none"

    @property
    def settled(self) -> bool:
        """Every part triggered here has its result at the PLC, and its trigger and ack are on the bus.

        A result is closed in the handshake before the PLC is handed it: until its ack is in the outbox the link is
        not settled, or a stop could end the outbox while the ack of a FAIL / TIMEOUT the PLC got is still to come."""
        return not self.handshake.busy and not self._delivering and not self.outbox

    @property
    def unpublished(self) -> int:
        """Triggers and acks waiting for the bus."""
        return len(self.outbox)

    async def trigger(self, sequence: int, part_id: str, *, lot: str = "") -> str:
        """The PLC says "part here": open an inspection (or find the open one); its trigger goes to the outbox.

        Never waits on the bus. Refused (TriggerRefused) while stopping, or while the outbox is full."""
        repeat = self.handshake.is_open(sequence)
        if (self.refusing or self.fault) and not repeat:
            raise TriggerRefused(f"trigger {sequence} of station {self.station} refused: {self.refusing or self.fault}")
        if self.outbox.full and not repeat:
            raise TriggerRefused(
                f"trigger {sequence} of station {self.station} refused: {len(self.outbox)} messages wait for the bus"
            )
        triggered = self.handshake.trigger(sequence, part_id, lot=lot)
        part = triggered.part
        if triggered.repeated:
            # Its trigger is in the outbox or on the bus already.
            log.info(
                "PLC repeated a trigger still in flight; same inspection",
                station=self.station,
                sequence=sequence,
                inspection_id=part.inspection_id,
            )
            return part.inspection_id
        self.deadlines.add(part.inspection_id, triggered.deadline)
        # The part's trace starts here: its trigger message, and so every message after it, carries this span.
        with tracing.step(
            "trigger",
            parent=tracing.NEW_TRACE,
            attributes={"lineguard.inspection_id": part.inspection_id, "lineguard.station": self.station},
        ):
            trace = tracing.current()
            if trace is not None:
                self._traces[part.inspection_id] = trace
            self.outbox.put("trigger", Trigger(part=part, part_id=triggered.part_id, source=self.protocol))
        await self._show_busy()
        log.info("triggered", station=self.station, sequence=sequence, inspection_id=part.inspection_id)
        return part.inspection_id

    async def on_decision(self, decision: Decision) -> Resolution:
        """Hand a decision to the PLC unless its inspection already got its result."""
        await self.expire_due()  # a deadline already passed makes this decision late, however close
        resolution = self.handshake.resolve(decision)
        result = resolution.result
        self.deadlines.cancel(result.inspection_id)
        if resolution.deliver:
            await self._deliver_closed([result])
        elif resolution.outcome is Outcome.UNTRACKED:
            log.warning(
                "decision for an inspection not triggered here (gateway restarted?); not delivered",
                station=self.station,
                inspection_id=result.inspection_id,
                sequence=result.sequence,
            )
            self.outbox.put("ack", build_ack(result, self.protocol, delivered=False))
        elif resolution.outcome is Outcome.LATE:
            # Its FAIL / TIMEOUT's ack is in the outbox or on the bus already.
            log.warning(
                "late decision not delivered: the PLC already got FAIL/TIMEOUT",
                station=self.station,
                inspection_id=result.inspection_id,
                verdict=verdict_name(decision.verdict),
            )
        else:
            log.info("decision delivered already; not again", station=self.station, inspection_id=result.inspection_id)
        return resolution

    async def expire_due(self) -> list[Result]:
        """Give FAIL / TIMEOUT to every inspection past its deadline (the acks go to the outbox)."""
        expired = self.handshake.expire()
        for result in expired:
            self.deadlines.cancel(result.inspection_id)
            log.warning(
                "no decision in time: FAIL/TIMEOUT to the PLC",
                station=self.station,
                inspection_id=result.inspection_id,
                sequence=result.sequence,
            )
        await self._deliver_closed(expired)
        return expired

    @property
    def shows_capture(self) -> bool:
        return isinstance(self.plc, ShowsCapture) and self.plc.shows_capture(self.station)

    async def on_captured(self, inspection_id: str) -> None:
        """The capture service has the part's image: tell a PLC that wants to know, once, while the part is in
        flight (an image of a part already answered, or never triggered here, is no news to anybody)."""
        plc = self.plc
        if not isinstance(plc, ShowsCapture) or inspection_id in self._captured:
            return
        if not self.handshake.in_flight_id(inspection_id):
            return
        self._captured[inspection_id] = None
        while len(self._captured) > REMEMBERED_RESULTS:
            self._captured.popitem(last=False)
        await plc.captured(self.station, inspection_id)

    def read_result(self, sequence: int) -> Result | None:
        """The result given for `sequence`, for a PLC that missed it; the first read of a missed one is its delivery."""
        result = self.handshake.result_of(sequence)
        if result is None:
            return None
        if result.inspection_id in self._missed:
            del self._missed[result.inspection_id]
            log.info(
                "PLC read a result it had missed",
                station=self.station,
                inspection_id=result.inspection_id,
                sequence=sequence,
                verdict=verdict_name(result.verdict),
            )
            ack = build_ack(result, self.protocol, delivered=True, delivered_unix_ns=now_ns())
            self.outbox.put("ack", ack, stage=READ_BACK_STAGE)
        return result

    async def set_warning(self, reason: str | None) -> None:
        """The drift watch's alert for this station (docs/drift.md), shown where the protocol can; or over."""
        if (reason or "") == self.warning:
            return
        self.warning = reason or ""
        if reason:
            log.warning(
                "station drift alert shown at the PLC; triggers are still taken", station=self.station, reason=reason
            )
        else:
            log.info("station drift alert over", station=self.station)
        if isinstance(self.plc, ShowsWarning):
            await self.plc.set_warning(self.station, reason)

    async def set_fault(self, reason: str | None) -> None:
        """Error (a service the station needs is down: new triggers refused, fail safe) or serving again."""
        if (reason or "") == self.fault:
            return
        self.fault = reason or ""
        if reason:
            log.error("station in Error: triggers refused", station=self.station, reason=reason)
        else:
            log.info("station serves again: its services beat", station=self.station)
        if self.plc is not None:
            await self.plc.set_error(self.station, reason)

    async def run_deadlines(self, stopping: asyncio.Event) -> None:
        """Sleep until the next inspection's deadline, then give FAIL / TIMEOUT to what is due."""
        await self.deadlines.run(stopping, lambda _due: self.expire_due())

    async def run_outbox(self, stopping: asyncio.Event) -> None:
        await self.outbox.run(stopping)

    async def _deliver_closed(self, results: list[Result]) -> None:
        """Deliver results the handshake has just closed; the link is not settled until their acks are queued."""
        self._delivering += len(results)
        try:
            for result in results:
                await self._deliver(result)
        finally:
            self._delivering -= len(results)

    async def _deliver(self, result: Result) -> None:
        """Hand the result to the PLC, then queue its ack: delivered only when the endpoint could hand it over."""
        trigger = self._traces.pop(result.inspection_id, None)
        # Under the decision's span when a decision brought it; at a deadline, under the part's trigger.
        with tracing.step(
            "deliver",
            parent=None if tracing.in_span() else trigger,
            attributes={
                "lineguard.inspection_id": result.inspection_id,
                "lineguard.gateway_timeout": result.gateway_timeout,
            },
        ) as span:
            delivered = await self._hand_over(result)
            if span is not None:
                span.set_attribute("lineguard.delivered", delivered)
            self.outbox.put("ack", build_ack(result, self.protocol, delivered))
        await self._show_busy()
        if delivered:
            log.info(
                "result to PLC",
                station=self.station,
                inspection_id=result.inspection_id,
                sequence=result.sequence,
                verdict=verdict_name(result.verdict),
                reasons=list(result.reasons),
            )

    async def _hand_over(self, result: Result) -> bool:
        delivered = False
        if self.plc is None:
            log.error("no PLC endpoint serves the station; result not delivered", station=self.station)
        else:
            try:
                await self.plc.deliver(self.station, result)
                delivered = True
            except NotHandedOver as exc:
                log.warning(
                    "result not handed to the PLC; it can read it back by its sequence",
                    station=self.station,
                    inspection_id=result.inspection_id,
                    sequence=result.sequence,
                    reason=str(exc),
                )
                self._missed[result.inspection_id] = None
                while len(self._missed) > REMEMBERED_RESULTS:
                    self._missed.popitem(last=False)
            except Exception:
                log.exception(
                    "could not hand the result to the PLC", station=self.station, inspection_id=result.inspection_id
                )
        return delivered

    async def _show_busy(self) -> None:
        busy = self.handshake.busy
        if self.plc is not None and busy != self._busy_shown:
            await self.plc.set_busy(self.station, busy)
            self._busy_shown = busy


class StationLinks:
    """Every station this gateway serves, and the checks that route a decision to one."""

    def __init__(self, config: LineConfig, publish: Publish):
        self.line = config.line
        self.links: dict[str, StationLink] = {}
        for station in config.stations:
            handshake = Handshake(
                line=config.line,
                station=station.id,
                recipe_id=station.recipe,
                timeout_s=station_timeout_s(config, station.id),
            )
            self.links[station.id] = StationLink(handshake, publish)

    async def trigger(self, station_id: str, sequence: int, part_id: str, /, *, lot: str = "") -> str:
        return await self.links[station_id].trigger(sequence, part_id, lot=lot)

    def read_result(self, station_id: str, sequence: int) -> Result | None:
        return self.links[station_id].read_result(sequence)

    async def finish(self) -> None:
        """Before a stop: refuse new triggers, and answer every part in flight (its decision, or FAIL / TIMEOUT at
        its deadline) with its ack on the bus, so that no PLC is left waiting on a gateway that went away."""
        for link in self.links.values():
            link.refusing = "the gateway is stopping"
        timeout = max((link.handshake.timeout_s for link in self.links.values()), default=0.0) + ACK_GRACE_S
        deadline = time.monotonic() + timeout
        open_links = [link for link in self.links.values() if not link.settled]
        if open_links:
            log.info(
                "answering the parts in flight before stopping",
                in_flight={link.station: link.handshake.in_flight for link in open_links},
            )
        while open_links and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            open_links = [link for link in open_links if not link.settled]
        for link in open_links:
            log.error(
                "stopping with parts unanswered or triggers / acks not on the bus",
                station=link.station,
                in_flight=link.handshake.in_flight,
                unpublished=link.unpublished,
                waited_s=timeout,
            )

    def route(self, decision: Decision) -> StationLink:
        """The station a decision is for; BadMessage naming the cause when there is none."""
        part = decision.part
        if part.line != self.line:
            raise BadMessage(
                f"decision {part.inspection_id} is for line {part.line!r}; this gateway serves line {self.line!r}"
            )
        link = self.links.get(part.station)
        if link is None:
            known = ", ".join(sorted(self.links)) or "none"
            raise BadMessage(
                f"decision {part.inspection_id} is for station {part.station!r}, which this gateway "
                f"does not serve (stations: {known})"
            )
        if decision.verdict not in _DELIVERABLE:
            name = VERDICT_NAMES.get(decision.verdict, "not a Verdict value")
            raise BadMessage(
                f"decision {part.inspection_id} has verdict {decision.verdict} ({name}); a PLC can only "
                f"be given {', '.join(RESULT_VERDICTS)}"
            )
        return link
