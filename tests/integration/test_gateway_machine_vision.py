"""The gateway's OPC 40100 (Machine Vision) address space, used by a generic client: real gateway, nats-server, asyncua.

The client side knows only the standard: the namespace URI, the NodeIds of the NodeSet (NodeIds.csv) and the
standard browse names; nothing of lineguard's. The bus side plays the decision service. One gateway for the
module (conftest's started_gateway: s1 waits 10 s for a decision, s2 gives FAIL / TIMEOUT after 0.4 s)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from lineguard.services.gateway.protocols.machine_vision import RESULTS_SHOWN  # the gateway's, for the assertion
from lineguard.services.gateway.protocols.opcua_security import hash_password
from lineguard.sim.machine_vision import MachineVisionPlc
from lineguard.testing.gateway import Gateway, find, publish_decision, publish_frame
from lineguard.testing.machine_vision import (
    ACQUISITION_DONE,
    HALTED_STATE,
    JOB_STARTED,
    READY_EVENT,
    READY_STATE,
    RESULT_READY,
    VisionClient,
    vision_system,
)
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.trigger_pb2 import Trigger

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENGINEER, ENGINEER_PASSWORD = "eng", "halt-and-reset"  # a logged-in user, beside the anonymous operator


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, started_gateway) -> AsyncIterator[Gateway]:
    security = {
        "profile": "demo",
        "users": [{"name": ENGINEER, "role": "engineer", "password_hash": hash_password(ENGINEER_PASSWORD)}],
    }
    async with started_gateway(
        tmp_path_factory.mktemp("mv-nats"), quick_deadline_ms=300, plc_security=security
    ) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="module")
async def s1(gateway: Gateway) -> AsyncIterator[VisionClient]:
    async with Client(gateway.endpoint) as client:
        yield await vision_system(client, "s1")


async def shown_results(vc: VisionClient) -> list[Any]:
    """The ResultDataType values in ResultManagement/Results, slots still empty left out."""
    shown = []
    for variable in await (await vc.node("ResultManagement", "Results")).get_children():
        value = await variable.read_data_value(raise_on_bad_status=False)
        if value.StatusCode is None or value.StatusCode.is_good():
            shown.append(value.Value.Value)
    return shown


def content(result: dict[str, Any]) -> tuple[int, str, str]:
    verdict, name, reasons = (v.Value for v in result["ResultContent"])
    return verdict, name, reasons


async def test_a_generic_client_starts_jobs_and_gets_one_result_each(gateway: Gateway, s1: VisionClient) -> None:
    await s1.wait_for(lambda: bool(s1.states))  # the subscription's first value
    assert s1.states[-1] == "Ready"
    verdicts = [Verdict.VERDICT_PASS, Verdict.VERDICT_FAIL, Verdict.VERDICT_REWORK]
    jobs = [await s1.start_single_job(f"meas-{i}", f"part-{i}") for i in range(3)]
    for job_id, verdict in zip(jobs, verdicts, strict=True):
        [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t, j=job_id: t.part.inspection_id == j)
        assert trigger.part.recipe_id == "pcb-a" and trigger.source == "opcua"
        reasons = () if verdict == Verdict.VERDICT_PASS else ("DEFECT_SHORT",)
        await publish_decision(gateway.bus, trigger.part, verdict, *reasons)
    await s1.wait_for(lambda: len(s1.results()) >= 3)
    await asyncio.sleep(0.3)  # a duplicate, had there been one, would be here by now
    results = {r["ResultId"].Id: r for r in s1.results()}
    assert len(s1.results()) == 3 and set(results) == set(jobs)
    for i, (job_id, verdict) in enumerate(zip(jobs, verdicts, strict=True)):
        r = results[job_id]
        assert r["JobId"].Id == job_id and r["MeasId"].Id == f"meas-{i}" and r["PartId"].Id == f"part-{i}"
        assert r["ResultState"] == 1 and r["IsPartial"] is False
        assert r["InternalRecipeId"].Id == "pcb-a"
        assert content(r)[0] == verdict and content(r)[2] == ("" if verdict == Verdict.VERDICT_PASS else "DEFECT_SHORT")
        times = r["ProcessingTimes"]
        assert times.StartTime <= times.EndTime and times.ProcessingDuration > 0
    assert content(results[jobs[0]])[:2] == (1, "PASS")
    # Each job went Ready -> SingleExecution -> Ready, with JobStarted and Ready events naming it.
    assert s1.states.count("SingleExecution") == 3 and s1.states[-1] == "Ready"
    for event_type in (JOB_STARTED, READY_EVENT):
        named = [e["JobId"].Id for e in s1.events if e["EventType"] == ua.NodeId(event_type, s1.idx)]
        assert named == jobs
    state_id = await s1.node("VisionStateMachine", "AutomaticModeStateMachine")
    assert await (await state_id.get_child(["0:CurrentState", "0:Id"])).read_value() == ua.NodeId(READY_STATE, s1.idx)
    system_state = await (await s1.node("SystemState")).read_value()
    assert system_state.State.value == 2  # SEMI E10 standby: operational, nothing in flight


async def test_acquisition_done_when_the_image_is_taken_before_the_result(gateway: Gateway, s1: VisionClient) -> None:
    def acquired() -> list[str]:
        return [e["JobId"].Id for e in s1.events if e["EventType"] == ua.NodeId(ACQUISITION_DONE, s1.idx)]

    await s1.wait_for(lambda: bool(s1.states))
    job_id = await s1.start_single_job("acq", "acq-part")
    [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == job_id)
    await publish_frame(gateway.bus, trigger.part)  # the capture service has the image
    await s1.wait_for(lambda: acquired() == [job_id])
    assert not [r for r in s1.results() if r["ResultId"].Id == job_id]  # before its result: the part may move on
    await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_PASS)
    await s1.wait_for(lambda: any(r["ResultId"].Id == job_id for r in s1.results()))
    # An image of a part already answered, and of one never triggered here, is no news.
    late = await s1.start_single_job("acq-late", "p")
    [late_trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == late)
    await publish_decision(gateway.bus, late_trigger.part, Verdict.VERDICT_FAIL, "DEFECT_OPEN")
    await s1.wait_for(lambda: any(r["ResultId"].Id == late for r in s1.results()))
    await publish_frame(gateway.bus, late_trigger.part)
    stranger = Part()
    stranger.CopyFrom(late_trigger.part)
    stranger.inspection_id = "01900000-0000-7000-8000-000000000000"
    await publish_frame(gateway.bus, stranger)
    await asyncio.sleep(0.5)
    assert acquired() == [job_id]
    order = [
        (e["EventType"].Identifier, e["JobId"].Id) for e in s1.events if e.get("JobId") and e["JobId"].Id == job_id
    ]
    assert order.index((ACQUISITION_DONE, job_id)) < order.index((RESULT_READY, job_id))


async def test_results_are_readable_again(gateway: Gateway, s1: VisionClient) -> None:
    job_id = await s1.start_single_job("again", "p")
    [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == job_id)
    get = ("ResultManagement", "GetResultById")
    # In flight: GetResultById waits for it (Timeout in ms).
    waiting = asyncio.create_task(
        s1.call(get, ua.ResultIdDataType(Id=job_id), ua.Variant(10_000, ua.VariantType.Int32))
    )
    await asyncio.sleep(0.2)
    await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_FAIL, "DEFECT_OPEN")
    handle, result, error = await waiting
    assert error == 0 and result.ResultId.Id == job_id and result.MeasId.Id == "again"
    assert [v.Value for v in result.ResultContent] == [2, "FAIL", "DEFECT_OPEN"]
    assert await s1.call(("ResultManagement", "ReleaseResultHandle"), ua.Variant(handle, ua.VariantType.UInt32)) == 0
    with pytest.raises(ua.UaStatusCodeError) as twice:
        await s1.call(("ResultManagement", "ReleaseResultHandle"), ua.Variant(handle, ua.VariantType.UInt32))
    assert twice.value.code == ua.StatusCodes.BadInvalidArgument
    assert job_id in {r.ResultId.Id for r in await shown_results(s1)}
    with pytest.raises(ua.UaStatusCodeError) as unknown:
        await s1.call(get, ua.ResultIdDataType(Id="no-such-result"), ua.Variant(0, ua.VariantType.Int32))
    assert unknown.value.code == ua.StatusCodes.BadNotFound


async def test_the_results_folder_keeps_the_last_results_in_fixed_slots(gateway: Gateway) -> None:
    """No node is made or deleted per result: the same RESULTS_SHOWN variables, each holding one of the last results,
    whose components agree with it."""
    async with Client(gateway.endpoint) as client:
        s2 = await vision_system(client, "s2")
        folder = await s2.node("ResultManagement", "Results")
        slots = [n.nodeid for n in await folder.get_children()]
        assert len(slots) == RESULTS_SHOWN
        jobs = [await s2.start_single_job(f"ring-{i}", "p") for i in range(RESULTS_SHOWN + 3)]
        await s2.wait_for(lambda: {r["ResultId"].Id for r in s2.results()} >= set(jobs))
        assert [n.nodeid for n in await folder.get_children()] == slots
        shown = await shown_results(s2)
        assert {r.ResultId.Id for r in shown} == set(jobs[3:])
        for variable in await folder.get_children():
            value = await variable.read_value()
            components = {(await c.read_browse_name()).Name: c for c in await variable.get_children()}
            assert (await components["ResultId"].read_value()).Id == value.ResultId.Id
            assert (await components["MeasId"].read_value()).Id == value.MeasId.Id
            assert [v.Value for v in await components["ResultContent"].read_value()] == [2, "FAIL", "TIMEOUT"]


async def test_prepare_recipe_names_the_recipe_of_the_next_parts(gateway: Gateway, s1: VisionClient) -> None:
    recipes = ("RecipeManagement",)
    listed = await s1.call(
        (*recipes, "GetRecipeListFiltered"),
        ua.RecipeIdExternalDataType(Id=""),
        ua.ProductIdDataType(Id=""),
        ua.Variant(2, ua.VariantType.Int32),  # TriStateBoolean DontCare
        ua.Variant(0, ua.VariantType.UInt32),
        ua.Variant(0, ua.VariantType.UInt32),
        ua.Variant(0, ua.VariantType.Int32),
    )
    complete, count, _handle, recipe_list, error = listed
    assert complete and count == 2 and error == 0 and [r.Id for r in recipe_list] == ["pcb-a", "quick"]
    with pytest.raises(ua.UaStatusCodeError) as unknown:
        await s1.call(
            (*recipes, "PrepareRecipe"), ua.RecipeIdExternalDataType(Id="no-such"), ua.RecipeIdInternalDataType(Id="")
        )
    assert unknown.value.code == ua.StatusCodes.BadNotFound
    with pytest.raises(ua.UaStatusCodeError) as not_prepared:
        await s1.start_single_job("m", "p", recipe="quick")
    assert not_prepared.value.code == ua.StatusCodes.BadInvalidState
    try:
        internal, completed, error = await s1.call(
            (*recipes, "PrepareRecipe"), ua.RecipeIdExternalDataType(Id="quick"), ua.RecipeIdInternalDataType(Id="")
        )
        assert (internal.Id, completed, error) == ("quick", True, 0)
        job_id = await s1.start_single_job("m", "p", recipe="quick")
        [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == job_id)
        assert trigger.part.recipe_id == "quick"  # the record names the recipe the PLC prepared
        await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_PASS)
        await s1.wait_for(lambda: job_id in {r["ResultId"].Id for r in s1.results()})
        [result] = [r for r in s1.results() if r["ResultId"].Id == job_id]
        assert result["InternalRecipeId"].Id == "quick" and result["ExternalRecipeId"].Id == "quick"
    finally:
        await s1.call(
            (*recipes, "PrepareRecipe"), ua.RecipeIdExternalDataType(Id="pcb-a"), ua.RecipeIdInternalDataType(Id="")
        )


async def test_a_job_whose_decision_never_comes_gets_fail_timeout(gateway: Gateway) -> None:
    async with Client(gateway.endpoint) as client:
        s2 = await vision_system(client, "s2")
        job_id = await s2.start_single_job("late", "p")
        await s2.wait_for(lambda: bool(s2.results()), timeout=10)
        [result] = s2.results()
    assert result["ResultId"].Id == job_id and result["ResultState"] == 4  # Failed
    assert content(result) == (2, "FAIL", "TIMEOUT")


async def test_every_part_not_inspected_is_failed_and_every_judged_one_completed(
    gateway: Gateway, s1: VisionClient
) -> None:
    """ResultState 4 Failed tells a 40100 client the part was not inspected, whichever service gave up on it: the
    decision service's TIMEOUT (its deadline is before the gateway's, so the usual one), a refused frame, an ERROR.
    A judged FAIL, for a defect or for a code not found, is 1 Completed: its verdict says it is not a pass."""
    outcomes = [
        ((Verdict.VERDICT_FAIL, "TIMEOUT", "NO_INFERENCE"), 4),  # the decision service's own deadline
        ((Verdict.VERDICT_FAIL, "DEFECT_SHORT", "NO_OCR", "TIMEOUT"), 4),  # the code reader's result never came
        ((Verdict.VERDICT_FAIL, "OVERLOAD"), 4),
        ((Verdict.VERDICT_ERROR, "INVALID_RESULT"), 4),
        ((Verdict.VERDICT_FAIL, "DEFECT_SHORT"), 1),
        ((Verdict.VERDICT_FAIL, "CODE_MISSING"), 1),
        ((Verdict.VERDICT_REWORK, "DEFECT_SPUR"), 1),
        ((Verdict.VERDICT_PASS,), 1),
    ]
    jobs = [await s1.start_single_job("states", f"state-{i}") for i in range(len(outcomes))]
    for job_id, (decision, _) in zip(jobs, outcomes, strict=True):
        [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t, j=job_id: t.part.inspection_id == j)
        await publish_decision(gateway.bus, trigger.part, *decision)
    await s1.wait_for(lambda: set(jobs) <= {r["ResultId"].Id for r in s1.results()})
    states = {r["ResultId"].Id: r["ResultState"] for r in s1.results()}
    assert [states[j] for j in jobs] == [state for _, state in outcomes]
    # The Results folder says the same as the event.
    shown = {r.ResultId.Id: r.ResultState for r in await shown_results(s1)}
    assert [shown[j] for j in jobs] == [state for _, state in outcomes]


async def test_bad_arguments_and_wrong_states_are_refused(gateway: Gateway, s1: VisionClient) -> None:
    start = ("VisionStateMachine", "AutomaticModeStateMachine", "StartSingleJob")
    cases = [
        (start, ("not a MeasId", ua.PartIdDataType(Id=""), ua.RecipeIdExternalDataType(Id=""), ua.ProductIdDataType())),
        (start, (ua.MeasIdDataType(Id=""),)),
        (start, (ua.MeasIdDataType(Id=""), ua.PartIdDataType(Id=""), None, None, "extra", 7)),
        (("VisionStateMachine", "AutomaticModeStateMachine", "Stop"), (ua.Variant(0, ua.VariantType.Int32), "")),
        (("VisionStateMachine", "Reset"), ("zero", "")),
        (("RecipeManagement", "PrepareRecipe"), (ua.RecipeIdExternalDataType(Id=""), ua.RecipeIdInternalDataType())),
    ]
    codes = []
    for path, args in cases:
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await s1.call(path, *args)
        codes.append(refused.value.code)
    assert codes == [
        ua.StatusCodes.BadInvalidArgument,
        ua.StatusCodes.BadArgumentsMissing,
        ua.StatusCodes.BadTooManyArguments,
        ua.StatusCodes.BadInvalidState,  # Stop while Ready
        ua.StatusCodes.BadInvalidArgument,
        ua.StatusCodes.BadInvalidArgument,  # no recipe named
    ]
    # ... and the station still serves.
    job_id = await s1.start_single_job("after", "p")
    [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == job_id)
    await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_PASS)
    await s1.wait_for(lambda: job_id in {r["ResultId"].Id for r in s1.results()})


async def test_halt_refuses_jobs_until_reset(gateway: Gateway, s1: VisionClient) -> None:
    machine = "VisionStateMachine"
    cause = (ua.Variant(1, ua.VariantType.Int32), "maintenance")
    engineer_client = Client(gateway.endpoint)
    engineer_client.set_user(ENGINEER)
    engineer_client.set_password(ENGINEER_PASSWORD)
    async with engineer_client:
        engineer = await vision_system(engineer_client, "s1")
        assert await engineer.call((machine, "Halt"), *cause) == 0
    current = await s1.node(machine)
    assert await (await current.get_child(["0:CurrentState", "0:Id"])).read_value() == ua.NodeId(HALTED_STATE, s1.idx)
    assert (await (await s1.node("SystemState")).read_value()).State.value == 6  # SEMI E10 non-scheduled
    with pytest.raises(ua.UaStatusCodeError) as halted:
        await s1.start_single_job("m", "p")
    assert halted.value.code == ua.StatusCodes.BadInvalidState
    assert await s1.call((machine, "Reset"), *cause) == 0
    assert (await (await current.get_child("0:CurrentState")).read_value()).Text == "Operational"
    await s1.wait_for(lambda: s1.states[-1] == "Ready")


async def test_the_simulated_40100_plc_checks_every_result(gateway: Gateway) -> None:
    async with MachineVisionPlc(gateway.endpoint, "s2") as plc:
        report = await plc.run(3, rate_hz=20, result_timeout_s=10)
    assert report.ok, report
    assert [(r.sequence, r.verdict, r.reasons) for r in report.results] == [(n, "FAIL", ["TIMEOUT"]) for n in (1, 2, 3)]
    assert all(0.4 <= r.latency_s < 5 for r in report.results)
    with pytest.raises(ConnectionError, match="no vision system 's9'"):
        async with MachineVisionPlc(gateway.endpoint, "s9"):
            pass


async def test_a_continuous_job_triggers_every_period_until_stop(gateway: Gateway) -> None:
    """StartContinuous triggers a part a period (the gateway's default 500 ms; s2's parts get FAIL / TIMEOUT after
    0.4 s, so each is answered before the next), and Stop ends it: no trigger after the Stop's reply."""
    automatic = ("VisionStateMachine", "AutomaticModeStateMachine")
    part_id = "continuous-part"

    async def triggered() -> list[Trigger]:
        found = await find(gateway.bus, "trigger", Trigger, lambda t: t.part_id == part_id, timeout=2)
        return found

    async with Client(gateway.endpoint) as client:
        s2 = await vision_system(client, "s2")
        await s2.wait_for(lambda: bool(s2.states))
        job_id, error = await s2.call(
            (*automatic, "StartContinuous"),
            ua.MeasIdDataType(Id="lot-7"),
            ua.PartIdDataType(Id=part_id),
            ua.RecipeIdExternalDataType(Id=""),
            ua.ProductIdDataType(Id=""),
        )
        assert error == 0 and job_id.Id
        await s2.wait_for(lambda: s2.states[-1] == "ContinuousExecution")
        await s2.wait_for(lambda: len(s2.results()) >= 3, timeout=10)
        assert await s2.call((*automatic, "Stop"), ua.Variant(0, ua.VariantType.Int32), "end of lot") == 0
        at_stop = len(await triggered())
        await asyncio.sleep(1.2)  # over two periods: a job still running would have triggered again
        assert len(await triggered()) == at_stop >= 3
        await s2.wait_for(lambda: s2.states[-1] == "Ready")
    assert {content(r)[1:] for r in s2.results()} == {("FAIL", "TIMEOUT")}


async def test_a_client_loads_every_40100_structure_without_an_error_logged(gateway: Gateway) -> None:
    # A process of its own: in this one the gateway's server has already built the classes the client would build.
    script = (
        "import asyncio, logging, sys\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stderr)\n"
        "from asyncua import Client, ua\n"
        "from lineguard.contracts import machine_vision as mv\n"
        "from lineguard.opcua_nodesets import load_machine_vision_types\n"
        "async def main():\n"
        "    async with Client(sys.argv[1]) as client:\n"
        "        await load_machine_vision_types(client, await client.get_namespace_index(mv.NAMESPACE_URI))\n"
        "    names = sys.argv[2:]\n"
        "    print(' '.join(n for n in names if hasattr(ua, n)))\n"
        "asyncio.run(main())\n"
    )
    # Each was an ERROR with its traceback ("Unknown datatype for field ... please report"), and was not decodable.
    names = ["ResultDataType", "ConfigurationDataType", "ConfigurationTransferOptions", "RecipeTransferOptions"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        gateway.endpoint,
        *names,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert out.decode().split() == names
    logged = [line for line in err.decode().splitlines() if line.startswith(("ERROR", "WARNING:asyncua.ua"))]
    assert logged == [], "\n".join(logged)
