"""The gateway as the OPC UA client of a PLC's own server (opcua_client.py's settings): one station per connection.

Connect (security as configured), check every node of the map (it exists, is a variable of a fitting type, the
gateway may read or write it: a map that does not fit is NodeMapError naming the field and node, at start), write
the status nodes, subscribe to the trigger node, and serve until the connection is lost; then Error (when an
`error` node exists it shows it once back), and connect again with backoff. asyncua's own reconnecting is off:
this loop does it, so a lost PLC is seen at once and the node map is checked again on every connection.

What is pending when a connection opens: the trigger's sequence when the PLC's `result_sequence` does not hold it
yet. A result the handshake closed for it meanwhile (the decision, or FAIL / TIMEOUT while the PLC was away) is
written then (read back, recorded as delivered); otherwise it is triggered (the same inspection while it is still
in flight). What a trigger or a result means stays in station.py."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from asyncua import Client, Node, ua

from lineguard.contracts import opcua as opcua_contract
from lineguard.contracts.registers import MAX_LOT_CHARS, MAX_PART_ID_CHARS, Error, check_text, reason_bits
from lineguard.services.gateway.endpoint import NotHandedOver, ResultReader, TriggerHandler, TriggerRefused
from lineguard.services.gateway.handshake import Result
from lineguard.services.gateway.protocols import opcua_access
from lineguard.services.gateway.protocols.opcua_client import KEY, READ_NODES, RESULT_NODES, Settings

log = structlog.get_logger("lineguard.gateway")

_INTEGERS = frozenset(
    {
        ua.VariantType.SByte,
        ua.VariantType.Byte,
        ua.VariantType.Int16,
        ua.VariantType.UInt16,
        ua.VariantType.Int32,
        ua.VariantType.UInt32,
        ua.VariantType.Int64,
        ua.VariantType.UInt64,
    }
)
_RANGES = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
_BOOL, _STRING = frozenset({ua.VariantType.Boolean}), frozenset({ua.VariantType.String})
_READ, _WRITE = 1, 2  # AccessLevel bits: CurrentRead, CurrentWrite


def _fits(field: str, counter: bool) -> frozenset[ua.VariantType]:
    """The data types a field's node may have."""
    if field == "trigger":
        return _INTEGERS if counter else _BOOL
    if field in ("part_id", "lot", "inspection_id"):
        return _STRING
    if field == "busy":
        return _BOOL
    if field == "reasons":
        return _STRING | _INTEGERS
    return _INTEGERS  # sequence, verdict, result_sequence, error, heartbeat


def _value(dv: ua.DataValue) -> Any:
    return dv.Value.Value if dv.Value is not None else None


class NodeMapError(ValueError):
    """A node of the map that the PLC does not have, or not as the field needs it."""


@dataclass(frozen=True)
class MappedNode:
    field: str
    text: str  # the NodeId string of the configuration
    node: Node
    variant_type: ua.VariantType

    def variant(self, value: Any) -> ua.Variant:
        if self.variant_type in _INTEGERS:
            low, high = _RANGES[self.variant_type]
            if not low <= int(value) <= high:
                raise ValueError(
                    f"{self.field} {value} does not fit the PLC node {self.text} ({self.variant_type.name})"
                )
            value = int(value)
        return ua.Variant(value, self.variant_type)


class _Changes:
    """asyncua's subscription handler: every value of the trigger node, in order, to a queue."""

    def __init__(self, queue: asyncio.Queue[Any]):
        self.queue = queue

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.queue.put_nowait(val)

    def status_change_notification(self, status: Any) -> None:
        log.warning("OPC UA client: the PLC's subscription changed status", status=str(status))


