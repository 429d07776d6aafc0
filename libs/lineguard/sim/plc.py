"""A simulated PLC: triggers parts over OPC UA and checks each gets exactly one result.

It plays a controller against the gateway's OPC UA interface
(lineguard.contracts.opcua): it subscribes to the station's result events,
calls Trigger with increasing sequence numbers at a set rate, and waits for
every result. `lineguard demo` and the end-to-end tests drive the line with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Coroutine, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, Node, ua

from lineguard.contracts import opcua as contract
from lineguard.contracts import verdict_name

# Results reach the PLC within this of the gateway emitting them; the keep-alive counts are in these periods.
PUBLISHING_INTERVAL_MS = 10
SESSION_TIMEOUT_MS = 600_000  # what asyncua servers grant at most: asking more only logs a warning

ResultCallback = Callable[["PlcResult"], Awaitable[None] | None]


def _node_id(path: str, namespace: int) -> ua.NodeId:
    # asyncua's NodeId takes a plain str and int (asyncua passes them so itself), but its annotations name the
    # wire types (ua.String, ua.Int16): subclasses of str and int nobody constructs.
    return ua.NodeId(path, namespace)  # type: ignore[arg-type]


@dataclass
class PlcResult:
    sequence: int
    inspection_id: str
    verdict: str  # PASS / FAIL / REWORK / ERROR
    reasons: list[str]
    latency_s: float  # from the Trigger call to the result event; nan for results it never triggered
    read_back: bool = False  # read with GetResult (missed as an event), not received as one


@dataclass
class PlcRunReport:
    results: list[PlcResult] = field(default_factory=list)  # the first result of each trigger, in sequence order
    missing: list[int] = field(default_factory=list)  # sequences with no result in time
    duplicates: list[int] = field(default_factory=list)  # sequences with more than one result
    unexpected: list[PlcResult] = field(default_factory=list)  # results for inspections it never triggered
    p50_s: float = math.nan
    p99_s: float = math.nan

    @property
    def ok(self) -> bool:
        """Every trigger got exactly one result, and nothing else came."""
        return bool(self.results) and not (self.missing or self.duplicates or self.unexpected)


def paced(parts: int, rate_hz: float) -> AsyncIterator[int]:
    """Yield 0 .. parts-1, the i-th at start + i / rate_hz: a late part is not made up by a gap after it."""
    if parts < 1 or rate_hz <= 0:
        raise ValueError(f"need parts >= 1 and rate_hz > 0, got {parts} parts at {rate_hz} Hz")

    async def ticks() -> AsyncIterator[int]:
        start = time.perf_counter()
        for i in range(parts):
            delay = start + i / rate_hz - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            yield i

    return ticks()


async def wait_until(condition: asyncio.Condition, predicate: Callable[[], bool], timeout_s: float) -> None:
    """Wait on `condition` until `predicate` holds or `timeout_s` passes: no error, the report says what is missing."""
    async with condition:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(condition.wait_for(predicate), timeout=max(0.0, timeout_s))


def tally(
    triggered: Iterable[tuple[Hashable, int]], received: Iterable[tuple[Hashable, PlcResult]], known: Container[Any]
) -> PlcRunReport:
    """The run's report from its triggers (key, sequence) in order and the results that came (key, result);
    a result whose key is not `known` (the PLC never triggered it) is unexpected."""
    by_key: dict[Hashable, list[PlcResult]] = {}
    report = PlcRunReport()
    for key, result in received:
        if key in known:
            by_key.setdefault(key, []).append(result)
        else:
            report.unexpected.append(result)
    for key, sequence in triggered:
        got = by_key.get(key, [])
        if not got:
            report.missing.append(sequence)
            continue
        if len(got) > 1:
            report.duplicates.append(sequence)
        report.results.append(got[0])
    latencies = [r.latency_s for r in report.results]
    report.p50_s, report.p99_s = percentile(latencies, 50), percentile(latencies, 99)
    return report


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def connect_client(
    endpoint: str,
    *,
    timeout_s: float,
    setup: Callable[[Client], Awaitable[None]] | None = None,
    on_lost: Callable[[Exception], Coroutine[Any, Any, None]] | None = None,
) -> Client:
    """A connected asyncua Client, as a PLC makes one: `setup` (security policy, certificate, login) is awaited on
    each new client before it connects. The server may still be starting (a gateway's address space takes seconds
    to build), so refused or unanswered connects are retried until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        client = Client(endpoint, timeout=10)
        client.session_timeout = SESSION_TIMEOUT_MS
        if on_lost is not None:
            client.connection_lost_callback = on_lost
        try:
            if setup is not None:
                await setup(client)
            await client.connect()
            return client
        except (TimeoutError, OSError, ua.UaError) as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"no OPC UA server at {endpoint} after {timeout_s:g} s: {exc!r}") from exc
            await asyncio.sleep(0.2)


