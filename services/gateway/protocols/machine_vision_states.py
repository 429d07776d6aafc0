"""The two state machines of an OPC 40100 vision system, as plain data: which method may run in which state.

VisionStateMachine (Preoperational, Halted, Error, Operational) and, inside Operational, the
automatic-mode machine (Initialized, Ready, SingleExecution, ContinuousExecution). asyncua's state
machine helper is not used (it has known bugs, and the NodeSet's automatic-mode states live on the type,
not in an instance): machine_vision.py writes CurrentState and its Id from what this module says.

A job stays in SingleExecution only while the gateway takes it (the trigger is put on the bus): OPC 40100-1
8.3.2.2 lets the system return to Ready, and take the next job, before the previous result is ready, which is
how a line pipelines parts."""

from __future__ import annotations

from dataclasses import dataclass

from lineguard.contracts import machine_vision as mv


class InvalidState(Exception):
    """The method is not allowed in the current state (Bad_InvalidState to the caller)."""


_EXECUTING = (mv.SINGLE_EXECUTION, mv.CONTINUOUS_EXECUTION)
_PREPARING = (mv.INITIALIZED, mv.READY)


@dataclass
class VisionStates:
    main: str = mv.PREOPERATIONAL
    auto: str | None = None  # the automatic-mode state; None unless main is Operational
    busy: bool = False  # parts of this station are in flight

    @property
    def system_state(self) -> str:
        """The SEMI E10 state (a key of lineguard.contracts.machine_vision.SEMI_E10)."""
        if self.main == mv.OPERATIONAL:
            return "PRD" if self.busy or self.auto in _EXECUTING else "SBY"
        return {mv.PREOPERATIONAL: "SDT", mv.HALTED: "NST", mv.ERROR: "UDT"}[self.main]

    def _require(self, method: str, main: tuple[str, ...], auto: tuple[str, ...] | None = None) -> None:
        if self.main not in main or (auto is not None and self.auto not in auto):
            where = self.main if self.auto is None else f"{self.main}/{self.auto}"
            allowed = "/".join(main) if auto is None else f"{'/'.join(main)}/{' or '.join(auto)}"
            raise InvalidState(f"{method} is not allowed in {where} (only in {allowed})")

    def operate(self, *, recipe_prepared: bool) -> None:
        """Preoperational -> Operational (automatically, or SelectModeAutomatic): Ready when a recipe is prepared."""
        self._require("SelectModeAutomatic", (mv.PREOPERATIONAL,))
        self.main = mv.OPERATIONAL
        self.auto = mv.READY if recipe_prepared else mv.INITIALIZED

    def start_single(self) -> None:
        self._require("StartSingleJob", (mv.OPERATIONAL,), (mv.READY,))
        self.auto = mv.SINGLE_EXECUTION

    def job_taken(self) -> None:
        """The single job's trigger is on the bus (or was refused): Ready for the next."""
        if self.auto == mv.SINGLE_EXECUTION:
            self.auto = mv.READY

    def start_continuous(self) -> None:
        self._require("StartContinuous", (mv.OPERATIONAL,), (mv.READY,))
        self.auto = mv.CONTINUOUS_EXECUTION

    def stop(self, method: str = "Stop") -> None:
        """Stop or Abort: an execution state -> Ready. Parts in flight still get their results (fail safe)."""
        self._require(method, (mv.OPERATIONAL,), _EXECUTING)
        self.auto = mv.READY

    def prepare(self) -> None:
        self._require("PrepareRecipe", (mv.OPERATIONAL,), _PREPARING)
        self.auto = mv.READY

    def unprepare(self) -> None:
        self._require("UnprepareRecipe", (mv.OPERATIONAL,), _PREPARING)
        self.auto = mv.INITIALIZED

    def halt(self) -> None:
        self._require("Halt", (mv.PREOPERATIONAL, mv.OPERATIONAL, mv.ERROR))
        self.main, self.auto = mv.HALTED, None

    def fail(self) -> bool:
        """-> Error: the gateway found a service the station needs down (health.py). True when the state changed.

        A Halted station stays Halted: OPC 40100-1 has no Halted-to-Error transition, and from Error the services'
        return would make it Operational again, taking jobs without the Reset its Halt asks for."""
        if self.main in (mv.HALTED, mv.ERROR):
            return False
        self.main, self.auto = mv.ERROR, None
        return True

    def recover(self, *, recipe_prepared: bool) -> bool:
        """Error -> Operational once the services beat again: the gateway's own Reset (nothing else to clear). True
        when the state changed; a station the PLC halted stays Halted, for the PLC's own Reset."""
        if self.main != mv.ERROR:
            return False
        self.reset()
        self.operate(recipe_prepared=recipe_prepared)
        return True

    def reset(self) -> None:
        """Halted or Error -> Preoperational; the gateway then goes Operational by itself (it has nothing to set up)."""
        self._require("Reset", (mv.HALTED, mv.ERROR))
        self.main, self.auto = mv.PREOPERATIONAL, None
