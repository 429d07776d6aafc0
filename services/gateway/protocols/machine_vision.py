"""OPC UA for Machine Vision (OPC 40100-1) in the gateway's OPC UA server: one VisionSystemType per station.

Built from the official NodeSet (lineguard.contracts.machine_vision.NODESET), so a generic client finds
the standard type, browse names and methods. What lineguard puts in the standard's open places is in
lineguard.contracts.machine_vision. A job (StartSingleJob, or each part of StartContinuous) is a trigger
through the same handshake as the simple profile's Trigger: the callback the endpoint was given.
Every result the station's handshake delivers, whichever profile triggered it, is a ResultReady event
here. The state machines are machine_vision_states.py; this module writes them into the address space.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import Node, Server, ua
from asyncua.common.instantiate_util import instantiate
from asyncua.server.event_generator import EventGenerator

from lineguard.contracts import machine_vision as mv
from lineguard.contracts import new_inspection_id, verdict_name
from lineguard.contracts.opcua import RESULT_VERDICTS, join_reasons
from lineguard.contracts.registers import MAX_LOT_CHARS, MAX_PART_ID_CHARS, check_text
from lineguard.opcua_nodesets import is_decoded_as, load_machine_vision_types
from lineguard.reasons import NOT_INSPECTED_REASONS
from lineguard.services.gateway.endpoint import SelfTestRunner, TriggerHandler, TriggerRefused
from lineguard.services.gateway.handshake import Result
from lineguard.services.gateway.protocols.machine_vision_states import InvalidState, VisionStates
from lineguard.services.gateway.recipes import Recipe, RecipeBook, UnknownRecipe
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Verdict

log = structlog.get_logger("lineguard.gateway")

RESULTS_SHOWN = 10  # slots in ResultManagement/Results, made at start: the last results, each over the oldest
RESULTS_KEPT = 1024  # results GetResultById finds (at 10 parts/s, the last 100 s)
GET_RESULT_WAIT_S = 60.0  # the longest GetResultById waits for a result in flight, whatever its Timeout
_JOBS_KEPT = 4096  # jobs in flight remembered for their result's MeasId / PartId (each trigger gets one result)
_SEQUENCES = 0x8000_0000  # job sequences run through [JOB_SEQUENCE_BASE, 2^32)
_PASS = RESULT_VERDICTS["PASS"]
_ERROR = RESULT_VERDICTS["ERROR"]


def _nid(identifier: int | str, namespace: int) -> ua.NodeId:
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]  # asyncua annotates the wire types


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)  # type: ignore[arg-type]


def _type(name: str) -> Any:
    """A NodeSet structure class (made by asyncua from the NodeSet's definitions, at load time)."""
    return getattr(ua, name)


class BadCall(Exception):
    """A method call refused with `code`; the message is logged."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ResultSlot:
    """One ResultType variable in ResultManagement/Results: made at start, overwritten by every RESULTS_SHOWN-th
    result."""

    variable: Node
    children: tuple[tuple[ua.NodeId, str, ua.VariantType], ...]  # each component: its node, ResultDataType field, type


@dataclass(frozen=True)
class Job:
    """What the PLC said of a job, for its result."""

    job_id: str
    meas_id: str
    part_id: str
    product_id: str
    external_recipe: Recipe | None  # as the PLC named it in the start method; None: it named none
    simulated: bool = False  # a self-test job: its results are the golden parts', IsSimulated (docs/drift.md)


def _id_of(args: Sequence[ua.Variant], i: int, type_name: str, arg: str) -> str:
    """The Id of a NodeSet id structure argument (MeasIdDataType, RecipeIdExternalDataType, ...); "" when null."""
    value = args[i].Value
    if value is None:
        return ""
    if not is_decoded_as(value, type_name):
        raise BadCall(ua.StatusCodes.BadInvalidArgument, f"{arg} must be a {type_name}, got {value!r}")
    return str(value.Id or "")


def _text(text: str, limit: int, arg: str, *, ascii_only: bool = True) -> str:
    """An id the PLC gave, as the record keeps it: at most `limit` characters (printable ASCII where `ascii_only`),
    else refused."""
    try:
        return check_text(text, limit, arg, ascii_only=ascii_only)
    except ValueError as exc:
        code = ua.StatusCodes.BadOutOfRange if len(text) > limit else ua.StatusCodes.BadInvalidArgument
        raise BadCall(code, str(exc)) from None


def _int32(args: Sequence[ua.Variant], i: int, arg: str) -> int:
    value = args[i].Value
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise BadCall(ua.StatusCodes.BadInvalidArgument, f"{arg} must be an Int32, got {value!r}")
    return value


def _count(args: Sequence[ua.Variant], method: str, least: int, most: int) -> None:
    if len(args) < least:
        raise BadCall(ua.StatusCodes.BadArgumentsMissing, f"{method} takes {least} arguments, got {len(args)}")
    if len(args) > most:
        raise BadCall(ua.StatusCodes.BadTooManyArguments, f"{method} takes {most} arguments, got {len(args)}")


def _error_ok() -> ua.Variant:
    return ua.Variant(0, ua.VariantType.Int32)


def _ext(value: Any) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.ExtensionObject)


def _recipe_internal(recipe: Recipe) -> Any:
    return _type("RecipeIdInternalDataType")(Id=recipe.id, Version=recipe.version)


def _recipe_external(recipe: Recipe) -> Any:
    return _type("RecipeIdExternalDataType")(Id=recipe.id, Version=recipe.version)


def _now(value: ua.Variant) -> ua.DataValue:
    now = datetime.now(UTC)
    return ua.DataValue(value, SourceTimestamp=now, ServerTimestamp=now)  # type: ignore[arg-type]  # a datetime


def _utc(unix_ns: int) -> datetime:
    return datetime.fromtimestamp(unix_ns / 1e9, tz=UTC)


class VisionSystem:
    """One station's VisionSystemType instance: its state machines, jobs, results and recipes."""

    def __init__(self, space: MachineVisionSpace, station: str, node: Node):
        self.space = space
        self.server = space.server
        self.station = station
        self.node = node
        self.states = VisionStates()
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # by inspection id, until its result
        self._results: OrderedDict[str, Any] = OrderedDict()  # ResultDataType by result id
        self._result_arrived: dict[str, asyncio.Event] = {}  # GetResultById waiting for a result in flight
        self._slots: list[ResultSlot] = []
        self._shown = 0  # results written into the slots: the next goes into slot _shown % RESULTS_SHOWN
        self._result_handles: dict[int, str] = {}
        self._recipe_handles: set[int] = set()
        self._handles = itertools.count(1)
        self._sequences = itertools.count()
        self._prepared: Recipe | None = None  # None: UnprepareRecipe left the automatic mode in Initialized
        self._continuous: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # the event objects are shared between emits
        self._events: dict[int, EventGenerator] = {}
        self._down: str | None = None  # why a service the station needs is down (set_error): in Error while set
        self._warning: str | None = None  # what the drift watch alerts of (set_warning): a condition while set
        self._vars: dict[str, Node] = {}
        self._selftest_jobs: set[asyncio.Task[None]] = set()  # self-test jobs running (a reference keeps each)
        self._simulation = False  # SimulationMode: a job is the self-test, its results IsSimulated

    # --- building ---------------------------------------------------------------------------------------------

    async def build(self) -> None:
        mv_idx = self.space.mv_idx
        sm = await self.node.get_child(f"{mv_idx}:{mv.STATE_MACHINE}")
        auto = await sm.get_child(f"{mv_idx}:{mv.AUTOMATIC_MODE}")
        for key, machine in (("main", sm), ("auto", auto)):
            current = await machine.get_child("0:CurrentState")
            self._vars[key] = current
            self._vars[f"{key}_id"] = await current.get_child("0:Id")
        self._vars["system_state"] = await self.node.get_child(f"{mv_idx}:{mv.SYSTEM_STATE}")
        results = await self.node.get_child([f"{mv_idx}:{mv.RESULT_MANAGEMENT}", f"{mv_idx}:{mv.RESULTS_FOLDER}"])
        self._vars["results"] = results
        self._slots = [await self._result_slot(results, k) for k in range(RESULTS_SHOWN)]
        for type_id in (
            mv.JOB_STARTED_EVENT_TYPE,
            mv.ACQUISITION_DONE_EVENT_TYPE,
            mv.READY_EVENT_TYPE,
            mv.RESULT_READY_EVENT_TYPE,
            mv.ERROR_EVENT_TYPE,
            mv.ERROR_RESOLVED_EVENT_TYPE,
        ):
            self._events[type_id] = await self.server.get_event_generator(_nid(type_id, mv_idx), self.node.nodeid)
        for type_id in (mv.RECIPE_PREPARED_EVENT_TYPE, mv.VISION_WARNING_CONDITION_TYPE):
            self._events[type_id] = await self.server.get_event_generator(_nid(type_id, mv_idx), self.node.nodeid)
        handlers: dict[tuple[str, ...], Callable[[Sequence[ua.Variant]], Awaitable[list[ua.Variant]]]] = {
            (mv.STATE_MACHINE, mv.AUTOMATIC_MODE, "StartSingleJob"): self._start_single_job,
            (mv.STATE_MACHINE, mv.AUTOMATIC_MODE, "StartContinuous"): self._start_continuous,
            (mv.STATE_MACHINE, mv.AUTOMATIC_MODE, "Stop"): self._stop_method("Stop"),
            (mv.STATE_MACHINE, mv.AUTOMATIC_MODE, "Abort"): self._stop_method("Abort"),
            (mv.STATE_MACHINE, mv.AUTOMATIC_MODE, "SimulationMode"): self._simulation_mode,
            (mv.STATE_MACHINE, "Halt"): self._halt,
            (mv.STATE_MACHINE, "Reset"): self._reset,
            (mv.STATE_MACHINE, "SelectModeAutomatic"): self._select_mode_automatic,
            (mv.RECIPE_MANAGEMENT, "GetRecipeListFiltered"): self._get_recipe_list_filtered,
            (mv.RECIPE_MANAGEMENT, "PrepareRecipe"): self._prepare_recipe,
            (mv.RECIPE_MANAGEMENT, "UnprepareRecipe"): self._unprepare_recipe,
            (mv.RECIPE_MANAGEMENT, "ReleaseRecipeHandle"): self._release_recipe_handle,
            (mv.RESULT_MANAGEMENT, "GetResultById"): self._get_result_by_id,
            (mv.RESULT_MANAGEMENT, "ReleaseResultHandle"): self._release_result_handle,
        }
        linked = set()
        for path, handler in handlers.items():
            method = await self.node.get_child([f"{mv_idx}:{name}" for name in path])
            self.server.link_method(method, self._callback(path[-1], handler))
            linked.add(method.nodeid)
        # Every other method of the standard (configuration and recipe transfer, products, ...): a clear refusal.
        for method in await self._methods(self.node):
            if method.nodeid not in linked:
                name = (await method.read_browse_name()).Name
                self.server.link_method(method, self._unsupported(name))
        self._prepared = self.space.recipes.prepared(self.station)
        self.states.operate(recipe_prepared=True)
        await self._show_states()

    async def _result_slot(self, folder: Node, k: int) -> ResultSlot:
        """Slot k of the Results folder, with no result yet: its value and components Bad_WaitingForInitialData."""
        name, lg_idx = f"Result{k}", self.space.lg_idx
        variable, *_ = await instantiate(
            folder,
            self.server.get_node(_nid(mv.RESULT_TYPE, self.space.mv_idx)),
            nodeid=_nid(f"{folder.nodeid.Identifier!s}/{name}", lg_idx),
            bname=ua.QualifiedName(name, lg_idx),
            dname=ua.LocalizedText(name),
        )
        children = []
        for child in await variable.get_children():
            field = (await child.read_browse_name()).Name
            children.append((child.nodeid, field, await child.read_data_type_as_variant_type()))
        empty = ua.DataValue(StatusCode=_status(ua.StatusCodes.BadWaitingForInitialData))
        for node_id in (*(c[0] for c in children), variable.nodeid):
            await self.server.write_attribute_value(node_id, empty)
        return ResultSlot(variable, tuple(children))

    async def _methods(self, node: Node) -> list[Node]:
        found: list[Node] = []
        for child in await node.get_children():
            node_class = await child.read_node_class()
            if node_class == ua.NodeClass.Method:
                found.append(child)
            elif node_class == ua.NodeClass.Object:
                found.extend(await self._methods(child))
        return found

    def _callback(
        self, method: str, handler: Callable[[Sequence[ua.Variant]], Awaitable[list[ua.Variant]]]
    ) -> Callable[..., Awaitable[Any]]:
        async def call(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
            try:
                return await handler(args)
            except BadCall as exc:
                log.warning(f"{method} refused", station=self.station, reason=str(exc))
                return _status(exc.code)
            except InvalidState as exc:
                log.warning(f"{method} refused", station=self.station, reason=str(exc))
                return _status(ua.StatusCodes.BadInvalidState)
            except UnknownRecipe as exc:
                log.warning(f"{method} refused", station=self.station, reason=str(exc))
                return _status(ua.StatusCodes.BadNotFound)
            except TriggerRefused as exc:
                log.error(f"{method} refused", station=self.station, reason=str(exc))
                return _status(ua.StatusCodes.BadResourceUnavailable)
            except Exception:
                log.exception(f"{method} failed", station=self.station)
                return _status(ua.StatusCodes.BadInternalError)

        return call

    def _unsupported(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def call(parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
            log.warning(f"{method} refused: not supported by lineguard", station=self.station)
            return _status(ua.StatusCodes.BadNotSupported)

        return call

    # --- state ------------------------------------------------------------------------------------------------

    async def _show_states(self) -> None:
        """CurrentState and its Id of both machines, and SystemState, from self.states."""
        mv_idx = self.space.mv_idx
        for key, state in (("main", self.states.main), ("auto", self.states.auto)):
            if state is None:  # a sub-machine whose parent state is not active (OPC 10000-16)
                for name in (key, f"{key}_id"):
                    await self._write(name, ua.DataValue(StatusCode=_status(ua.StatusCodes.BadStateNotActive)))
                continue
            await self._write(key, _now(ua.Variant(ua.LocalizedText(state), ua.VariantType.LocalizedText)))
            state_id = ua.Variant(_nid(mv.STATE_NODE_IDS[state], mv_idx), ua.VariantType.NodeId)
            await self._write(f"{key}_id", _now(state_id))
        semi = self.states.system_state
        value = _type("SystemStateDescriptionDataType")(
            State=_type("SystemStateDataType")(mv.SEMI_E10[semi]),
            StateDescription=f"{self.states.main}" + (f"/{self.states.auto}" if self.states.auto else ""),
        )
        await self._write("system_state", _now(_ext(value)))

    async def _write(self, name: str, value: ua.DataValue) -> None:
        await self.server.write_attribute_value(self._vars[name].nodeid, value)

    async def set_error(self, reason: str | None) -> None:
        """An ErrorEventType and Error while a service the station needs is down; an ErrorResolvedEventType and
        Operational again when it beats (the gateway's own Reset). A Halt by the PLC, before the outage or during it,
        stays Halted throughout and after: only the PLC's Reset ends it (refused while the services are down)."""
        was_down, self._down = self._down is not None, reason
        if reason is not None and not was_down:
            await self._end_continuous()
            if self.states.fail():
                await self._show_states()
            await self._emit(mv.ERROR_EVENT_TYPE, {}, reason)
        elif reason is None and was_down:
            if self.states.recover(recipe_prepared=self._prepared is not None):
                await self._show_states()
            await self._emit(mv.ERROR_RESOLVED_EVENT_TYPE, {}, "the station's services beat again")

    async def set_warning(self, reason: str | None) -> None:
        """The drift watch's alert as a VisionWarningConditionType condition (OPC 40100-1 11.4.5): an event with
        Retain true when it is raised or its text changes (ConditionRefresh hands it to a client that subscribes
        later), then one with Retain false when it is over. The state machines do not change: a warning, the station
        serves on (BlockReaction and StopReaction false). Deviations (docs/opcua.md): the condition is reported by
        its events only, no condition node in the address space, and it asks no acknowledgement (AckedState true;
        it ends when the drift watch is OK again, not when acknowledged)."""
        if reason == self._warning:
            return
        raised, self._warning = reason is not None, reason
        text = reason or "drift warning over"
        fields: dict[str, tuple[Any, ua.VariantType]] = {
            "NodeId": (
                _nid(f"MachineVision/{self.station}/{mv.WARNING_CONDITION}", self.space.lg_idx),
                ua.VariantType.NodeId,
            ),
            "ConditionName": (mv.WARNING_CONDITION, ua.VariantType.String),
            "ConditionClassId": (_nid(ua.ObjectIds.ProcessConditionClassType, 0), ua.VariantType.NodeId),
            "ConditionClassName": (ua.LocalizedText("Process"), ua.VariantType.LocalizedText),
            "Retain": (raised, ua.VariantType.Boolean),
            "EnabledState": (ua.LocalizedText("Enabled"), ua.VariantType.LocalizedText),
            "EnabledState/Id": (True, ua.VariantType.Boolean),
            "AckedState": (ua.LocalizedText("Acknowledged"), ua.VariantType.LocalizedText),
            "AckedState/Id": (True, ua.VariantType.Boolean),
            "Quality": (_status(ua.StatusCodes.Good), ua.VariantType.StatusCode),
            "Severity": (mv.WARNING_SEVERITY, ua.VariantType.UInt16),
            "LastSeverity": (mv.WARNING_SEVERITY, ua.VariantType.UInt16),
            "BlockReaction": (False, ua.VariantType.Boolean),
            "StopReaction": (False, ua.VariantType.Boolean),
            "ErrorCode": (mv.WARNING_ERROR_CODE, ua.VariantType.UInt64),
            "ErrorString": (text, ua.VariantType.String),
        }
        await self._emit(mv.VISION_WARNING_CONDITION_TYPE, fields, text)
        log.info("40100 drift warning " + ("raised" if raised else "over"), station=self.station, reason=reason)

    async def set_busy(self, busy: bool) -> None:
        before = self.states.system_state
        self.states.busy = busy
        if self.states.system_state != before:
            await self._show_states()

    async def _emit(self, type_id: int, fields: dict[str, tuple[Any, ua.VariantType]], message: str) -> None:
        async with self._lock:
            generator = self._events[type_id]
            event = generator.event
            for name, (value, vtype) in fields.items():
                setattr(event, name, value)
                event.data_types[name] = vtype  # the NodeSet's properties have no value to infer the type from
            await generator.trigger(message=message)

    def _job_id_fields(self, job_id: str) -> dict[str, tuple[Any, ua.VariantType]]:
        return {"JobId": (_type("JobIdDataType")(Id=job_id), ua.VariantType.ExtensionObject)}

    # --- jobs -------------------------------------------------------------------------------------------------

    def _job_args(self, args: Sequence[ua.Variant], method: str) -> tuple[str, str, str, Recipe | None]:
        """MeasId, PartId, RecipeId, ProductId[, Parameters] -> meas id, part id, product id, the recipe named.

        The MeasId is the parts' production lot (docs/opcua.md: the measurement operation the client names, echoed
        in every result): printable ASCII the record can hold, as the part id."""
        _count(args, method, 4, 5)  # Parameters may be left out: lineguard's recipes take none
        meas_id = _text(_id_of(args, 0, "MeasIdDataType", "MeasId"), MAX_LOT_CHARS, "MeasId (the lot)")
        part_id = _text(_id_of(args, 1, "PartIdDataType", "PartId"), MAX_PART_ID_CHARS, "PartId", ascii_only=False)
        recipe_id = _id_of(args, 2, "RecipeIdExternalDataType", "RecipeId")
        product_id = _id_of(args, 3, "ProductIdDataType", "ProductId")
        if len(args) == 5 and args[4].Value not in (None, []):
            raise BadCall(ua.StatusCodes.BadInvalidArgument, f"Parameters must be empty, got {args[4].Value!r}")
        named: Recipe | None = None
        for given in (recipe_id, product_id):  # every recipe is also the product of the same id
            if given:
                named = self.space.recipes.find(given)
                if self._prepared is None or named.id != self._prepared.id:
                    prepared = self._prepared.id if self._prepared else "none"
                    raise InvalidState(f"recipe {given!r} is not prepared (prepared: {prepared}); call PrepareRecipe")
        return meas_id, part_id, product_id, named if recipe_id else None

    def _next_sequence(self) -> int:
        return mv.JOB_SEQUENCE_BASE + next(self._sequences) % _SEQUENCES

    async def _trigger(self, part_id: str, lot: str) -> str:
        """One part through the handshake; the inspection id it returns is the result's ResultId."""
        return await self.space.on_trigger(self.station, self._next_sequence(), part_id, lot=lot)

    def _remember(self, inspection_id: str, job: Job) -> None:
        self._jobs[inspection_id] = job
        while len(self._jobs) > _JOBS_KEPT:
            self._jobs.popitem(last=False)

    async def _start_single_job(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        meas_id, part_id, product_id, recipe = self._job_args(args, "StartSingleJob")
        if self._simulation:
            return await self._start_selftest_job(Job(new_inspection_id(), meas_id, part_id, product_id, recipe, True))
        self.states.start_single()
        await self._show_states()
        try:
            # The job id is the inspection id, which only the handshake makes: JobStarted follows the trigger.
            inspection_id = await self._trigger(part_id, meas_id)
            self._remember(inspection_id, Job(inspection_id, meas_id, part_id, product_id, recipe))
            await self._emit(mv.JOB_STARTED_EVENT_TYPE, self._job_id_fields(inspection_id), f"job {inspection_id}")
        finally:
            self.states.job_taken()
            await self._show_states()
        await self._emit(mv.READY_EVENT_TYPE, self._job_id_fields(inspection_id), f"ready after job {inspection_id}")
        log.info("40100 job started", station=self.station, job_id=inspection_id, meas_id=meas_id, part_id=part_id)
        return [_ext(_type("JobIdDataType")(Id=inspection_id)), _error_ok()]

    async def _simulation_mode(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        """SimulationMode(Activate, Cause, CauseDescription) (OPC 40100-1 8.3.7.5): while active, a StartSingleJob
        judges the station's stored golden parts instead of the camera's (the self-test) and its results carry
        IsSimulated true; production jobs wait until it is deactivated. Not while a job executes."""
        _count(args, "SimulationMode", 3, 3)
        activate = args[0].Value
        if not isinstance(activate, bool):
            raise BadCall(ua.StatusCodes.BadInvalidArgument, f"Activate must be a Boolean, got {activate!r}")
        cause = self._cause(args[1:], "SimulationMode")
        if activate and (self.space.selftests is None or self.station not in self.space.selftest_stations):
            raise BadCall(ua.StatusCodes.BadNotSupported, f"station {self.station} has no golden-part self-test")
        if self.states.auto in (mv.SINGLE_EXECUTION, mv.CONTINUOUS_EXECUTION):
            raise InvalidState(f"SimulationMode is not allowed in {self.states.auto}")
        self._simulation = activate
        log.info("40100 SimulationMode " + ("on" if activate else "off"), station=self.station, cause=cause)
        return [_error_ok()]

    async def _start_selftest_job(self, job: Job) -> list[ua.Variant]:
        """A job in SimulationMode: the station's golden-part self-test through the live path (selftest.py). Started
        and ended as a single job; when it is judged, one ResultReady per golden part, IsSimulated true, JobId this
        job's (never a production result: the results service writes no record of a simulated part)."""
        run = self.space.selftests
        if run is None:  # SimulationMode is refused then: not reached
            raise BadCall(ua.StatusCodes.BadNotSupported, f"station {self.station} has no golden-part self-test")
        self.states.start_single()
        await self._show_states()
        try:
            await self._emit(mv.JOB_STARTED_EVENT_TYPE, self._job_id_fields(job.job_id), f"self-test job {job.job_id}")
        finally:
            self.states.job_taken()
            await self._show_states()
        await self._emit(mv.READY_EVENT_TYPE, self._job_id_fields(job.job_id), f"ready after job {job.job_id}")
        task = asyncio.create_task(self._run_selftest(run, job))
        self._selftest_jobs.add(task)
        task.add_done_callback(self._selftest_jobs.discard)
        log.info("40100 self-test job started", station=self.station, job_id=job.job_id, meas_id=job.meas_id)
        return [_ext(_type("JobIdDataType")(Id=job.job_id)), _error_ok()]

    async def _run_selftest(self, run: SelfTestRunner, job: Job) -> None:
        try:
            report = await run(self.station, job.job_id)
        except Exception:
            log.exception("40100 self-test job not run", station=self.station, job_id=job.job_id)
            return
        recipe_id = self._prepared.id if self._prepared else ""
        for case in report.cases:
            part = Part(
                inspection_id=case.inspection_id or new_inspection_id(),
                line=report.part.line,
                station=self.station,
                recipe_id=recipe_id,
                triggered_unix_ns=report.started_unix_ns,
                simulated=True,
                golden_case=case.name,
            )
            judged = case.verdict != Verdict.VERDICT_UNSPECIFIED
            # No verdict in time: FAIL / TIMEOUT, as a production part would get (fail safe).
            result = Result(
                part=part,
                verdict=case.verdict if judged else Verdict.VERDICT_FAIL,
                reasons=tuple(case.reason_codes) if judged else ("TIMEOUT",),
                gateway_timeout=not judged,
                closed_unix_ns=report.finished_unix_ns,
            )
            self._remember(part.inspection_id, job)
            await self.deliver(result)

    async def acquisition_done(self, inspection_id: str) -> None:
        """AcquisitionDoneEventType: the part's image is taken (the PLC may move it on); JobId as its result's."""
        job = self._jobs.get(inspection_id)
        job_id = job.job_id if job else inspection_id
        await self._emit(mv.ACQUISITION_DONE_EVENT_TYPE, self._job_id_fields(job_id), f"image of {inspection_id} taken")

    async def _start_continuous(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        meas_id, part_id, product_id, recipe = self._job_args(args, "StartContinuous")
        if self._simulation:
            raise BadCall(ua.StatusCodes.BadNotSupported, "in SimulationMode a job is the self-test: StartSingleJob")
        self.states.start_continuous()
        job = Job(new_inspection_id(), meas_id, part_id, product_id, recipe)
        self._continuous = asyncio.create_task(self._run_continuous(job))
        await self._show_states()
        await self._emit(mv.JOB_STARTED_EVENT_TYPE, self._job_id_fields(job.job_id), f"continuous job {job.job_id}")
        log.info("40100 continuous job started", station=self.station, job_id=job.job_id, period_s=self._period_s)
        return [_ext(_type("JobIdDataType")(Id=job.job_id)), _error_ok()]

    @property
    def _period_s(self) -> float:
        return self.space.continuous_period_s[self.station]

    async def _run_continuous(self, job: Job) -> None:
        """Trigger a part every period until Stop / Abort / Halt; a refused trigger is logged and the next tried."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        # Also ended by _end_continuous letting go of this task, not by its cancel alone: a cancel can be swallowed
        # by Python 3.11's asyncio.wait_for (under the bus publish) when it lands as the reply completes.
        while asyncio.current_task() is self._continuous:
            try:
                self._remember(await self._trigger(job.part_id, job.meas_id), job)
            except TriggerRefused as exc:
                log.error("continuous job: trigger refused", station=self.station, job_id=job.job_id, reason=str(exc))
            next_at += self._period_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _end_continuous(self) -> None:
        task, self._continuous = self._continuous, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _stop_method(self, method: str) -> Callable[[Sequence[ua.Variant]], Awaitable[list[ua.Variant]]]:
        async def stop(args: Sequence[ua.Variant]) -> list[ua.Variant]:
            cause = self._cause(args, method)
            self.states.stop(method)
            job_id = next(reversed(self._jobs), "")
            await self._end_continuous()
            await self._show_states()
            await self._emit(mv.READY_EVENT_TYPE, self._job_id_fields(job_id), f"{method}: {cause}")
            log.info(f"40100 {method}", station=self.station, cause=cause)
            return [_error_ok()]

        return stop

    def _cause(self, args: Sequence[ua.Variant], method: str) -> str:
        """Cause (Int32), CauseDescription (String) -> a text for the log."""
        _count(args, method, 2, 2)
        cause = _int32(args, 0, "Cause")
        text = args[1].Value
        if text is not None and not isinstance(text, str):
            raise BadCall(ua.StatusCodes.BadInvalidArgument, f"CauseDescription must be a String, got {text!r}")
        return f"{cause} {text or ''}".strip()

    async def _halt(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        cause = self._cause(args, "Halt")
        self.states.halt()
        await self._end_continuous()
        await self._show_states()
        log.warning("40100 Halt: StartSingleJob refused until Reset", station=self.station, cause=cause)
        return [_error_ok()]

    async def _reset(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        cause = self._cause(args, "Reset")
        if self._down is not None:
            raise InvalidState(f"Reset is not allowed while the station's services are down ({self._down})")
        self.states.reset()
        await self._show_states()
        self.states.operate(recipe_prepared=self._prepared is not None)
        await self._show_states()
        log.info("40100 Reset", station=self.station, cause=cause)
        return [_error_ok()]

    async def _select_mode_automatic(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        _count(args, "SelectModeAutomatic", 0, 0)
        self.states.operate(recipe_prepared=self._prepared is not None)
        await self._show_states()
        return [_error_ok()]

    # --- recipes ----------------------------------------------------------------------------------------------

    def _recipe_args(self, args: Sequence[ua.Variant], method: str) -> Recipe:
        """ExternalId, InternalIdIn: either names the recipe (both: the same one)."""
        _count(args, method, 2, 2)
        external = _id_of(args, 0, "RecipeIdExternalDataType", "ExternalId")
        internal = _id_of(args, 1, "RecipeIdInternalDataType", "InternalIdIn")
        if external and internal and external != internal:
            raise BadCall(
                ua.StatusCodes.BadInvalidArgument,
                f"ExternalId {external!r} and InternalIdIn {internal!r} name different recipes",
            )
        if not (external or internal):
            raise BadCall(ua.StatusCodes.BadInvalidArgument, "give the recipe's id in ExternalId or InternalIdIn")
        return self.space.recipes.find(external or internal)

    async def _prepare_recipe(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        recipe = self._recipe_args(args, "PrepareRecipe")
        self.states.prepare()
        # The handshake stamps it on the parts triggered from now on: a change between parts, never in one.
        self._prepared = self.space.recipes.prepare(self.station, recipe.id)
        await self._show_states()
        await self._emit(
            mv.RECIPE_PREPARED_EVENT_TYPE,
            {
                "ExternalId": (_recipe_external(recipe), ua.VariantType.ExtensionObject),
                "InternalId": (_recipe_internal(recipe), ua.VariantType.ExtensionObject),
            },
            f"recipe {recipe.id} prepared",
        )
        return [_ext(_recipe_internal(recipe)), ua.Variant(True, ua.VariantType.Boolean), _error_ok()]

    async def _unprepare_recipe(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        recipe = self._recipe_args(args, "UnprepareRecipe")
        if self._prepared is None or recipe.id != self._prepared.id:
            raise InvalidState(f"recipe {recipe.id!r} is not prepared")
        self.states.unprepare()
        self._prepared = None
        await self._show_states()
        log.info("40100 recipe unprepared: StartSingleJob refused until PrepareRecipe", station=self.station)
        return [_ext(_recipe_internal(recipe)), _error_ok()]

    async def _get_recipe_list_filtered(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        _count(args, "GetRecipeListFiltered", 6, 6)
        external = _id_of(args, 0, "RecipeIdExternalDataType", "ExternalId")
        product = _id_of(args, 1, "ProductIdDataType", "ProductId")
        is_prepared = args[2].Value
        tri_state = _type("TriStateBooleanDataType")
        if is_prepared is not None and (isinstance(is_prepared, bool) or is_prepared not in set(tri_state)):
            raise BadCall(ua.StatusCodes.BadInvalidArgument, f"IsPrepared must be a TriStateBoolean, {is_prepared!r}")
        max_results, start = args[3].Value, args[4].Value
        for name, value in (("MaxResults", max_results), ("StartIndex", start)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadCall(ua.StatusCodes.BadInvalidArgument, f"{name} must be a UInt32, got {value!r}")
        _int32(args, 5, "Timeout")
        prepared_id = self._prepared.id if self._prepared else None
        wanted_prepared = None if is_prepared is None else {0: False, 1: True}.get(int(is_prepared))
        recipes = [
            r
            for r in self.space.recipes.recipes.values()
            if (not external or r.id == external)
            and (not product or r.id == product)
            and (wanted_prepared is None or (r.id == prepared_id) == wanted_prepared)
        ]
        page = recipes[start : start + max_results] if max_results else recipes[start:]
        handle = next(self._handles)
        self._recipe_handles.add(handle)
        return [
            ua.Variant(start + len(page) >= len(recipes), ua.VariantType.Boolean),
            ua.Variant(len(page), ua.VariantType.UInt32),
            ua.Variant(handle, ua.VariantType.UInt32),
            ua.Variant([_recipe_internal(r) for r in page], ua.VariantType.ExtensionObject),
            _error_ok(),
        ]

    async def _release_recipe_handle(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        _count(args, "ReleaseRecipeHandle", 1, 1)
        handle = args[0].Value
        # A structure as the handle is unhashable: refused as any unknown handle, not a TypeError (Bad_InternalError).
        if not isinstance(handle, int) or handle not in self._recipe_handles:
            raise BadCall(ua.StatusCodes.BadInvalidArgument, f"no recipe handle {handle!r}")
        self._recipe_handles.discard(handle)
        return [_error_ok()]

    # --- results ----------------------------------------------------------------------------------------------

    def _result_data(self, result: Result) -> Any:
        job = self._jobs.pop(result.inspection_id, None)
        part = result.part
        # The version the part was triggered with (another may have been activated since).
        recipe = Recipe(part.recipe_id, part.recipe_version, 0) if part.recipe_version else None
        recipe = recipe or self.space.recipes.recipes.get(part.recipe_id) or Recipe(part.recipe_id, "", 0)
        # Failed: not inspected (lineguard.reasons), whichever service timed out or refused; a judged FAIL is Completed.
        failed = (
            result.gateway_timeout or result.verdict == _ERROR or not NOT_INSPECTED_REASONS.isdisjoint(result.reasons)
        )
        simulated = bool(job and job.simulated)
        content = [
            ua.Variant(int(result.verdict), ua.VariantType.Int32),
            ua.Variant(verdict_name(result.verdict), ua.VariantType.String),
            ua.Variant(join_reasons(result.reasons), ua.VariantType.String),
        ]
        started, ended = _utc(part.triggered_unix_ns), _utc(result.closed_unix_ns)
        return _type("ResultDataType")(
            ResultId=_type("ResultIdDataType")(Id=result.inspection_id),
            HasTransferableDataOnFile=False,
            IsPartial=False,
            IsSimulated=simulated,
            ResultState=mv.RESULT_STATE_FAILED if failed else mv.RESULT_STATE_COMPLETED,
            MeasId=_type("MeasIdDataType")(Id=job.meas_id if job else ""),
            PartId=_type("PartIdDataType")(Id=job.part_id if job else ""),
            ExternalRecipeId=_recipe_external(job.external_recipe) if job and job.external_recipe else None,
            InternalRecipeId=_recipe_internal(recipe),
            ProductId=_type("ProductIdDataType")(Id=job.product_id if job else ""),
            InternalConfigurationId=_type("ConfigurationIdDataType")(Id="", Version=""),
            JobId=_type("JobIdDataType")(Id=job.job_id if job else result.inspection_id),
            CreationTime=ended,
            ProcessingTimes=_type("ProcessingTimesDataType")(
                StartTime=started,
                EndTime=ended,
                ProcessingDuration=max(0.0, (result.closed_unix_ns - part.triggered_unix_ns) / 1e6),
            ),
            ResultContent=content,
        )

    async def deliver(self, result: Result) -> None:
        """The ResultReady event first (what the PLC waits for), then the result where it can be read again."""
        data = self._result_data(result)
        fields: dict[str, tuple[Any, ua.VariantType]] = {
            name: (getattr(data, name), ua.VariantType.ExtensionObject)
            for name in ("ResultId", "MeasId", "PartId", "InternalRecipeId", "ProductId", "JobId", "ProcessingTimes")
        }
        fields["ExternalRecipeId"] = (data.ExternalRecipeId, ua.VariantType.ExtensionObject)
        fields["InternalConfigurationId"] = (data.InternalConfigurationId, ua.VariantType.ExtensionObject)
        fields["IsPartial"] = (False, ua.VariantType.Boolean)
        fields["IsSimulated"] = (data.IsSimulated, ua.VariantType.Boolean)
        fields["ResultState"] = (data.ResultState, ua.VariantType.Int32)
        fields["CreationTime"] = (data.CreationTime, ua.VariantType.DateTime)
        fields["ResultContent"] = (data.ResultContent, ua.VariantType.Variant)
        async with self._lock:
            generator = self._events[mv.RESULT_READY_EVENT_TYPE]
            event = generator.event
            for name, (value, vtype) in fields.items():
                setattr(event, name, value)
                event.data_types[name] = vtype
            event.Severity = 100 if result.verdict == _PASS else 500
            await generator.trigger(
                time_attr=data.CreationTime,
                message=f"{self.station} {result.inspection_id}: {verdict_name(result.verdict)}",
            )
        self._keep(result.inspection_id, data)
        await self._show_result(data)

    def _keep(self, result_id: str, data: Any) -> None:
        self._results[result_id] = data
        while len(self._results) > RESULTS_KEPT:
            self._results.popitem(last=False)
        arrived = self._result_arrived.pop(result_id, None)
        if arrived is not None:
            arrived.set()

    async def _show_result(self, data: Any) -> None:
        """The result into the next slot of ResultManagement/Results, over the oldest: one Write, no node made or
        deleted (asyncua's delete_nodes walks the whole address space, ~0.3 s, on the gateway's event loop)."""
        slot = self._slots[self._shown % len(self._slots)]
        self._shown += 1
        params = ua.WriteParameters()
        when = data.CreationTime
        # The slot's children first and its value last, so a client watching the value reads a whole result.
        for node_id, name, vtype in (*slot.children, (slot.variable.nodeid, "", ua.VariantType.ExtensionObject)):
            write = ua.WriteValue()
            write.NodeId = node_id
            write.AttributeId = ua.AttributeIds.Value
            value = getattr(data, name) if name else data
            write.Value = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=when, ServerTimestamp=when)
            params.NodesToWrite.append(write)
        statuses = await slot.variable.write_params(params)
        written = zip(params.NodesToWrite, statuses, strict=True)
        refused = [f"{w.NodeId.Identifier}: {status.name}" for w, status in written if not status.is_good()]
        if refused:  # the ResultReady event went out and GetResultById has it: only this view is wrong
            log.error("40100 result slot not written", station=self.station, refused=refused)

    async def _get_result_by_id(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        _count(args, "GetResultById", 2, 2)
        result_id = _id_of(args, 0, "ResultIdDataType", "ResultId")
        timeout_ms = _int32(args, 1, "Timeout")
        if result_id not in self._results and result_id in self._jobs and timeout_ms != 0:
            # In flight: wait for it (Timeout < 0: as long as the gateway waits for anything).
            wait_s = GET_RESULT_WAIT_S if timeout_ms < 0 else min(timeout_ms / 1000, GET_RESULT_WAIT_S)
            arrived = self._result_arrived.setdefault(result_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), timeout=wait_s)
        data = self._results.get(result_id)
        if data is None:
            state = "still in flight" if result_id in self._jobs else "unknown or too old"
            raise BadCall(ua.StatusCodes.BadNotFound, f"no result {result_id!r} ({state})")
        handle = next(self._handles)
        self._result_handles[handle] = result_id
        return [ua.Variant(handle, ua.VariantType.UInt32), _ext(data), _error_ok()]

    async def _release_result_handle(self, args: Sequence[ua.Variant]) -> list[ua.Variant]:
        _count(args, "ReleaseResultHandle", 1, 1)
        handle = args[0].Value
        if self._result_handles.pop(handle, None) is None:
            raise BadCall(ua.StatusCodes.BadInvalidArgument, f"no result handle {handle!r}")
        return [_error_ok()]

    async def stop(self) -> None:
        await self._end_continuous()
        for task in list(self._selftest_jobs):
            task.cancel()


class MachineVisionSpace:
    """The 40100 part of one OPC UA server: the NodeSet, and a VisionSystem for each station on it."""

    def __init__(
        self,
        server: Server,
        stations: Sequence[str],
        on_trigger: TriggerHandler,
        continuous_period_s: dict[str, float],
    ):
        self.server = server
        self.stations = tuple(stations)
        self.on_trigger = on_trigger
        self.continuous_period_s = continuous_period_s
        self.systems: dict[str, VisionSystem] = {}
        self._recipes: RecipeBook | None = None
        self.selftests: SelfTestRunner | None = None  # given by the gateway (RunsSelfTests) before build
        self.selftest_stations: frozenset[str] = frozenset()
        self.mv_idx = 0
        self.lg_idx = 0

    def use_recipes(self, recipes: RecipeBook) -> None:
        self._recipes = recipes

    def use_selftests(self, run: SelfTestRunner, stations: frozenset[str]) -> None:
        self.selftests, self.selftest_stations = run, stations

    @property
    def recipes(self) -> RecipeBook:
        if self._recipes is None:
            raise RuntimeError("the gateway hands the endpoint its recipe book before start()")
        return self._recipes

    async def build(self, lg_idx: int) -> None:
        """Load the NodeSet, then one VisionSystemType instance per station under Objects, named by the station."""
        self.lg_idx = lg_idx
        # Instantiating ResultType warns of attributes a VariableType does not have, once a result: noise.
        logging.getLogger("asyncua.common.instantiate_util").setLevel(logging.ERROR)
        await self.server.import_xml(str(mv.NODESET))
        self.mv_idx = await self.server.get_namespace_index(mv.NAMESPACE_URI)
        await load_machine_vision_types(self.server, self.mv_idx)  # the NodeSet's structures, to decode arguments
        # ResultType's ResultContent has no DataType in the NodeSet, which the NodeSet schema reads as BaseDataType;
        # asyncua's import leaves NodeId 0 there instead, and then refuses the Variant array a result slot's holds.
        result_type = self.server.get_node(_nid(mv.RESULT_TYPE, self.mv_idx))
        content = await result_type.get_child(f"{self.mv_idx}:ResultContent")
        await self.server.write_attribute_value(
            content.nodeid,
            ua.DataValue(ua.Variant(_nid(ua.ObjectIds.BaseDataType, 0), ua.VariantType.NodeId)),
            ua.AttributeIds.DataType,
        )
        vision_system_type = self.server.get_node(_nid(mv.VISION_SYSTEM_TYPE, self.mv_idx))
        for station in self.stations:
            nodes = await instantiate(
                self.server.nodes.objects,
                vision_system_type,
                nodeid=_nid(f"MachineVision/{station}", lg_idx),
                bname=ua.QualifiedName(station, lg_idx),
                dname=ua.LocalizedText(station),
            )
            system = VisionSystem(self, station, nodes[0])
            await system.build()
            self.systems[station] = system

    async def deliver(self, station: str, result: Result) -> None:
        system = self.systems.get(station)
        if system is not None:
            await system.deliver(result)

    async def captured(self, station: str, inspection_id: str) -> None:
        system = self.systems.get(station)
        if system is not None:
            await system.acquisition_done(inspection_id)

    async def set_busy(self, station: str, busy: bool) -> None:
        system = self.systems.get(station)
        if system is not None:
            await system.set_busy(busy)

    async def set_error(self, station: str, reason: str | None) -> None:
        system = self.systems.get(station)
        if system is not None:
            await system.set_error(reason)

    async def set_warning(self, station: str, reason: str | None) -> None:
        system = self.systems.get(station)
        if system is not None:
            await system.set_warning(reason)

    async def stop(self) -> None:
        for system in self.systems.values():
            await system.stop()