class OpcuaClientEndpoint:
    """One station's connection to its PLC's OPC UA server (a PlcEndpoint, ReadsBack)."""

    protocol = KEY

    def __init__(self, station: str, settings: Settings, on_trigger: TriggerHandler):
        self.station = station
        self.stations = (station,)
        self.settings = settings
        self.on_trigger = on_trigger
        self.counter = settings.nodes.sequence is None  # the trigger node is the sequence counter itself
        self.read_result: ResultReader = lambda _station, _sequence: None
        self._client: Client | None = None
        self._nodes: dict[str, MappedNode] = {}
        self._connected = False
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._busy = False
        self._error = Error.NONE  # what the error node shows (a refusal until the next trigger is taken)
        self._fault: str | None = None  # set_error's reason: the station is in Error while set
        self._heartbeat = 0

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    # -- PlcEndpoint

    async def start(self) -> None:
        """Connect once: a node map that does not fit the PLC stops the gateway here, naming the node; a PLC not
        reachable yet is connected to in the background, with backoff."""
        try:
            await self._connect()
        except NodeMapError:
            await self._close()
            raise
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: the loop connects again
            await self._close()
            log.warning("PLC not reachable yet; connecting in the background", endpoint=self.endpoint, error=repr(exc))
        self._task = asyncio.create_task(self._run())
        log.info("OPC UA client started", endpoint=self.endpoint, station=self.station)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def run_heartbeat(self, stopping: asyncio.Event) -> None:
        if "heartbeat" not in self.settings.nodes.named():
            return
        while not stopping.is_set():
            self._heartbeat += 1
            if self._connected:
                with contextlib.suppress(Exception):  # a lost connection: the run loop connects again
                    await self._write(
                        {"heartbeat": self._heartbeat & _RANGES[self._nodes["heartbeat"].variant_type][1]}
                    )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.settings.heartbeat_ms / 1000)

    async def deliver(self, station: str, result: Result) -> None:
        """Write the result in one Write, `result_sequence` last; NotHandedOver while not connected (written when
        the connection is back, if the PLC still waits for it)."""
        if not self._connected:
            raise NotHandedOver(f"not connected to the PLC at {self.endpoint}")
        values: dict[str, Any] = {
            "inspection_id": result.inspection_id,
            "verdict": int(result.verdict),
            "reasons": result.reasons,
            "result_sequence": result.sequence,
        }
        try:
            await self._write({n: values[n] for n in RESULT_NODES if n in self._nodes})
        except (ConnectionError, OSError, TimeoutError, ua.UaError) as exc:  # the link went while writing
            raise NotHandedOver(f"the connection to the PLC at {self.endpoint} failed: {exc!r}") from exc

    async def set_busy(self, station: str, busy: bool) -> None:
        self._busy = busy
        if self._connected and "busy" in self._nodes:
            with contextlib.suppress(Exception):  # shown again when the connection is back
                await self._write({"busy": busy})

    async def set_error(self, station: str, reason: str | None) -> None:
        self._fault = reason
        await self._show_error(Error.SERVICE_DOWN if reason else Error.NONE)

    def serve_reads(self, read: ResultReader) -> None:
        self.read_result = read

    # -- the connection

    async def _run(self) -> None:
        s = self.settings
        delay = s.reconnect_ms / 1000
        while not self._stopping.is_set():
            try:
                if not self._connected:
                    await self._connect()
                    log.info("connected to the PLC", station=self.station, endpoint=self.endpoint)
                delay = s.reconnect_ms / 1000
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - refused, reset, timed out, a map that no longer fits: lost
                level = log.error if isinstance(exc, NodeMapError) else log.warning
                level(
                    "no connection to the PLC: station in Error; connecting again",
                    station=self.station,
                    endpoint=self.endpoint,
                    error=str(exc) or repr(exc),
                    in_s=delay,
                )
            await self._close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, s.reconnect_max_ms / 1000)

    async def _connect(self) -> None:
        s = self.settings
        client = Client(s.endpoint, timeout=s.timeout_ms / 1000, watchdog_intervall=s.watchdog_ms / 1000)
        client.session_timeout = 60_000
        await self._secure(client)
        self._lost = asyncio.Event()

        async def lost(exc: Exception) -> None:
            log.warning("connection to the PLC lost", station=self.station, endpoint=self.endpoint, error=repr(exc))
            self._lost.set()

        client.connection_lost_callback = lost
        self._client = client
        await asyncio.wait_for(client.connect(), timeout=s.timeout_ms / 1000)
        self._nodes = await self._check_nodes(client)
        self._connected = True

    async def _secure(self, client: Client) -> None:
        sec = self.settings.security
        client.application_uri = opcua_access.application_uri(sec)
        client.name = client.description = opcua_access.PRODUCT_NAME
        client.product_uri = opcua_access.PRODUCT_URI
        if sec.policy != "None":
            from asyncua.crypto import security_policies

            cert, key = opcua_access.server_certificate(sec, client.application_uri, self.endpoint, role="client")
            trusted = opcua_access.ClientCertificates(sec.pki_dir, peer="server")
            await trusted.load()
            client.certificate_validator = trusted
            policy = getattr(security_policies, f"SecurityPolicy{sec.policy.replace('_', '')}")
            mode = ua.MessageSecurityMode.Sign if sec.mode == "Sign" else ua.MessageSecurityMode.SignAndEncrypt
            await client.set_security(policy, str(cert), str(key), mode=mode)
        if sec.user is not None:
            client.set_user(sec.user)
            client.set_password(sec.password() or "")
        elif sec.profile == "demo":
            log.warning("OPC UA client: demo profile, anonymous login to the PLC", endpoint=self.endpoint)

    async def _close(self) -> None:
        self._connected = False
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the PLC may be gone: nothing to close politely
                await asyncio.wait_for(client.disconnect(), timeout=self.settings.timeout_ms / 1000)
            client.disconnect_socket()

    async def _node_id(self, client: Client, text: str, namespaces: list[str]) -> ua.NodeId:
        if text.startswith("nsu="):
            uri, rest = text[4:].split(";", 1)
            if uri not in namespaces:
                raise LookupError(f"the PLC has no namespace {uri!r} (it has {namespaces})")
            text = f"ns={namespaces.index(uri)};{rest}"
        return ua.NodeId.from_string(text)

    async def _check_nodes(self, client: Client) -> dict[str, MappedNode]:
        """Every node of the map, as the PLC has it; NodeMapError naming the field and node where one does not fit."""
        namespaces = await client.get_namespace_array()
        checked: dict[str, MappedNode] = {}
        for field, text in self.settings.nodes.named().items():
            where = f"plc.nodes.{field} ({text}) of station {self.station} at {self.endpoint}"
            try:
                node = client.get_node(await self._node_id(client, text, namespaces))
            except (LookupError, ValueError, ua.UaError) as exc:
                raise NodeMapError(f"{where}: {exc}") from None
            node_class, data_type, access = await node.read_attributes(
                [ua.AttributeIds.NodeClass, ua.AttributeIds.DataType, ua.AttributeIds.UserAccessLevel]
            )
            status = node_class.StatusCode
            if status is not None and not status.is_good():
                raise NodeMapError(f"{where}: no such node on the PLC ({status.name})")
            if _value(node_class) != ua.NodeClass.Variable:
                raise NodeMapError(f"{where}: a {ua.NodeClass(_value(node_class)).name}, not a variable")
            type_id = _value(data_type)
            allowed = _fits(field, self.counter)
            variant_type = (
                ua.VariantType(type_id.Identifier)
                if type_id.NamespaceIndex == 0 and isinstance(type_id.Identifier, int) and 1 <= type_id.Identifier <= 25
                else None
            )
            if variant_type not in allowed:
                raise NodeMapError(
                    f"{where}: its data type is {type_id.to_string()}"
                    + (f" ({variant_type.name})" if variant_type else "")
                    + f"; the field needs {' or '.join(sorted(t.name for t in allowed))}"
                )
            needed = _READ if field in READ_NODES else _WRITE
            if not int(_value(access) or 0) & needed:
                raise NodeMapError(f"{where}: the gateway's user may not {'read' if needed == _READ else 'write'} it")
            checked[field] = MappedNode(field, text, node, variant_type)
        return checked

    async def _serve(self) -> None:
        """One connection: status nodes, what is pending, then every trigger until the connection is lost."""
        client = self._client
        assert client is not None
        changes: asyncio.Queue[Any] = asyncio.Queue()
        await self._write(
            {"busy": self._busy, "error": self._shown_error()} if "error" in self._nodes else {"busy": self._busy}
        )
        answered = (await self._read(["result_sequence"]))["result_sequence"]
        sub = await client.create_subscription(self.settings.publishing_interval_ms, _Changes(changes))
        # Queued, so every count of a fast counter arrives; sampled as fast as the PLC's server does. asyncua
        # annotates the interval with its wire type ua.Double (a float subclass nobody constructs) and takes a float.
        await sub.subscribe_data_change(self._nodes["trigger"].node, queuesize=64, sampling_interval=0.0)  # type: ignore[call-overload]
        previous: Any = None
        while not self._stopping.is_set():
            waiters = [asyncio.ensure_future(changes.get()), asyncio.ensure_future(self._lost.wait())]
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            if self._lost.is_set():
                raise ConnectionError("connection to the PLC lost")
            value = waiters[0].result()
            first, previous, before = previous is None, value, previous
            if self.counter:
                pending_sequence = int(value) if value and (not first or int(value) != answered) else None
            else:
                rose = bool(value) and (first or not before)
                pending_sequence = None
                if rose:
                    fields = await self._read(["sequence"])
                    pending_sequence = int(fields["sequence"])
                    if first and pending_sequence == answered:
                        pending_sequence = None  # the PLC has this trigger's result already
            if pending_sequence is not None:
                await self._triggered(pending_sequence, read_back=first)

    async def _triggered(self, sequence: int, *, read_back: bool) -> None:
        if sequence == 0:
            log.warning("PLC trigger with sequence 0 (none) ignored: count from 1", station=self.station)
            await self._show_error(Error.BAD_SEQUENCE)
            return
        if read_back:
            result = self.read_result(self.station, sequence)
            if result is not None:
                log.info("PLC waits for a result closed while it was away: written", sequence=sequence)
                await self.deliver(self.station, result)
                return
        texts: list[str] = [f for f in ("part_id", "lot") if f in self._nodes]
        read = await self._read(texts) if texts else {}
        part_id, lot = (str(read.get(f) or "") for f in ("part_id", "lot"))
        try:
            check_text(part_id, MAX_PART_ID_CHARS, "part id", ascii_only=False)  # what the record holds
        except ValueError as exc:
            log.warning(
                "trigger refused: the PLC's part_id node", station=self.station, sequence=sequence, why=str(exc)
            )
            await self._show_error(Error.PART_ID_TOO_LONG)
            return
        try:
            check_text(lot, MAX_LOT_CHARS)
        except ValueError as exc:
            log.warning("trigger refused: the PLC's lot node", station=self.station, sequence=sequence, why=str(exc))
            await self._show_error(Error.LOT_TOO_LONG if len(lot) > MAX_LOT_CHARS else Error.LOT_NOT_ASCII)
            return
        try:
            await self.on_trigger(self.station, sequence, part_id, lot=lot)
        except TriggerRefused as exc:
            log.error("trigger refused", station=self.station, sequence=sequence, reason=str(exc))
            await self._show_error(Error.IN_ERROR if self._fault else Error.REFUSED)
            return
        await self._show_error(Error.NONE)

    # -- reads and writes

    def _shown_error(self) -> int:
        return int(self._error or (Error.SERVICE_DOWN if self._fault else Error.NONE))

    async def _show_error(self, code: Error) -> None:
        """A refusal, until the next trigger is taken; otherwise the station's state (SERVICE_DOWN while in Error)."""
        self._error = code if code not in (Error.NONE, Error.SERVICE_DOWN) else Error.NONE
        if self._connected and "error" in self._nodes:
            with contextlib.suppress(Exception):  # shown again when the connection is back
                await self._write({"error": self._shown_error()})

    async def _read(self, fields: list[str]) -> dict[str, Any]:
        client = self._client
        if client is None:
            raise ConnectionError("not connected")
        values = await asyncio.wait_for(
            client.read_values([self._nodes[f].node for f in fields]), timeout=self.settings.timeout_ms / 1000
        )
        return dict(zip(fields, values, strict=True))

    async def _write(self, values: dict[str, Any]) -> None:
        """One Write of these fields, in the given order; raises naming each refused field."""
        client = self._client
        if client is None:
            raise ConnectionError("not connected")
        nodes = [self._nodes[f] for f in values if f in self._nodes]
        if not nodes:
            return
        dvs = [ua.DataValue(self._encode(n, values[n.field])) for n in nodes]
        async with self._write_lock:
            statuses = await asyncio.wait_for(
                client.uaclient.write_attributes([n.node.nodeid for n in nodes], dvs, ua.AttributeIds.Value),
                timeout=self.settings.timeout_ms / 1000,
            )
        refused = [f"{n.field} ({n.text}): {s.name}" for n, s in zip(nodes, statuses, strict=True) if not s.is_good()]
        if refused:
            raise RuntimeError(f"the PLC refused the write: {', '.join(refused)}")

    def _encode(self, node: MappedNode, value: Any) -> ua.Variant:
        if node.field == "reasons":
            reasons = tuple(value)
            if node.variant_type in _STRING:
                return node.variant(opcua_contract.join_reasons(reasons))
            return node.variant(reason_bits(reasons) & _RANGES[node.variant_type][1])
        return node.variant(value)