def subscription_parameters(
    interval_ms: float = PUBLISHING_INTERVAL_MS, *, lifetime_count: int = 3000, keep_alive_count: int = 500
) -> ua.CreateSubscriptionParameters:
    """A PLC's subscription: published every `interval_ms`, kept alive through long quiet spells (by default),
    every notification of a publish delivered at once."""
    return ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=interval_ms,
        RequestedLifetimeCount=lifetime_count,
        RequestedMaxKeepAliveCount=keep_alive_count,
        MaxNotificationsPerPublish=0,
        PublishingEnabled=True,
        Priority=0,
    )


@dataclass
class _Sent:
    sequence: int
    called_at: float


class SimulatedPlc:
    """`async with SimulatedPlc(endpoint, station="s1") as plc: report = await plc.run(20, rate_hz=10)`."""

    def __init__(
        self,
        endpoint: str,
        station: str = "s1",
        *,
        connect_timeout_s: float = 30.0,
        first_sequence: int = 1,
        setup: Callable[[Client], Awaitable[None]] | None = None,
    ):
        self.endpoint = endpoint
        self.setup = setup  # awaited on each new client before it connects: security policy, certificate, login
        self.station = station
        self.connect_timeout_s = connect_timeout_s
        self.next_sequence = first_sequence
        self._client: Client | None = None
        self._station_node: Node | None = None
        self._trigger_node: Node | None = None
        self._get_result_node: Node | None = None
        self._sent: dict[str, _Sent] = {}  # by inspection id
        self._received: list[tuple[float, PlcResult]] = []  # (arrival, result), every event in arrival order
        self._arrived = asyncio.Condition()
        self._on_result: ResultCallback | None = None
        # Each time its client saw the connection lost (a keep-alive probe unanswered for 1 s, the transport gone):
        # the session the PLC relies on for its result events did not survive.
        self.connection_losses: list[str] = []

    @property
    def received(self) -> list[PlcResult]:
        """Every result event since connecting, in arrival order (including unexpected ones)."""
        return [result for _, result in self._received]

    async def __aenter__(self) -> SimulatedPlc:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.disconnect()
            self._client = None

    def drop_connection(self) -> None:
        """What a pulled cable does: the connection goes, the session is not closed (the server keeps it and its
        subscription for its timeout). Connect a new SimulatedPlc to go on."""
        if self._client is not None:
            transport = self._client.uaclient.protocol.transport if self._client.uaclient.protocol else None
            if transport is not None:
                transport.abort()

    async def _connect(self) -> None:
        client = await connect_client(
            self.endpoint, timeout_s=self.connect_timeout_s, setup=self.setup, on_lost=self._connection_lost
        )
        self._client = client
        try:
            idx = await client.get_namespace_index(contract.NAMESPACE_URI)
        except ValueError:
            await client.disconnect()
            raise ConnectionError(
                f"{self.endpoint} is not a lineguard gateway: no namespace {contract.NAMESPACE_URI}"
            ) from None
        self._station_node = client.get_node(_node_id(contract.station_path(self.station), idx))
        self._trigger_node = client.get_node(_node_id(contract.node_path(self.station, contract.TRIGGER_METHOD), idx))
        self._get_result_node = client.get_node(
            _node_id(contract.node_path(self.station, contract.GET_RESULT_METHOD), idx)
        )
        try:
            await self._station_node.read_browse_name()
        except ua.UaStatusCodeError:
            await client.disconnect()
            raise ConnectionError(f"the gateway at {self.endpoint} serves no station {self.station!r}") from None
        event_type = client.get_node(_node_id(contract.EVENT_TYPE, idx))
        subscription = await client.create_subscription(subscription_parameters(), self)
        await subscription.subscribe_events(self._station_node, event_type, queuesize=0xFFFFFFFF)

    async def _connection_lost(self, exc: Exception) -> None:
        self.connection_losses.append(repr(exc))

    async def event_notification(self, event: Any) -> None:
        """asyncua calls this for every result event."""
        fields = event.get_event_props_as_fields_dict()

        def value(name: str) -> Any:
            return fields[name].Value if name in fields else None

        arrival = time.perf_counter()
        inspection_id = value(contract.RESULT_INSPECTION_ID) or ""
        sent = self._sent.get(inspection_id)
        result = PlcResult(
            sequence=int(value(contract.RESULT_SEQUENCE) or 0),
            inspection_id=inspection_id,
            verdict=verdict_name(int(value(contract.RESULT_VERDICT) or 0)),
            reasons=contract.split_reasons(value(contract.RESULT_REASONS) or ""),
            latency_s=arrival - sent.called_at if sent is not None else math.nan,
        )
        first = sent is not None and all(r.inspection_id != inspection_id for _, r in self._received)
        async with self._arrived:
            self._received.append((arrival, result))
            self._arrived.notify_all()
        if self._on_result is not None and first:
            outcome = self._on_result(result)
            if inspect.isawaitable(outcome):
                await outcome

    async def trigger(self, sequence: int, part_id: str = "") -> str:
        """Call the station's Trigger method; returns the inspection id."""
        if self._station_node is None or self._trigger_node is None:
            raise RuntimeError("SimulatedPlc is not connected: use it as `async with SimulatedPlc(...) as plc`")
        called_at = time.perf_counter()
        inspection_id = await self._station_node.call_method(
            self._trigger_node.nodeid,
            ua.Variant(sequence, ua.VariantType.UInt32),
            ua.Variant(part_id, ua.VariantType.String),
        )
        self._sent.setdefault(inspection_id, _Sent(sequence, called_at))
        return inspection_id

    async def set_lot(self, lot: str) -> None:
        """Call the station's SetLot, as a PLC does at a lot change: every part triggered from then on carries `lot`.
        A lot the gateway refuses (not printable ASCII, too long) raises asyncua's UaStatusCodeError with its status."""
        if self._station_node is None:
            raise RuntimeError("SimulatedPlc is not connected: use it as `async with SimulatedPlc(...) as plc`")
        namespace = self._station_node.nodeid.NamespaceIndex
        await self._station_node.call_method(
            _node_id(contract.node_path(self.station, contract.SET_LOT_METHOD), namespace),
            ua.Variant(lot, ua.VariantType.String),
        )

    async def read_result(self, sequence: int) -> PlcResult | None:
        """Read the result of `sequence` with the station's GetResult (what a PLC does for a result it missed while
        disconnected); None when the gateway has none for it. A result read is counted as received."""
        if self._station_node is None or self._get_result_node is None:
            raise RuntimeError("SimulatedPlc is not connected: use it as `async with SimulatedPlc(...) as plc`")
        try:
            outputs = await self._station_node.call_method(
                self._get_result_node.nodeid, ua.Variant(sequence, ua.VariantType.UInt32)
            )
        except ua.UaStatusCodeError as exc:
            if exc.code == ua.StatusCodes.BadNotFound:
                return None
            raise
        fields = dict(zip((a.name for a in contract.GET_RESULT_OUTPUTS), outputs, strict=True))
        inspection_id = fields[contract.RESULT_INSPECTION_ID]
        sent = self._sent.get(inspection_id)
        arrival = time.perf_counter()
        result = PlcResult(
            sequence=int(fields[contract.RESULT_SEQUENCE]),
            inspection_id=inspection_id,
            verdict=verdict_name(int(fields[contract.RESULT_VERDICT])),
            reasons=contract.split_reasons(fields[contract.RESULT_REASONS]),
            latency_s=arrival - sent.called_at if sent is not None else math.nan,
            read_back=True,
        )
        async with self._arrived:
            self._received.append((arrival, result))
            self._arrived.notify_all()
        return result

    async def run(
        self,
        parts: int,
        rate_hz: float,
        on_result: ResultCallback | None = None,
        result_timeout_s: float = 30.0,
        settle_s: float = 0.2,
    ) -> PlcRunReport:
        """Trigger `parts` parts `rate_hz` per second, then wait for their results.

        Returns when every part has a result (plus `settle_s` to catch duplicates), or
        `result_timeout_s` after the last trigger; `on_result` sees each first result."""
        ticks = paced(parts, rate_hz)
        self._on_result = on_result
        first_received = len(self._received)
        ids: list[str] = []
        async for _ in ticks:
            ids.append(await self.trigger(self.next_sequence))
            self.next_sequence = (self.next_sequence + 1) & 0xFFFFFFFF
        wanted = set(ids)
        await wait_until(
            self._arrived, lambda: wanted <= {r.inspection_id for _, r in self._received}, result_timeout_s
        )
        await asyncio.sleep(settle_s)
        self._on_result = None
        received = self._received[first_received:]
        return tally(
            [(i, self._sent[i].sequence) for i in ids], [(r.inspection_id, r) for _, r in received], self._sent
        )
