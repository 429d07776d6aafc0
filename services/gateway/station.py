"""One station's link between its PLC and the bus.

A trigger from the PLC becomes a lineguard.v1 Trigger on the bus; a decision
from the bus (or the gateway's own FAIL / TIMEOUT when none comes in time) is
handed to the PLC once and recorded as a PlcAck. The protocol is behind
`PlcEndpoint` (endpoint.py), so this module knows no protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from google.protobuf.message import Message

from lineguard.bus import BadMessage
from lineguard.config import LineConfig
from lineguard.contracts import VERDICT_NAMES, verdict_name
from lineguard.contracts.opcua import RESULT_VERDICTS
from lineguard.runtime.deadlines import Deadlines
from lineguard.services.gateway.endpoint import PlcEndpoint, TriggerRefused
from lineguard.services.gateway.handshake import Handshake, Outcome, Resolution, Result
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

log = structlog.get_logger("lineguard.gateway")

Publish = Callable[[str, Message], Awaitable[None]]  # ServiceContext.publish(kind, message)

# How soon an ack the bus refused is tried again (the deadline loop's next tick).
ACK_RETRY_S = 0.25
_ACK_RETRY = "retry-acks"  # its key among the inspections' deadlines (those are inspection ids)
# On a stop, how long past the longest result timeout the gateway keeps trying to publish its last acks.
ACK_GRACE_S = 2.0
_DELIVERABLE = frozenset(RESULT_VERDICTS.values())


def build_ack(result: Result, protocol: str, delivered: bool) -> PlcAck:
    ack = PlcAck(
        verdict=result.verdict,
        reason_codes=list(result.reasons),
        protocol=protocol,
        delivered=delivered,
        delivered_unix_ns=result.closed_unix_ns,
        gateway_timeout=result.gateway_timeout,
    )
    ack.part.CopyFrom(result.part)
    return ack


def station_timeout_s(config: LineConfig, station_id: str) -> float:
    """The gateway's own deadline: the recipe's, plus its grace for the decision to travel."""
    recipe = config.recipe(config.station(station_id).recipe)
    return (recipe.deadline_ms + config.gateway.result_grace_ms) / 1000


class StationLink:
    def __init__(self, handshake: Handshake, publish: Publish):
        self.handshake = handshake
        self.publish = publish
        self.plc: PlcEndpoint | None = None  # the endpoint serving this station
        self._busy_shown: bool | None = None
        self._unacked: list[PlcAck] = []
        # Each open inspection's deadline (monotonic), and when to retry acks not yet published.
        self.deadlines: Deadlines[str] = Deadlines()
        self.refusing = ""  # why new triggers are refused (the gateway is stopping); empty while it serves

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
        """Every part triggered here has its result at the PLC and its ack on the bus."""
        return not self.handshake.busy and not self._unacked

    @property
    def unpublished_acks(self) -> int:
        return len(self._unacked)

    async def trigger(self, sequence: int, part_id: str) -> str:
        """The PLC says "part here": open an inspection (or find the open one) and put it on the bus."""
        if self.refusing and not self.handshake.is_open(sequence):
            raise TriggerRefused(f"trigger {sequence} of station {self.station} refused: {self.refusing}")
        triggered = self.handshake.trigger(sequence, part_id)
        part = triggered.part
        if triggered.repeated:
            log.info(
                "PLC repeated a trigger still in flight; same inspection",
                station=self.station,
                sequence=sequence,
                inspection_id=part.inspection_id,
            )
        else:
            self.deadlines.add(part.inspection_id, triggered.deadline)
            await self._show_busy()
        try:
            # Published again on a repeat: the message id makes it stored once, and a failed first try is healed.
            await self.publish("trigger", Trigger(part=part, part_id=triggered.part_id, source=self.protocol))
        except Exception as exc:
            raise TriggerRefused(f"trigger {sequence} of station {self.station} not published: {exc!r}") from exc
        if not triggered.repeated:
            log.info("triggered", station=self.station, sequence=sequence, inspection_id=part.inspection_id)
        return part.inspection_id

    async def on_decision(self, decision: Decision) -> Resolution:
        """Hand a decision to the PLC unless its inspection already got its result."""
        await self.expire_due()  # a deadline already passed makes this decision late, however close
        resolution = self.handshake.resolve(decision)
        result = resolution.result
        self.deadlines.cancel(result.inspection_id)
        if resolution.deliver:
            ack = await self._deliver(result)
        elif resolution.outcome is Outcome.UNTRACKED:
            log.warning(
                "decision for an inspection not triggered here (gateway restarted?); not delivered",
                station=self.station,
                inspection_id=result.inspection_id,
                sequence=result.sequence,
            )
            ack = build_ack(result, self.protocol, delivered=False)
        else:
            if resolution.outcome is Outcome.LATE:
                log.warning(
                    "late decision not delivered: the PLC already got FAIL/TIMEOUT",
                    station=self.station,
                    inspection_id=result.inspection_id,
                    verdict=verdict_name(decision.verdict),
                )
            else:
                log.info(
                    "decision delivered already; not again", station=self.station, inspection_id=result.inspection_id
                )
            # Published again in case the first publish failed: the message id stores it once.
            ack = build_ack(result, self.protocol, delivered=True)
        await self.publish("ack", ack)
        return resolution

    async def expire_due(self) -> list[Result]:
        """Give FAIL / TIMEOUT to every inspection past its deadline, and retry acks not yet published."""
        expired = self.handshake.expire()
        for result in expired:
            self.deadlines.cancel(result.inspection_id)
            log.warning(
                "no decision in time: FAIL/TIMEOUT to the PLC",
                station=self.station,
                inspection_id=result.inspection_id,
                sequence=result.sequence,
            )
            self._unacked.append(await self._deliver(result))
        while self._unacked:
            # Taken before the await: run_deadlines and on_decision both flush, and must not send one twice.
            ack = self._unacked.pop(0)
            try:
                await self.publish("ack", ack)
            except Exception as exc:  # noqa: BLE001 - kept and retried on the next tick
                log.warning("could not publish an ack; will retry", station=self.station, error=repr(exc))
                self._unacked.insert(0, ack)
                self.deadlines.add(_ACK_RETRY, time.monotonic() + ACK_RETRY_S)
                break
        return expired

    async def run_deadlines(self, stopping: asyncio.Event) -> None:
        """Sleep until the next deadline (an inspection's, or the ack retry's), then expire and retry what is due."""
        await self.deadlines.run(stopping, lambda _due: self.expire_due())

    async def _deliver(self, result: Result) -> PlcAck:
        delivered = False
        if self.plc is None:
            log.error("no PLC endpoint serves the station; result not delivered", station=self.station)
        else:
            try:
                await self.plc.deliver(self.station, result)
                delivered = True
            except Exception:
                log.exception(
                    "could not hand the result to the PLC", station=self.station, inspection_id=result.inspection_id
                )
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
        return build_ack(result, self.protocol, delivered)

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

    async def trigger(self, station_id: str, sequence: int, part_id: str) -> str:
        return await self.links[station_id].trigger(sequence, part_id)

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
                "stopping with parts unanswered or acks unpublished",
                station=link.station,
                in_flight=link.handshake.in_flight,
                unpublished_acks=link.unpublished_acks,
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
