"""The drift watch (docs/drift.md): each station's parts of its current shift against its baseline, and its
golden-part self-tests; the state published for the gateway (a warning at the PLC) and stored for the API.

The decisions reach it through the results service's own decision consumer (`DriftWatch.observing` wraps the
writer's handler), so it costs the line no second delivery of every decision; a self-test part (Part.simulated)
is never written as a record and never counted as production. The judging is lineguard.drift's plain functions."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import Gauge
from sqlalchemy import Engine, insert

from lineguard.bus import Delivery
from lineguard.bus.worker import Handler
from lineguard.config import LineConfig
from lineguard.contracts import new_inspection_id, now_ns, verdict_name
from lineguard.drift import LEVEL_NAMES, Baseline, BaselineError, decision_features, judge
from lineguard.drift.selftest import case_fields
from lineguard.drift.store import latest_baseline, training_baseline
from lineguard.imaging import ROI
from lineguard.runtime.service import ServiceContext
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.results.batch import dialect_insert
from lineguard.services.results.records import from_unix_ns
from lineguard.services.results.schema import DriftStateRow, SelfTestRun
from lineguard.services.results.shifts import shift_at
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.drift_pb2 import DriftLevel, DriftState, SelfTestReport

log = structlog.get_logger("lineguard.results.drift")

DRIFT_PSI = Gauge(
    "lineguard_drift_psi", "Population stability index of a feature against the baseline", ["station", "feature"]
)
DRIFT_LEVEL = Gauge("lineguard_drift_level", "A station's drift: 1 OK, 2 WARNING, 3 ALERT", ["station"])
SELFTEST_CHANGED = Gauge(
    "lineguard_selftest_changed", "1 while the station's last self-test changed an outcome", ["station"]
)


@dataclass
class StationWindow:
    shift: str | None = None
    rows: deque[dict[str, float]] = field(default_factory=deque)


class DriftWatch:
    """Per station: the latest `drift.window` parts of the current shift, the baseline, the last self-test."""

    def __init__(self, config: LineConfig, engine: Engine):
        self.config = config
        self.settings = config.drift
        self.engine = engine
        self.windows = {s.id: StationWindow(rows=deque(maxlen=self.settings.window)) for s in config.stations}
        self.selftest: dict[str, str] = {}  # station -> why its last self-test raises the alert
        self.baselines: dict[str, Baseline] = {}
        self._training: dict[ROI | None, Baseline] = {}
        self.published: dict[str, DriftLevel] = {}

    # --- what comes in

    def observe(self, decision: Decision) -> None:
        part = decision.part
        window = self.windows.get(part.station)
        if window is None or part.simulated:
            return
        slot = shift_at(self.config.calendar, from_unix_ns(part.triggered_unix_ns))
        shift = f"{slot.day.isoformat()} {slot.name}" if slot is not None else None
        if shift != window.shift:  # a new shift starts from an empty window: each shift is judged on its own
            window.shift, window.rows = shift, deque(maxlen=self.settings.window)
        features = decision_features(decision)
        if features:
            window.rows.append(features)

    def observing(self, handler: Handler[Decision]) -> Handler[Decision]:
        """`handler` for production decisions, after the watch has seen them; a self-test part's decision is acked
        unwritten: golden parts are never production records."""

        async def handle(delivery: Delivery[Decision]) -> None:
            if delivery.message.part.simulated:
                log.info("self-test part not written", station=delivery.message.part.station)
                return
            self.observe(delivery.message)
            await handler(delivery)

        return handle

    def selftest_done(self, report: SelfTestReport) -> None:
        station = report.part.station
        if station not in self.windows:
            return
        changed = [c for c in report.cases if c.changed]
        self.selftest[station] = "; ".join(
            f"self-test {c.name}: {verdict_name(c.verdict) if c.verdict else 'no verdict'}"
            f" ({','.join(c.reason_codes) or 'no reasons'}), expected {verdict_name(c.expected)}"
            for c in changed
        )
        SELFTEST_CHANGED.labels(station).set(1 if changed else 0)

    # --- judging

    def baseline(self, station: str) -> Baseline:
        """The station's latest stored baseline, else the training set's image quality (the packaged boards)."""
        stored = latest_baseline(self.engine, station)
        if stored is not None:
            return stored
        recipe = self.config.recipes.get(self.config.station(station).recipe)
        roi = ROI.from_list(recipe.inspect_roi) if recipe is not None else None
        if roi not in self._training:  # measured within the recipe's inspect_roi, as capture measures frames
            self._training[roi] = training_baseline(SAMPLE_BOARDS, self.settings.bins, roi)
        return self._training[roi]

    def state(self, station: str) -> DriftState:
        window = self.windows[station]
        baseline = self.baselines.get(station) or self.baseline(station)
        judged = judge(baseline, list(window.rows), self.settings)
        level = judged.level
        selftest = self.selftest.get(station, "")
        if selftest:
            level = DriftLevel.DRIFT_LEVEL_ALERT
        state = DriftState(
            part=Part(inspection_id=new_inspection_id(), line=self.config.line, station=station),
            shift=window.shift or "",
            level=level,
            features=judged.features,
            samples=len(window.rows),
            baseline=baseline.name,
            computed_unix_ns=now_ns(),
            selftest=selftest,
            detail="; ".join(filter(None, [judged.detail if judged.features or not selftest else "", selftest])),
        )
        return state

    def refresh_baselines(self) -> None:
        for station in self.windows:
            try:
                self.baselines[station] = self.baseline(station)
            except BaselineError as exc:
                log.error("drift baseline unusable; the training set's is used", station=station, error=str(exc))


def state_row(state: DriftState) -> dict[str, Any]:
    return {
        "station": state.part.station,
        "shift": state.shift or None,
        "level": LEVEL_NAMES[state.level],
        "samples": state.samples,
        "baseline": state.baseline,
        "features": [
            {
                "feature": f.feature,
                "psi": round(f.psi, 4),
                "level": LEVEL_NAMES[f.level],
                "baseline_mean": round(f.baseline_mean, 4),
                "current_mean": round(f.current_mean, 4),
            }
            for f in state.features
        ],
        "selftest": state.selftest,
        "detail": state.detail,
        "computed_at": from_unix_ns(state.computed_unix_ns),
    }


def store_state(engine: Engine, state: DriftState) -> None:
    """The station's drift_states row, replaced by an upsert: the writer's role has no DELETE (docs/mes-schema.md)."""
    with engine.begin() as conn:
        conn.execute(_state_upsert(dialect_insert(engine)), state_row(state))


@functools.cache
def _state_upsert(dialect: Callable[..., Any]) -> Any:
    statement = dialect(DriftStateRow)
    columns = [c.name for c in DriftStateRow.__table__.columns if not c.primary_key]
    return statement.on_conflict_do_update(
        index_elements=[DriftStateRow.station], set_={c: statement.excluded[c] for c in columns}
    )


def store_selftest(engine: Engine, report: SelfTestReport) -> None:
    cases = [case_fields(c) for c in report.cases]
    with engine.begin() as conn:
        conn.execute(
            insert(SelfTestRun).values(
                station=report.part.station,
                request_id=report.request_id,
                started_at=from_unix_ns(report.started_unix_ns),
                finished_at=from_unix_ns(report.finished_unix_ns),
                changed=report.changed,
                cases=cases,
            )
        )


def setup_drift(ctx: ServiceContext, engine: Engine, writer: Handler[Decision]) -> Handler[Decision]:
    """Start the drift watch (drift.enabled); the decision handler to consume with: `writer` behind the watch."""
    watch = DriftWatch(ctx.config, engine)
    if not ctx.config.drift.enabled:
        return watch.observing(writer)

    async def on_selftest(delivery: Delivery[SelfTestReport]) -> None:
        report = delivery.message
        await asyncio.to_thread(store_selftest, engine, report)
        watch.selftest_done(report)
        log.log(
            40 if report.changed else 20,
            "self-test changed an outcome: drift alert" if report.changed else "self-test as expected",
            station=report.part.station,
            cases={c.name: verdict_name(c.verdict) if c.verdict else "none" for c in report.cases},
        )
        await publish(report.part.station)

    async def publish(station: str) -> None:
        state = await asyncio.to_thread(watch.state, station)
        await asyncio.to_thread(store_state, engine, state)
        DRIFT_LEVEL.labels(station).set(int(state.level))
        for feature in state.features:
            DRIFT_PSI.labels(station, feature.feature).set(feature.psi)
        before = watch.published.get(station)
        if state.level != before:
            level = LEVEL_NAMES[state.level]
            emit = log.warning if state.level >= DriftLevel.DRIFT_LEVEL_WARNING else log.info
            emit(f"drift {level}", station=station, shift=state.shift, detail=state.detail, samples=state.samples)
        watch.published[station] = state.level
        await ctx.publish("drift", state)

    async def run() -> None:
        while not ctx.stopping.is_set():
            try:
                await asyncio.to_thread(watch.refresh_baselines)
            except Exception as exc:  # noqa: BLE001 - the database away: the baselines read last time still judge
                log.warning("drift baselines not read; judging with the last ones", error=repr(exc))
            for station in watch.windows:
                try:
                    await publish(station)
                except Exception as exc:  # noqa: BLE001 - the bus or the database away: judged again next round
                    log.warning("drift state not published", station=station, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), timeout=ctx.config.drift.publish_s)

    ctx.run_task(run())
    ctx.consume("selftest", SelfTestReport, on_selftest, retry_forever=True)
    return watch.observing(writer)
