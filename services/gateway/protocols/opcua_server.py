"""The OPC UA server a PLC talks to: the address space of lineguard.contracts.opcua.

One asyncua server per endpoint URL (a PlcEndpoint); each station on it is an object with
the Trigger method, the result variables and the result event. What a trigger or a result
means is decided elsewhere (station.py): this module only speaks OPC UA. Imported when the
protocol is opened (opcua.py), so validating a line's configuration never loads asyncua.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import Node, Server, ua
from asyncua.server.event_generator import EventGenerator

from lineguard.contracts import opcua as contract
from lineguard.contracts import verdict_name
from lineguard.contracts.registers import MAX_LOT_CHARS, MAX_PART_ID_CHARS, check_text
from lineguard.services.gateway.endpoint import (
    NotHandedOver,
    ResultReader,
    SelfTestRunner,
    TriggerHandler,
    TriggerRefused,
)
from lineguard.services.gateway.handshake import Result
from lineguard.services.gateway.protocols import opcua_access
from lineguard.services.gateway.protocols.machine_vision import MachineVisionSpace
from lineguard.services.gateway.protocols.opcua import KEY, MACHINE_VISION, SIMPLE
from lineguard.services.gateway.protocols.opcua_quiet import make_quiet
from lineguard.services.gateway.protocols.opcua_security import OpcuaSecurity
from lineguard.services.gateway.recipes import RecipeBook

log = structlog.get_logger("lineguard.gateway")

# OPC UA's "no date": the result timestamp before the first result.
NULL_DATETIME = datetime(1601, 1, 1, tzinfo=UTC)
_UINT32_MAX = 0xFFFFFFFF


def _variant(value: Any, ua_type: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType[ua_type])


# asyncua's NodeId and StatusCode take plain ints and strs (asyncua passes them so itself), but its annotations
# name the wire types (ua.Int32, ua.String, ua.Int16, ua.UInt32): subclasses of int and str nobody constructs.
def _node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)  # type: ignore[arg-type]


def _argument(arg: contract.Argument) -> ua.Argument:
    out = ua.Argument()
    out.Name = arg.name
    out.DataType = _node_id(ua.VariantType[arg.ua_type].value)
    out.ValueRank = -1
    out.Description = ua.LocalizedText(arg.description)
    return out


_FIELDS = {f.name: f for f in (*contract.RESULT_FIELDS, *contract.STATUS_FIELDS)}
_INITIAL: dict[str, Any] = {
    contract.RESULT_SEQUENCE: 0,
    contract.RESULT_INSPECTION_ID: "",
    contract.RESULT_VERDICT: contract.NO_RESULT_VERDICT,
    contract.RESULT_REASONS: "",
    contract.RESULT_TIMESTAMP: NULL_DATETIME,
    contract.BUSY: False,
    contract.HEARTBEAT: 0,
    contract.ERROR: "",
    contract.WARNING: "",
    contract.LOT: "",
}


def _result_values(result: Result) -> dict[str, Any]:
    """The result fields (variables, event fields, GetResult's outputs) of one result."""
    return {
        contract.RESULT_SEQUENCE: result.sequence,
        contract.RESULT_INSPECTION_ID: result.inspection_id,
        contract.RESULT_VERDICT: int(result.verdict),
        contract.RESULT_REASONS: contract.join_reasons(result.reasons),
        contract.RESULT_TIMESTAMP: datetime.fromtimestamp(result.closed_unix_ns / 1e9, tz=UTC),
    }


def listened(server: Server, watched: set[ua.NodeId]) -> bool:
    """A session with its connection open monitors one of the `watched` nodes (result events, ResultSequence).

    asyncua keeps a session with subscriptions past the loss of its connection (so its client may transfer
    them) and queues events to it meanwhile: queued there is not handed over. asyncua has no public view of
    this; these are its server's own tables (asyncua pinned in pyproject.toml)."""
    bserver = server.bserver
    if bserver is None:
        return False
    live = {
        proto.processor.session.session_id
        for proto in bserver.clients
        if proto.processor is not None
        and proto.processor.session is not None
        and proto.processor.session.is_activated()
    }
    return any(
        item.read_value_id is not None and item.read_value_id.NodeId in watched
        for sub in server.iserver.subscription_service.subscriptions.values()
        if sub.session_id in live
        for item in sub.monitored_item_srv._monitored_items.values()
    )


class OpcuaStation:
    """One station's node set: where its results are written and its events emitted."""

    def __init__(self, server: Server, station_id: str, node: Node, variables: dict[str, Node], events: EventGenerator):
        self.server = server
        self.station_id = station_id
        self.node = node
        self._variables = variables
        self._events = events
        # The event object is shared between emits: one result at a time, fields and event together.
        self._lock = asyncio.Lock()

    async def _write(self, name: str, value: Any, now: datetime) -> None:
        # The timestamps are annotated ua.DateTime, asyncua's datetime subclass; it takes (and passes) a datetime.
        dv = ua.DataValue(_variant(value, _FIELDS[name].ua_type), SourceTimestamp=now, ServerTimestamp=now)  # type: ignore[arg-type]
        await self.server.write_attribute_value(self._variables[name].nodeid, dv)

    async def deliver(self, result: Result) -> None:
        """Write the result variables in one call (ResultSequence last in it) and emit the result event;
        NotHandedOver when no live session listens (the result stays readable with GetResult)."""
        values = _result_values(result)
        when = values[contract.RESULT_TIMESTAMP]
        # One Write of every result field through the server's own session (asyncua's Node.write_params, what a
        # server-side node's write_value uses): applied in list order, in contract order, so ResultSequence, the
        # PLC's "this result is complete", is written together with the others and last.
        params = ua.WriteParameters()
        for field in contract.RESULT_FIELDS:
            write = ua.WriteValue()
            write.NodeId = self._variables[field.name].nodeid
            write.AttributeId = ua.AttributeIds.Value
            write.Value = ua.DataValue(
                _variant(values[field.name], field.ua_type), SourceTimestamp=when, ServerTimestamp=when
            )
            params.NodesToWrite.append(write)
        async with self._lock:
            statuses = await self.node.write_params(params)
            refused = [
                f"{f.name}: {s.name}" for f, s in zip(contract.RESULT_FIELDS, statuses, strict=True) if not s.is_good()
            ]
            if refused:
                raise RuntimeError(f"station {self.station_id}'s result variables not written: {', '.join(refused)}")
            event = self._events.event
            for name, value in values.items():
                setattr(event, name, value)
            event.Severity = 100 if result.verdict == contract.RESULT_VERDICTS["PASS"] else 500
            await self._events.trigger(
                time_attr=when, message=f"{self.station_id} #{result.sequence}: {verdict_name(result.verdict)}"
            )
        if not listened(self.server, {self.node.nodeid, self._variables[contract.RESULT_SEQUENCE].nodeid}):
            raise NotHandedOver(f"no live OPC UA session monitors station {self.station_id}'s results")

    async def set_busy(self, busy: bool) -> None:
        await self._write(contract.BUSY, busy, datetime.now(UTC))

    async def beat(self, count: int) -> None:
        await self._write(contract.HEARTBEAT, count & _UINT32_MAX, datetime.now(UTC))

    async def set_error(self, reason: str | None) -> None:
        await self._write(contract.ERROR, reason or "", datetime.now(UTC))

    async def set_warning(self, reason: str | None) -> None:
        await self._write(contract.WARNING, reason or "", datetime.now(UTC))

    async def set_lot(self, lot: str) -> None:
        await self._write(contract.LOT, lot, datetime.now(UTC))


class OpcuaEndpoint:
    """One asyncua server listening at one endpoint, serving the stations configured on it (a PlcEndpoint)."""

    protocol = KEY

    def __init__(
        self,
        endpoint: str,
        stations: Sequence[str],
        on_trigger: TriggerHandler,
        *,
        security: OpcuaSecurity | None = None,  # None: the production profile's defaults
        profiles: Mapping[str, Sequence[str]] | None = None,  # by station; None: the simple profile only
        continuous_period_s: Mapping[str, float] | None = None,  # by station, for machine-vision's StartContinuous
    ):
        self.endpoint = endpoint
        self.security = security if security is not None else OpcuaSecurity()
        self.stations = tuple(stations)
        self.on_trigger = on_trigger
        self.server = Server()
        self._nodes: dict[str, OpcuaStation] = {}
        self.namespace_index = 0
        self.profiles = {s: tuple(profiles[s]) if profiles else (SIMPLE,) for s in self.stations}
        vision_stations = [s for s in self.stations if MACHINE_VISION in self.profiles[s]]
        self.machine_vision = (
            MachineVisionSpace(self.server, vision_stations, on_trigger, dict(continuous_period_s or {}))
            if vision_stations
            else None
        )
        self.read_result: ResultReader = lambda _station, _sequence: None
        # The lot each simple-profile station's PLC set with SetLot: held until it sets another (not across a restart).
        self.lots: dict[str, str] = dict.fromkeys(self.stations, "")

    async def start(self) -> None:
        opcua_access.set_identity(self.server)  # before init(), which writes it into BuildInfo
        # ConditionRefresh (Part 9): a client that subscribes later is handed the retained conditions (the 40100
        # drift warning). asyncua links it only when asked, before init().
        self.server.iserver.bind_condition_methods = True
        await self.server.init()
        make_quiet(self.server)  # its subscriptions sleep while there is nothing to send (opcua_quiet.py)
        await opcua_access.write_identity(self.server, self.security)
        self.server.set_endpoint(self.endpoint)
        await opcua_access.secure(self.server, self.security, self.endpoint)  # policies, certificates, users, roles
        idx = self.namespace_index = await self.server.register_namespace(contract.NAMESPACE_URI)
        event_type = await self._add_event_type(idx)
        folder = await self.server.nodes.objects.add_folder(
            _node_id(contract.STATIONS_FOLDER, idx), ua.QualifiedName(contract.STATIONS_FOLDER, idx)
        )
        for station_id in self.stations:
            if SIMPLE in self.profiles[station_id]:
                self._nodes[station_id] = await self._add_station(idx, folder, station_id, event_type)
        if self.machine_vision is not None:
            await self.machine_vision.build(idx)
        try:
            await self.server.start()
        except OSError as exc:
            raise OSError(f"the OPC UA server cannot listen at {self.endpoint}: {exc}") from exc
        log.info("OPC UA server listening", endpoint=self.endpoint, stations=list(self.stations))

    async def stop(self) -> None:
        if self.machine_vision is not None:
            await self.machine_vision.stop()
        await self.server.stop()

    async def deliver(self, station: str, result: Result) -> None:
        not_handed_over = NotHandedOver(f"no live OPC UA session monitors station {station}'s results")
        handed_over = False
        if station in self._nodes:
            try:
                await self._nodes[station].deliver(result)
                handed_over = True
            except NotHandedOver as exc:
                not_handed_over = exc
        if self.machine_vision is not None and station in self.machine_vision.systems:
            # The same result as the station's 40100 ResultReady event: handed over if either profile is listened to.
            system = self.machine_vision.systems[station]
            await system.deliver(result)
            handed_over = handed_over or listened(self.server, {system.node.nodeid})
        if not handed_over:
            raise not_handed_over

    async def set_busy(self, station: str, busy: bool) -> None:
        if station in self._nodes:
            await self._nodes[station].set_busy(busy)
        if self.machine_vision is not None:
            await self.machine_vision.set_busy(station, busy)

    async def set_error(self, station: str, reason: str | None) -> None:
        if station in self._nodes:
            await self._nodes[station].set_error(reason)
        if self.machine_vision is not None:
            await self.machine_vision.set_error(station, reason)

    async def set_warning(self, station: str, reason: str | None) -> None:
        """The drift watch's alert (ShowsWarning): the simple profile's Warning variable, 40100's
        VisionWarningConditionType condition; the station serves on."""
        if station in self._nodes:
            await self._nodes[station].set_warning(reason)
        if self.machine_vision is not None:
            await self.machine_vision.set_warning(station, reason)

    def shows_capture(self, station: str) -> bool:
        return self.machine_vision is not None and station in self.machine_vision.stations

    async def captured(self, station: str, inspection_id: str) -> None:
        if self.machine_vision is not None:
            await self.machine_vision.captured(station, inspection_id)

    def use_recipes(self, recipes: RecipeBook) -> None:
        if self.machine_vision is not None:
            self.machine_vision.use_recipes(recipes)

    def use_selftests(self, run: SelfTestRunner, stations: frozenset[str]) -> None:
        """40100 only: a StartSingleJob with IsSimulated runs the self-test (the simple profile has no command)."""
        if self.machine_vision is not None:
            self.machine_vision.use_selftests(run, stations)

    def serve_reads(self, read: ResultReader) -> None:
        self.read_result = read

    async def run_heartbeat(self, stopping: asyncio.Event) -> None:
        """Count up every station's Heartbeat once a period, so the PLC sees the gateway alive."""
        count = 0
        while not stopping.is_set():
            count += 1
            for station in self._nodes.values():
                await station.beat(count)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=contract.HEARTBEAT_PERIOD_S)

    async def _add_event_type(self, idx: int) -> Node:
        base = self.server.get_node(ua.ObjectIds.BaseEventType)
        etype = await base.add_object_type(
            _node_id(contract.EVENT_TYPE, idx), ua.QualifiedName(contract.EVENT_TYPE, idx)
        )
        for field in contract.RESULT_FIELDS:
            await etype.add_property(
                _node_id(f"{contract.EVENT_TYPE}/{field.name}", idx),
                ua.QualifiedName(field.name, idx),
                _variant(_INITIAL[field.name], field.ua_type),
            )
        return etype

    async def _add_station(self, idx: int, folder: Node, station_id: str, event_type: Node) -> OpcuaStation:
        node = await folder.add_object(
            _node_id(contract.station_path(station_id), idx), ua.QualifiedName(station_id, idx)
        )
        await node.add_method(
            _node_id(contract.node_path(station_id, contract.TRIGGER_METHOD), idx),
            ua.QualifiedName(contract.TRIGGER_METHOD, idx),
            self._trigger_callback(station_id),
            [_argument(a) for a in contract.TRIGGER_INPUTS],
            [_argument(a) for a in contract.TRIGGER_OUTPUTS],
        )
        await node.add_method(
            _node_id(contract.node_path(station_id, contract.SET_LOT_METHOD), idx),
            ua.QualifiedName(contract.SET_LOT_METHOD, idx),
            self._set_lot_callback(station_id),
            [_argument(a) for a in contract.SET_LOT_INPUTS],
            [],
        )
        await node.add_method(
            _node_id(contract.node_path(station_id, contract.GET_RESULT_METHOD), idx),
            ua.QualifiedName(contract.GET_RESULT_METHOD, idx),
            self._get_result_callback(station_id),
            [_argument(a) for a in contract.GET_RESULT_INPUTS],
            [_argument(a) for a in contract.GET_RESULT_OUTPUTS],
        )
        variables: dict[str, Node] = {}
        for field in _FIELDS.values():
            var = await node.add_variable(
                _node_id(contract.node_path(station_id, field.name), idx),
                ua.QualifiedName(field.name, idx),
                _variant(_INITIAL[field.name], field.ua_type),
            )
            await var.write_attribute(
                ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(field.description)))
            )
            variables[field.name] = var
        events = await self.server.get_event_generator(event_type, node.nodeid)
        return OpcuaStation(self.server, station_id, node, variables, events)

    def _trigger_callback(self, station_id: str) -> Callable[..., Awaitable[Any]]:
        async def trigger(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
            if len(args) < len(contract.TRIGGER_INPUTS):
                return _status(ua.StatusCodes.BadArgumentsMissing)
            if len(args) > len(contract.TRIGGER_INPUTS):
                return _status(ua.StatusCodes.BadTooManyArguments)
            sequence, part_id = args[0].Value, args[1].Value
            if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 <= sequence <= _UINT32_MAX:
                log.warning("Trigger refused: sequence is not a UInt32", station=station_id, sequence=repr(sequence))
                return _status(ua.StatusCodes.BadInvalidArgument)
            if part_id is not None and not isinstance(part_id, str):
                log.warning("Trigger refused: partId is not a String", station=station_id, part_id=repr(part_id))
                return _status(ua.StatusCodes.BadInvalidArgument)
            if part_id is not None and len(part_id) > MAX_PART_ID_CHARS:  # more than the record holds
                log.warning("Trigger refused: partId too long", station=station_id, chars=len(part_id))
                return _status(ua.StatusCodes.BadOutOfRange)
            try:
                inspection_id = await self.on_trigger(station_id, sequence, part_id or "", lot=self.lots[station_id])
            except TriggerRefused as exc:
                log.error("Trigger refused", station=station_id, sequence=sequence, reason=str(exc))
                return _status(ua.StatusCodes.BadResourceUnavailable)
            return [ua.Variant(inspection_id, ua.VariantType.String)]

        return trigger

    def _set_lot_callback(self, station_id: str) -> Callable[..., Awaitable[Any]]:
        async def set_lot(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
            if len(args) != len(contract.SET_LOT_INPUTS):
                return _status(ua.StatusCodes.BadArgumentsMissing if not args else ua.StatusCodes.BadTooManyArguments)
            lot = args[0].Value
            if lot is not None and not isinstance(lot, str):
                log.warning("SetLot refused: lot is not a String", station=station_id, lot=repr(lot))
                return _status(ua.StatusCodes.BadInvalidArgument)
            try:
                lot = check_text(lot or "", MAX_LOT_CHARS)
            except ValueError as exc:
                log.warning("SetLot refused", station=station_id, why=str(exc))
                too_long = len(lot or "") > MAX_LOT_CHARS
                return _status(ua.StatusCodes.BadOutOfRange if too_long else ua.StatusCodes.BadInvalidArgument)
            if lot != self.lots[station_id]:
                log.info("PLC set the lot", station=station_id, lot=lot, was=self.lots[station_id])
            self.lots[station_id] = lot
            await self._nodes[station_id].set_lot(lot)
            return []

        return set_lot

    def _get_result_callback(self, station_id: str) -> Callable[..., Awaitable[Any]]:
        async def get_result(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
            if len(args) != len(contract.GET_RESULT_INPUTS):
                return _status(ua.StatusCodes.BadArgumentsMissing if not args else ua.StatusCodes.BadTooManyArguments)
            sequence = args[0].Value
            if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 <= sequence <= _UINT32_MAX:
                return _status(ua.StatusCodes.BadInvalidArgument)
            result = self.read_result(station_id, sequence)
            if result is None:
                return _status(ua.StatusCodes.BadNotFound)
            values = _result_values(result)
            return [_variant(values[a.name], a.ua_type) for a in contract.GET_RESULT_OUTPUTS]

        return get_result


def quiet_asyncua() -> None:
    """asyncua logs every node it creates and every call at INFO; keep its warnings only."""
    logging.getLogger("asyncua").setLevel(logging.WARNING)
