"""Golden-part self-tests (docs/drift.md): each configured station judges its stored golden images through the live
path, on a schedule (`selftest.interval_s`) and on command (`lineguard selftest`, lg.selftest_run.<line>.<station>).

A golden part is triggered like any other, flagged `simulated` with the case's name (capture hands over the stored
image instead of the camera's, the results service does not write it), and its decision comes back here instead of
to the PLC's handshake. Each case's verdict is compared with the one the station's config expects; the report goes
on lg.selftest.<line>.<station>, where the results service's drift watch turns a changed outcome into its alert."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.msg import Msg
from prometheus_client import Counter

from lineguard.config import LineConfig, StationSettings
from lineguard.config.drift import SelfTestSettings
from lineguard.contracts import SELFTEST_COMMAND, new_inspection_id, now_ns, verdict_name
from lineguard.services.gateway.endpoint import NoSelfTest
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.drift_pb2 import SelfTestCase, SelfTestReport
from lineguard.v1.trigger_pb2 import Trigger

log = structlog.get_logger("lineguard.gateway.selftest")

SELFTEST_RUNS = Counter(
    "lineguard_selftest_runs_total",
    "Golden-part self-test runs, by outcome (as_expected, changed)",
    ["station", "outcome"],
)
Publish = Callable[[str, Trigger | SelfTestReport], Awaitable[None]]
VERDICTS = {"PASS": Verdict.VERDICT_PASS, "FAIL": Verdict.VERDICT_FAIL, "REWORK": Verdict.VERDICT_REWORK}


def judge_case(name: str, expect: str, reasons: list[str], decision: Decision | None) -> SelfTestCase:
    """One golden part's outcome against its expectation: changed unless the verdict is the expected one and
    includes every expected reason (no decision in time is changed too)."""
    case = SelfTestCase(name=name, expected=VERDICTS[expect])
    if decision is None:
        case.changed = True
        return case
    case.verdict = decision.verdict
    case.reason_codes.extend(decision.reason_codes)
    case.inspection_id = decision.part.inspection_id
    case.changed = decision.verdict != case.expected or not set(reasons) <= set(decision.reason_codes)
    return case


class SelfTests:
    """The stations' self-tests: run them, and take their decisions (Part.simulated) off the gateway's consumer."""

    def __init__(self, config: LineConfig, publish: Publish):
        self.config = config
        self.publish = publish
        self.stations: dict[str, StationSettings] = {s.id: s for s in config.stations if s.selftest is not None}
        self._waiting: dict[str, asyncio.Future[Decision]] = {}  # inspection id -> its decision
        self._running: dict[str, asyncio.Task[SelfTestReport]] = {}

    def on_decision(self, decision: Decision) -> None:
        waiting = self._waiting.get(decision.part.inspection_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(decision)
        elif waiting is None:  # a run's late decision, or one from before a restart: nobody waits for it
            log.info("self-test decision nobody waits for", station=decision.part.station)

    async def run(self, station_id: str, request_id: str = "") -> SelfTestReport:
        """Run the station's self-test (one at a time per station: a second request waits for the running one);
        NoSelfTest for a station without one."""
        if station_id not in self.stations:
            raise NoSelfTest(f"station {station_id!r} has no golden-part self-test configured (stations[].selftest)")
        running = self._running.get(station_id)
        if running is None or running.done():
            running = self._running[station_id] = asyncio.create_task(self._run(station_id, request_id))
        return await asyncio.shield(running)

    async def _run(self, station_id: str, request_id: str) -> SelfTestReport:
        station = self.stations[station_id]
        settings: SelfTestSettings = station.selftest  # type: ignore[assignment]
        started = now_ns()
        futures: dict[str, asyncio.Future[Decision]] = {}
        ids: list[str] = []
        loop = asyncio.get_running_loop()
        try:
            for case in settings.cases:
                part = Part(
                    inspection_id=new_inspection_id(),
                    line=self.config.line,
                    station=station_id,
                    recipe_id=station.recipe,
                    triggered_unix_ns=now_ns(),
                    simulated=True,
                    golden_case=case.name,
                )
                futures[case.name] = self._waiting[part.inspection_id] = loop.create_future()
                ids.append(part.inspection_id)
                await self.publish("trigger", Trigger(part=part, source="selftest"))
            done = {}
            deadline = loop.time() + settings.timeout_s
            for name, future in futures.items():
                with contextlib.suppress(TimeoutError):
                    done[name] = await asyncio.wait_for(asyncio.shield(future), max(deadline - loop.time(), 0))
        finally:
            for inspection_id in ids:
                self._waiting.pop(inspection_id, None)
        cases = [judge_case(c.name, c.expect, c.reasons, done.get(c.name)) for c in settings.cases]
        report = SelfTestReport(
            part=Part(inspection_id=new_inspection_id(), line=self.config.line, station=station_id),
            request_id=request_id,
            started_unix_ns=started,
            finished_unix_ns=now_ns(),
            cases=cases,
            changed=any(c.changed for c in cases),
        )
        SELFTEST_RUNS.labels(station_id, "changed" if report.changed else "as_expected").inc()
        (log.error if report.changed else log.info)(
            "self-test changed an outcome" if report.changed else "self-test as expected",
            station=station_id,
            request_id=request_id,
            cases={c.name: verdict_name(c.verdict) if c.verdict else "no verdict" for c in cases},
        )
        await self.publish("selftest", report)
        return report

    async def on_command(self, msg: Msg) -> None:
        """`lineguard selftest`: the station is the subject's last token, the request id the body."""
        station_id = msg.subject.rsplit(".", 1)[-1]
        request_id = msg.data.decode("utf-8", "replace")[:64]
        if station_id not in self.stations:
            log.warning("self-test asked of a station without one", station=station_id, request_id=request_id)
            return
        task = asyncio.create_task(self.run(station_id, request_id))
        task.add_done_callback(_log_failure)

    async def schedule(self, stopping: asyncio.Event, station_id: str) -> None:
        interval = self.stations[station_id].selftest.interval_s  # type: ignore[union-attr]
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)
            if not stopping.is_set():
                try:
                    await self.run(station_id)
                except Exception as exc:  # noqa: BLE001 - the bus away: the next run is on schedule
                    log.warning("scheduled self-test failed", station=station_id, error=repr(exc))


def _log_failure(task: asyncio.Task[SelfTestReport]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("self-test on command failed", error=repr(task.exception()))


def command_subjects(line: str) -> str:
    return f"lg.{SELFTEST_COMMAND}.{line}.*"
