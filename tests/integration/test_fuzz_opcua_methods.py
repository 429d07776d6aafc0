"""Fuzzing the gateway's OPC 40100 methods with hostile arguments from a real asyncua client (issue 13).

Every method the vision system links (StartSingleJob ... ReleaseResultHandle, and one the gateway does not support)
is called with argument lists hypothesis draws: wrong counts, wrong types, the standard's structures with odd ids,
huge strings, arrays, nulls. Each call is answered, with a result or a Bad status that is not Bad_InternalError (an
exception inside the gateway); afterwards the same server still runs a job to its result."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineguard.testing.gateway import Gateway, find, publish_decision
from lineguard.testing.machine_vision import VisionClient, vision_system
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.trigger_pb2 import Trigger

pytestmark = pytest.mark.asyncio(loop_scope="module")

AUTO = ("VisionStateMachine", "AutomaticModeStateMachine")
METHODS = [
    (*AUTO, "StartSingleJob"),
    (*AUTO, "StartContinuous"),
    (*AUTO, "Stop"),
    (*AUTO, "Abort"),
    ("VisionStateMachine", "Reset"),
    ("VisionStateMachine", "SelectModeAutomatic"),
    ("RecipeManagement", "GetRecipeListFiltered"),
    ("RecipeManagement", "PrepareRecipe"),
    ("RecipeManagement", "UnprepareRecipe"),
    ("RecipeManagement", "ReleaseRecipeHandle"),
    ("ResultManagement", "GetResultById"),
    ("ResultManagement", "ReleaseResultHandle"),
    ("ConfigurationManagement", "GetConfigurationList"),  # not supported by lineguard: Bad_NotSupported
]
STRUCTURES = ["MeasIdDataType", "PartIdDataType", "RecipeIdExternalDataType", "RecipeIdInternalDataType",
              "ProductIdDataType", "JobIdDataType", "ResultIdDataType"]  # fmt: skip


def argument() -> st.SearchStrategy[Any]:
    text = st.text(max_size=40) | st.just("x" * 70_000)
    scalars = st.one_of(
        st.builds(lambda v: ua.Variant(v, ua.VariantType.Int32), st.integers(-(2**31), 2**31 - 1)),
        st.builds(lambda v: ua.Variant(v, ua.VariantType.UInt32), st.integers(0, 2**32 - 1)),
        st.builds(lambda v: ua.Variant(v, ua.VariantType.Boolean), st.booleans()),
        st.builds(lambda v: ua.Variant(v, ua.VariantType.Double), st.floats(allow_nan=True)),
        st.builds(lambda v: ua.Variant(v, ua.VariantType.ByteString), st.binary(max_size=64)),
        st.builds(lambda v: ua.Variant(v, ua.VariantType.String), text),
        st.just(ua.Variant()),  # null
        st.builds(lambda name, id_: getattr(ua, name)(Id=id_), st.sampled_from(STRUCTURES), text),
    )
    return scalars | st.builds(lambda v: ua.Variant(v, ua.VariantType.Int32), st.lists(st.integers(0, 9), max_size=5))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, started_gateway) -> AsyncIterator[Gateway]:
    async with started_gateway(tmp_path_factory.mktemp("fuzz-nats"), quick_deadline_ms=300) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def s1(gateway: Gateway) -> AsyncIterator[VisionClient]:
    async with Client(gateway.endpoint, timeout=10) as client:
        yield await vision_system(client, "s1")


CALLS: list[str] = []


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(path=st.sampled_from(METHODS), args=st.lists(argument(), max_size=7))
async def test_hostile_arguments_get_a_bad_status_never_an_internal_error(
    s1: VisionClient, path: tuple[str, ...], args: list[Any]
) -> None:
    try:
        await s1.call(path, *args)
        CALLS.append("good")
    except ua.UaStatusCodeError as refused:
        assert refused.code != ua.StatusCodes.BadInternalError, f"{path[-1]}{tuple(args)!r:.300}"
        CALLS.append(hex(refused.code))


async def test_the_server_still_serves_after_the_fuzzing(gateway: Gateway, s1: VisionClient) -> None:
    assert len(CALLS) >= 60, "the fuzzing ran"
    # Whatever state the calls left it in (stopped, a recipe unprepared), a client brings it back and runs a job.
    for method in ((*AUTO, "Stop"), ("VisionStateMachine", "Reset")):
        with contextlib.suppress(ua.UaStatusCodeError):  # not in a state that needs it
            await s1.call(method, ua.Variant(0, ua.VariantType.Int32), "")
    async with Client(gateway.endpoint, timeout=10) as client:
        fresh = await vision_system(client, "s1")
        job_id = await fresh.start_single_job("after-fuzz", "p")
        [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == job_id)
        await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_PASS)
        await fresh.wait_for(lambda: job_id in {r["ResultId"].Id for r in fresh.results()})
