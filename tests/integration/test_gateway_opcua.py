"""The gateway service against a real nats-server and real OPC UA clients.

One gateway for the module (building an asyncua address space takes seconds),
with two stations on one endpoint: s1 with a long deadline for the decision
tests, s2 with a short one for the timeout tests. Each test uses its own
sequence numbers and finds its own messages by inspection id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import Client, ua

from lineguard.bus import DEAD_REASON, Bus
from lineguard.contracts import opcua as contract
from lineguard.sim.plc import SimulatedPlc
from lineguard.testing.gateway import Gateway, find, publish_decision
from lineguard.testing.streams import settled
from lineguard.testing.waiting import wait_for
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUICK_TIMEOUT_S = 0.3 + 0.1  # s2: recipe deadline + gateway grace


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, started_gateway) -> AsyncIterator[Gateway]:
    async with started_gateway(tmp_path_factory.mktemp("gateway-nats"), quick_deadline_ms=300) as started:
        yield started


async def gateway_idle(bus: Bus) -> None:
    """Until the gateway has settled every decision on the bus."""
    await wait_for(lambda: settled(bus, "decision", "gateway-decision"), timeout=10)


async def read_station(endpoint: str, station: str, *names: str) -> dict[str, object]:
    async with Client(endpoint) as client:
        idx = await client.get_namespace_index(contract.NAMESPACE_URI)
        nodes = [client.get_node(ua.NodeId(contract.node_path(station, n), idx)) for n in names]
        values = await client.read_values(nodes)
    return dict(zip(names, values, strict=True))


async def test_plc_trigger_puts_a_trigger_on_the_bus(gateway: Gateway) -> None:
    async with SimulatedPlc(gateway.endpoint, "s1") as plc:
        inspection_id = await plc.trigger(101, "tray-7")
        assert await plc.trigger(101, "tray-7") == inspection_id  # the PLC's retry: same inspection
        busy = await read_station(gateway.endpoint, "s1", contract.BUSY)
    triggers = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == inspection_id)
    assert len(triggers) == 1  # stored once although published twice
    t = triggers[0]
    assert (t.part.line, t.part.station, t.part.recipe_id, t.part.sequence) == ("l1", "s1", "pcb-a", 101)
    assert t.part_id == "tray-7" and t.source == "opcua"
    assert abs(t.part.triggered_unix_ns - time.time_ns()) < 60e9
    assert busy == {contract.BUSY: True}
    # Settle it, so later tests start with nothing in flight at s1.
    await publish_decision(gateway.bus, t.part, Verdict.VERDICT_PASS)


async def test_decision_reaches_the_plc_and_an_ack_is_published(gateway: Gateway) -> None:
    async with SimulatedPlc(gateway.endpoint, "s1", first_sequence=201) as plc:
        run = asyncio.create_task(plc.run(1, rate_hz=10, result_timeout_s=10))
        [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.sequence == 201)
        await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_REWORK, "DEFECT_SPUR", "DEFECT_COPPER")
        report = await run
    assert report.ok, report
    [result] = report.results
    assert (result.sequence, result.inspection_id) == (201, trigger.part.inspection_id)
    assert (result.verdict, result.reasons) == ("REWORK", ["DEFECT_SPUR", "DEFECT_COPPER"])
    assert 0 < result.latency_s < 10
    [ack] = await find(gateway.bus, "ack", PlcAck, lambda a: a.part.inspection_id == trigger.part.inspection_id)
    assert ack.verdict == Verdict.VERDICT_REWORK and list(ack.reason_codes) == ["DEFECT_SPUR", "DEFECT_COPPER"]
    assert ack.delivered and not ack.gateway_timeout and ack.protocol == "opcua"
    # The same result as variables, for PLCs that poll rather than subscribe to events.
    values = await read_station(gateway.endpoint, "s1", *(f.name for f in contract.RESULT_FIELDS), contract.BUSY)
    assert values[contract.RESULT_SEQUENCE] == 201
    assert values[contract.RESULT_INSPECTION_ID] == trigger.part.inspection_id
    assert values[contract.RESULT_VERDICT] == contract.RESULT_VERDICTS["REWORK"]
    assert values[contract.RESULT_REASONS] == "DEFECT_SPUR,DEFECT_COPPER"
    assert abs(values[contract.RESULT_TIMESTAMP].timestamp() - ack.delivered_unix_ns / 1e9) < 0.01
    assert values[contract.BUSY] is False


async def test_a_plc_watching_result_sequence_reads_the_whole_result_when_it_changes(gateway: Gateway) -> None:
    # ResultSequence is the PLC's "this result is complete": written with the other fields in one write, last.
    others = [f.name for f in contract.RESULT_FIELDS if f.name != contract.RESULT_SEQUENCE]
    seen: list[list[object]] = []
    async with Client(gateway.endpoint) as client:
        idx = await client.get_namespace_index(contract.NAMESPACE_URI)
        node = {
            n: client.get_node(ua.NodeId(contract.node_path("s1", n), idx)) for n in [*others, contract.RESULT_SEQUENCE]
        }

        class Watch:
            async def datachange_notification(self, _node: object, value: int, _data: object) -> None:
                if value == 251:
                    seen.append(await client.read_values([node[n] for n in others]))

        subscription = await client.create_subscription(0, Watch())
        await subscription.subscribe_data_change(node[contract.RESULT_SEQUENCE])
        async with SimulatedPlc(gateway.endpoint, "s1", first_sequence=251) as plc:
            run = asyncio.create_task(plc.run(1, rate_hz=10, result_timeout_s=10))
            [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.sequence == 251)
            await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
            assert (await run).ok
        async with asyncio.timeout(5):
            while not seen:
                await asyncio.sleep(0.01)
    values = dict(zip(others, seen[0], strict=True))
    assert values[contract.RESULT_INSPECTION_ID] == trigger.part.inspection_id
    assert values[contract.RESULT_VERDICT] == contract.RESULT_VERDICTS["FAIL"]
    assert values[contract.RESULT_REASONS] == "DEFECT_SHORT"


async def test_no_decision_gives_the_plc_fail_timeout_and_a_late_decision_is_not_delivered(gateway: Gateway) -> None:
    async with SimulatedPlc(gateway.endpoint, "s2", first_sequence=301) as plc:
        report = await plc.run(3, rate_hz=20, result_timeout_s=10)
        assert report.ok, report
        assert [(r.sequence, r.verdict, r.reasons) for r in report.results] == [
            (s, "FAIL", ["TIMEOUT"]) for s in (301, 302, 303)
        ]
        assert all(QUICK_TIMEOUT_S <= r.latency_s < QUICK_TIMEOUT_S + 2 for r in report.results)
        first = report.results[0]
        [ack] = await find(gateway.bus, "ack", PlcAck, lambda a: a.part.inspection_id == first.inspection_id)
        assert ack.gateway_timeout and ack.delivered and ack.verdict == Verdict.VERDICT_FAIL
        assert list(ack.reason_codes) == ["TIMEOUT"]
        # The decision service's PASS, too late: the PLC must not see it.
        events_before = len(plc.received)
        await publish_decision(gateway.bus, ack.part, Verdict.VERDICT_PASS)
        await gateway_idle(gateway.bus)
        await asyncio.sleep(0.2)  # an event, had there been one, is published within the subscription's 10 ms
        assert len(plc.received) == events_before
    values = await read_station(gateway.endpoint, "s2", contract.RESULT_SEQUENCE, contract.RESULT_VERDICT)
    assert values == {contract.RESULT_SEQUENCE: 303, contract.RESULT_VERDICT: contract.RESULT_VERDICTS["FAIL"]}


async def test_decision_for_an_unknown_station_is_dead_lettered_and_the_next_served(gateway: Gateway) -> None:
    async with SimulatedPlc(gateway.endpoint, "s1") as plc:
        stray = Part(inspection_id="0193-unknown-station", line="l1", station="s9", recipe_id="pcb-a", sequence=1)
        await publish_decision(gateway.bus, stray, Verdict.VERDICT_PASS)
        # A decision for an inspection this gateway never triggered (it restarted since) is not delivered.
        orphan = Part(inspection_id="0193-after-restart", line="l1", station="s1", recipe_id="pcb-a", sequence=401)
        await publish_decision(gateway.bus, orphan, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
        dead = await find(
            gateway.bus,
            "dead",
            Decision,
            lambda m: Decision.FromString(m.data).part.inspection_id == stray.inspection_id,
        )
        assert len(dead) == 1
        reason = dead[0].headers[DEAD_REASON]
        # Refused by the bus worker's check of every message against the configured stations (issue 13).
        assert "is about station 's9', which is not configured on line 'l1' (known: s1, s2)" in reason
        await gateway_idle(gateway.bus)
        await asyncio.sleep(0.2)
        got = [(r.sequence, r.verdict, r.reasons) for r in plc.received if r.inspection_id == orphan.inspection_id]
    assert got == []


async def test_heartbeat_counts_up(gateway: Gateway) -> None:
    before = (await read_station(gateway.endpoint, "s2", contract.HEARTBEAT))[contract.HEARTBEAT]
    await asyncio.sleep(1.3 * contract.HEARTBEAT_PERIOD_S)
    after = (await read_station(gateway.endpoint, "s2", contract.HEARTBEAT))[contract.HEARTBEAT]
    assert after > before > 0


async def test_trigger_with_a_bad_argument_is_refused(gateway: Gateway) -> None:
    async with Client(gateway.endpoint) as client:
        idx = await client.get_namespace_index(contract.NAMESPACE_URI)
        station = client.get_node(ua.NodeId(contract.station_path("s1"), idx))
        method = client.get_node(ua.NodeId(contract.node_path("s1", contract.TRIGGER_METHOD), idx))
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await station.call_method(method, ua.Variant(-1, ua.VariantType.Int32), "")
        assert refused.value.code == ua.StatusCodes.BadInvalidArgument
        with pytest.raises(ua.UaStatusCodeError) as missing:
            await station.call_method(method, ua.Variant(5, ua.VariantType.UInt32))
        assert missing.value.code == ua.StatusCodes.BadArgumentsMissing


async def test_address_space_is_the_contracts(gateway: Gateway) -> None:
    async with Client(gateway.endpoint) as client:
        idx = await client.get_namespace_index(contract.NAMESPACE_URI)
        stations = await client.nodes.objects.get_child(f"{idx}:{contract.STATIONS_FOLDER}")
        assert sorted([(await n.read_browse_name()).Name for n in await stations.get_children()]) == ["s1", "s2"]
        s1 = await stations.get_child(f"{idx}:s1")
        names = {(await n.read_browse_name()).Name: n for n in await s1.get_children()}
        methods = {contract.TRIGGER_METHOD, contract.GET_RESULT_METHOD, contract.SET_LOT_METHOD}
        expected = {*methods, *(f.name for f in (*contract.RESULT_FIELDS, *contract.STATUS_FIELDS))}
        assert set(names) == expected
        for f in (*contract.RESULT_FIELDS, *contract.STATUS_FIELDS):
            assert await names[f.name].read_data_type_as_variant_type() == ua.VariantType[f.ua_type], f.name
        inputs = await (await names[contract.TRIGGER_METHOD].get_child("0:InputArguments")).read_value()
        assert [a.Name for a in inputs] == [a.name for a in contract.TRIGGER_INPUTS]
        get_result = names[contract.GET_RESULT_METHOD]
        inputs = await (await get_result.get_child("0:InputArguments")).read_value()
        outputs = await (await get_result.get_child("0:OutputArguments")).read_value()
        assert [a.Name for a in inputs] == [a.name for a in contract.GET_RESULT_INPUTS]
        assert [a.Name for a in outputs] == [f.name for f in contract.RESULT_FIELDS]
        event_type = await client.nodes.base_event_type.get_child(f"{idx}:{contract.EVENT_TYPE}")
        props = {(await p.read_browse_name()).Name for p in await event_type.get_properties()}
        assert props == {f.name for f in contract.RESULT_FIELDS}


async def test_simulated_plc_reports_a_trigger_without_result_as_missing(gateway: Gateway) -> None:
    async with SimulatedPlc(gateway.endpoint, "s1", first_sequence=501) as plc:
        report = await plc.run(1, rate_hz=10, result_timeout_s=0.3, settle_s=0)
    assert report.missing == [501] and report.results == [] and not report.ok
    [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.sequence == 501)
    await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_PASS)  # settle it for the other tests


async def test_simulated_plc_names_a_station_the_gateway_does_not_serve(gateway: Gateway) -> None:
    with pytest.raises(ConnectionError, match="serves no station 's9'"):
        async with SimulatedPlc(gateway.endpoint, "s9"):
            pass
