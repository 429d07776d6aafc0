"""The drift watch's alert at the PLC, for every protocol the gateway serves (docs/drift.md): a real gateway and
nats-server, the results service's part played on the bus (a DriftState on lg.drift), real clients: asyncua on the
OPC UA endpoint (s1, both profiles: the simple Warning variable and OPC 40100's VisionWarningConditionType) and the
simulated Modbus PLC reading s2's holding registers (`error` 10 DRIFT_WARNING). A warning: triggers are still
taken, no state machine changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua

from lineguard.contracts import opcua as contract
from lineguard.contracts.registers import Error
from lineguard.natsserver import free_port
from lineguard.sim.modbus import SimulatedModbusPlc
from lineguard.testing.gateway import Gateway, publish_drift
from lineguard.testing.machine_vision import MV, VisionClient, vision_system
from lineguard.testing.waiting import wait_for
from lineguard.v1.drift_pb2 import DriftLevel

pytestmark = pytest.mark.asyncio(loop_scope="module")

WARNING_CONDITION = 1034  # VisionWarningConditionType (OPC 40100-1 NodeIds.csv)
DETAIL = "brightness PSI 4.5 >= 0.25 (mean 212 -> 74)"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, started_gateway) -> AsyncIterator[Gateway]:
    modbus = {"protocol": "modbus", "mode": "server", "port": free_port(), "poll_ms": 5, "heartbeat_ms": 50}
    modbus["plc_heartbeat_timeout_ms"] = 0  # the connection is the partner: no PLC heartbeat to keep up here
    async with started_gateway(
        tmp_path_factory.mktemp("drift-warning-nats"), quick_deadline_ms=300, plc={"s2": modbus}
    ) as started:
        yield started


class Conditions:
    """A client's subscription to the vision system's warning conditions: every event's fields, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def event_notification(self, event: Any) -> None:
        self.events.append({k: v.Value for k, v in event.get_event_props_as_fields_dict().items()})


async def subscribe_warnings(vc: VisionClient) -> tuple[Conditions, Any]:
    conditions = Conditions()
    sub = await vc.client.create_subscription(10, conditions)
    warning_type = vc.client.get_node(ua.NodeId(WARNING_CONDITION, vc.idx))  # type: ignore[arg-type]
    await sub.subscribe_events(vc.system, [warning_type], queuesize=100)
    return conditions, sub


async def station_variable(client: Client, station: str, name: str) -> Node:
    idx = await client.get_namespace_index(contract.NAMESPACE_URI)
    return client.get_node(ua.NodeId(contract.node_path(station, name), idx))  # type: ignore[arg-type]


async def reads(node: Node, value: object) -> bool:
    return bool(await node.read_value() == value)


def port_of(gateway: Gateway) -> int:
    return gateway.config.station("s2").plc.port  # type: ignore[attr-defined]


async def test_a_drift_alert_is_error_10_at_a_modbus_plc_while_triggers_are_taken(gateway: Gateway) -> None:
    line = gateway.config.line
    async with SimulatedModbusPlc("127.0.0.1", port_of(gateway), device_id=1) as plc:
        assert (await plc.read_gateway()).error == Error.NONE
        await publish_drift(gateway.bus, line, "s2", DriftLevel.DRIFT_LEVEL_WARNING, "contrast PSI 0.12 >= 0.1")
        await publish_drift(gateway.bus, line, "s2", DriftLevel.DRIFT_LEVEL_ALERT, DETAIL)
        # The error register reads 10 while no error shows (a WARNING level before it did not), triggers taken.
        fields = await plc.wait_for(lambda g: g.error == Error.DRIFT_WARNING)
        assert not fields.busy
        answer = await plc.trigger(1, part_id="tray-1")
        assert answer.busy and answer.error == Error.DRIFT_WARNING
        await publish_drift(gateway.bus, line, "s2", DriftLevel.DRIFT_LEVEL_OK)
        await plc.wait_for(lambda g: g.error == Error.NONE)


async def test_a_drift_alert_is_a_warning_at_an_opc_ua_plc_in_both_profiles(gateway: Gateway) -> None:
    line = gateway.config.line
    async with Client(gateway.endpoint) as client:
        s1 = await vision_system(client, "s1")
        conditions, _sub = await subscribe_warnings(s1)
        warning = await station_variable(client, "s1", contract.WARNING)
        assert await warning.read_value() == ""
        # A WARNING level is the dashboard's; the PLC is told of an ALERT only.
        await publish_drift(gateway.bus, line, "s1", DriftLevel.DRIFT_LEVEL_WARNING, "contrast PSI 0.12 >= 0.1")
        await publish_drift(gateway.bus, line, "s1", DriftLevel.DRIFT_LEVEL_ALERT, DETAIL)

        # The simple profile: the Warning variable names the alert; not in Error.
        await wait_for(lambda: reads(warning, DETAIL))
        assert await (await station_variable(client, "s1", contract.ERROR)).read_value() == ""

        # OPC 40100: one VisionWarningConditionType condition, retained; the system stays Ready, runs jobs.
        await s1.wait_for(lambda: len(conditions.events) >= 1)
        [raised] = conditions.events
        assert raised["EventType"] == ua.NodeId(WARNING_CONDITION, s1.idx)  # type: ignore[arg-type]
        assert raised["Retain"] is True and raised["ConditionName"] == "DriftWarning"
        assert raised["ErrorCode"] == Error.DRIFT_WARNING and raised["ErrorString"] == DETAIL
        assert raised["Message"].Text == DETAIL and raised["Severity"] == 400
        assert raised["BlockReaction"] is False and raised["StopReaction"] is False
        assert raised["SourceNode"] == s1.system.nodeid
        state = await s1.node("VisionStateMachine", "AutomaticModeStateMachine")
        assert (await (await state.get_child("0:CurrentState")).read_value()).Text == "Ready"
        assert await s1.start_single_job("during-warning", "p1")

        # A subscription made later (a client that connects now) gets the retained condition from ConditionRefresh.
        late_conditions, late_sub = await subscribe_warnings(s1)
        await client.get_node(ua.ObjectIds.ConditionType).call_method(
            ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),  # type: ignore[arg-type]
            ua.Variant(late_sub.subscription_id, ua.VariantType.UInt32),
        )
        await s1.wait_for(lambda: any(e.get("ConditionName") == "DriftWarning" for e in late_conditions.events))
        [refreshed] = [e for e in late_conditions.events if e.get("ConditionName") == "DriftWarning"]
        assert refreshed["Retain"] is True and refreshed["ErrorString"] == DETAIL
        assert len(conditions.events) == 1  # the refresh was for the new subscription only

        # Over: Warning empty, the condition withdrawn (Retain false).
        await publish_drift(gateway.bus, line, "s1", DriftLevel.DRIFT_LEVEL_OK)
        await wait_for(lambda: reads(warning, ""))
        await s1.wait_for(lambda: len(conditions.events) >= 2)
        assert [e["Retain"] for e in conditions.events] == [True, False]
        assert conditions.events[1]["ConditionName"] == "DriftWarning"
        assert await client.get_namespace_index(MV) == s1.idx
