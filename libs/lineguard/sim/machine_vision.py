"""A simulated OPC 40100 (Machine Vision) PLC: starts jobs with StartSingleJob and checks each ResultReady event.

It is a client of the standard alone (lineguard.contracts.machine_vision holds only the standard's
NodeIds and browse names, and what lineguard puts in ResultContent): it finds the station's vision
system by its type, subscribes to its ResultReady events, calls StartSingleJob at a set rate (waiting
for the automatic mode to be Ready again, as the standard asks) and checks that every job gets
exactly one result, with its JobId, within the timeout. `lineguard demo --plc opcua-40100` drives
the line with it; the report is lineguard.sim.plc's.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import Client, Node, ua

from lineguard.contracts import machine_vision as mv
from lineguard.contracts import verdict_name
from lineguard.contracts.opcua import split_reasons
from lineguard.opcua_nodesets import load_machine_vision_types
from lineguard.sim.plc import (
    PlcResult,
    PlcRunReport,
    ResultCallback,
    connect_client,
    paced,
    subscription_parameters,
    tally,
    wait_until,
)

READY_WAIT_S = 10.0  # how long a job waits for the automatic mode to be Ready before it counts as refused


def _node_id(identifier: int, namespace: int) -> ua.NodeId:
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]  # asyncua annotates the wire types


class MachineVisionPlc:
    """`async with MachineVisionPlc(endpoint, "s1") as plc: report = await plc.run(20, rate_hz=10)`."""

    def __init__(
        self,
        endpoint: str,
        station: str = "s1",
        *,
        connect_timeout_s: float = 30.0,
        setup: Callable[[Client], Awaitable[None]] | None = None,
    ):
        self.endpoint = endpoint
        self.station = station
        self.connect_timeout_s = connect_timeout_s
        self.setup = setup  # awaited on the client before it connects: security policy, certificate, login
        self._client: Client | None = None
        self._idx = 0
        self._automatic: Node | None = None
        self._start_job: Node | None = None
        self._sent: dict[str, tuple[int, float]] = {}  # job id -> (job number, when StartSingleJob was called)
        self._received: list[PlcResult] = []  # every ResultReady, in arrival order
        self._arrived = asyncio.Condition()
        self._state = ""  # the automatic mode's CurrentState, as last notified
        self._state_changed = asyncio.Condition()
        self._on_result: ResultCallback | None = None
        self.jobs = 0
        self.lot = ""  # the MeasId of every job: the lot it runs (docs/opcua.md); set it at a lot change

    @property
    def received(self) -> list[PlcResult]:
        return list(self._received)

    async def __aenter__(self) -> MachineVisionPlc:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.disconnect()
            self._client = None

    async def _connect(self) -> None:
        client = await connect_client(self.endpoint, timeout_s=self.connect_timeout_s, setup=self.setup)
        self._client = client
        try:
            self._idx = await client.get_namespace_index(mv.NAMESPACE_URI)
        except ValueError:
            await client.disconnect()
            raise ConnectionError(f"{self.endpoint} serves no OPC 40100 vision system ({mv.NAMESPACE_URI})") from None
        await load_machine_vision_types(client, self._idx)
        system = await self._find_system(client)
        self._automatic = await system.get_child(
            [f"{self._idx}:{mv.STATE_MACHINE}", f"{self._idx}:{mv.AUTOMATIC_MODE}"]
        )
        self._start_job = await self._automatic.get_child(f"{self._idx}:StartSingleJob")
        subscription = await client.create_subscription(subscription_parameters(), self)
        result_ready = client.get_node(_node_id(mv.RESULT_READY_EVENT_TYPE, self._idx))
        await subscription.subscribe_events(system, result_ready, queuesize=0xFFFFFFFF)
        await subscription.subscribe_data_change(await self._automatic.get_child("0:CurrentState"), queuesize=100)

    async def _find_system(self, client: Client) -> Node:
        """The VisionSystemType instance named by the station, found by its type among the Objects."""
        vision_system_type = _node_id(mv.VISION_SYSTEM_TYPE, self._idx)
        found = []
        for node in await client.nodes.objects.get_children():
            if await node.read_type_definition() == vision_system_type:
                name = (await node.read_browse_name()).Name
                if name == self.station:
                    return node
                found.append(name)
        await client.disconnect()
        raise ConnectionError(
            f"no vision system {self.station!r} at {self.endpoint} (there are: {', '.join(found) or 'none'})"
        )

    async def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        """asyncua calls this for each change of the automatic mode's CurrentState."""
        async with self._state_changed:
            self._state = value.Text if value is not None else ""
            self._state_changed.notify_all()

    async def event_notification(self, event: Any) -> None:
        """asyncua calls this for every ResultReady event."""
        fields = {name: variant.Value for name, variant in event.get_event_props_as_fields_dict().items()}
        arrival = time.perf_counter()
        result_id = getattr(fields.get("ResultId"), "Id", "") or ""
        job_id = getattr(fields.get("JobId"), "Id", "") or ""
        content = [v.Value for v in fields.get("ResultContent") or []]
        verdict, reasons = (content[0], content[2]) if len(content) == len(mv.RESULT_CONTENT) else (0, "")
        number, called_at = self._sent.get(job_id, (0, float("nan")))
        result = PlcResult(
            sequence=number,
            inspection_id=job_id if job_id in self._sent else result_id,
            verdict=verdict_name(int(verdict or 0)),
            reasons=split_reasons(reasons or ""),
            latency_s=arrival - called_at,
        )
        first = job_id in self._sent and all(r.inspection_id != job_id for r in self._received)
        async with self._arrived:
            self._received.append(result)
            self._arrived.notify_all()
        if self._on_result is not None and first:
            outcome = self._on_result(result)
            if inspect.isawaitable(outcome):
                await outcome

    async def start_single_job(self, part_id: str = "") -> str:
        """Wait for Ready, call StartSingleJob; returns the JobId (the inspection id)."""
        if self._automatic is None or self._start_job is None:
            raise RuntimeError("MachineVisionPlc is not connected: use it as `async with MachineVisionPlc(...)`")
        async with self._state_changed:
            await asyncio.wait_for(self._state_changed.wait_for(lambda: self._state == mv.READY), READY_WAIT_S)
        self.jobs += 1
        called_at = time.perf_counter()
        job_id, _error = await self._automatic.call_method(
            self._start_job.nodeid,
            ua.MeasIdDataType(Id=self.lot),  # type: ignore[attr-defined]  # made from the NodeSet; the lot (opcua.md)
            ua.PartIdDataType(Id=part_id),  # type: ignore[attr-defined]
            ua.RecipeIdExternalDataType(Id=""),  # type: ignore[attr-defined]  # "": the prepared recipe
            ua.ProductIdDataType(Id=""),  # type: ignore[attr-defined]
        )
        self._sent[job_id.Id] = (self.jobs, called_at)
        return str(job_id.Id)

    async def run(
        self, parts: int, rate_hz: float, on_result: ResultCallback | None = None, result_timeout_s: float = 30.0
    ) -> PlcRunReport:
        """Start `parts` jobs `rate_hz` per second, then wait for their results (plus 0.2 s to catch duplicates)."""
        ticks = paced(parts, rate_hz)
        self._on_result = on_result
        first = len(self._received)
        ids: list[str] = []
        async for _ in ticks:
            ids.append(await self.start_single_job(f"part-{self.jobs + 1}"))
        wanted = set(ids)
        await wait_until(self._arrived, lambda: wanted <= {r.inspection_id for r in self._received}, result_timeout_s)
        await asyncio.sleep(0.2)
        self._on_result = None
        received = self._received[first:]
        return tally([(j, self._sent[j][0]) for j in ids], [(r.inspection_id, r) for r in received], self._sent)
