"""A generic OPC 40100 (Machine Vision) client for tests: what UaExpert or a PLC's OPC UA client does, knowing only
the standard (the namespace URI, the NodeSet's NodeIds, standard browse names), nothing of lineguard's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, Node, ua

# From the standard (OPC 40100-1 v1.0.0 NodeSet, NodeIds.csv), nothing lineguard-specific.
MV = "http://opcfoundation.org/UA/MachineVision"
VISION_SYSTEM_TYPE, JOB_STARTED, READY_EVENT, RESULT_READY, ACQUISITION_DONE = 1003, 1013, 1023, 1024, 1025
READY_STATE, SINGLE_EXECUTION_STATE, HALTED_STATE = 5057, 5058, 5029


def _loaded(name: str) -> Any:
    """A 40100 structure class, made by asyncua's load_data_type_definitions() (unknown to the type checker)."""
    return getattr(ua, name)


def _node_id(identifier: int, namespace: int) -> ua.NodeId:
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]  # asyncua annotates its wire types


@dataclass
class VisionClient:
    """A generic 40100 client on one vision system: what UaExpert or a PLC's OPC UA client does."""

    client: Client
    idx: int
    system: Node
    events: list[dict[str, Any]] = field(default_factory=list)
    states: list[str] = field(default_factory=list)  # the automatic mode's CurrentState, as it changed

    def node(self, *path: str) -> Any:
        return self.system.get_child([f"{self.idx}:{name}" for name in path])

    async def call(self, path: tuple[str, ...], *args: Any) -> Any:
        method = await self.node(*path)
        parent = await method.get_parent()
        return await parent.call_method(method, *args)

    async def start_single_job(self, meas: str, part: str, recipe: str = "", product: str = "") -> str:
        out = await self.call(
            ("VisionStateMachine", "AutomaticModeStateMachine", "StartSingleJob"),
            _loaded("MeasIdDataType")(Id=meas),
            _loaded("PartIdDataType")(Id=part),
            _loaded("RecipeIdExternalDataType")(Id=recipe),
            _loaded("ProductIdDataType")(Id=product),
        )
        job_id, error = out
        assert error == 0
        return job_id.Id

    def event_notification(self, event: Any) -> None:
        self.events.append({k: v.Value for k, v in event.get_event_props_as_fields_dict().items()})

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        if value is not None:
            self.states.append(value.Text)

    def results(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["EventType"] == _node_id(RESULT_READY, self.idx)]

    async def wait_for(self, what: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)


async def vision_system(client: Client, name: str) -> VisionClient:
    """Find the vision system by its standard type among the Objects, and subscribe to its events and state."""
    await client.load_data_type_definitions()
    idx = await client.get_namespace_index(MV)
    systems = [
        node
        for node in await client.nodes.objects.get_children()
        if await node.read_type_definition() == _node_id(VISION_SYSTEM_TYPE, idx)
    ]
    by_name: dict[str, Node] = {str((await n.read_browse_name()).Name): n for n in systems}
    vc = VisionClient(client, idx, by_name[name])
    sub = await client.create_subscription(10, vc)
    event_types = [
        client.get_node(_node_id(t, idx)) for t in (RESULT_READY, JOB_STARTED, READY_EVENT, ACQUISITION_DONE)
    ]
    await sub.subscribe_events(vc.system, event_types, queuesize=1000)
    current = await vc.node("VisionStateMachine", "AutomaticModeStateMachine")
    await sub.subscribe_data_change(await current.get_child("0:CurrentState"), queuesize=100)
    return vc
