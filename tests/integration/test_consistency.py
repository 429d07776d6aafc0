"""Consistency checks in depth, on a real nats-server: a message travels on its own part's subject, for a configured
station; a part nobody triggered is never judged nor written; an id collision is counted and logged, never silent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY
from sqlalchemy import func, select

from lineguard.bus import DEAD_REASON, DEAD_SUBJECT, Bus
from lineguard.config import LineConfig
from lineguard.contracts import dead_subject, msg_id, stream_name, subject
from lineguard.runtime.service import ServiceContext
from lineguard.services.capture.service import setup as capture_setup
from lineguard.services.decision.service import setup as decision_setup
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.schema import Inspection
from lineguard.services.results.service import setup as results_setup
from lineguard.testing import running_service
from lineguard.testing.records import sample_decision, triggered_part
from lineguard.testing.streams import collect, stored
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import Code, OcrResult
from lineguard.v1.trigger_pb2 import Trigger


async def send(bus: Bus, kind: str, message, *, on: str | None = None) -> None:
    """Publish `message` on its part's subject, or on station `on`'s."""
    p = message.part
    await bus.publish(subject(kind, p.line, on or p.station), message, msg_id=msg_id(p.inspection_id, kind))


def kind_of(result: InferenceResult | OcrResult) -> str:
    return "inference" if isinstance(result, InferenceResult) else "ocr"


def results_of(p: Part) -> tuple[InferenceResult, OcrResult]:
    return InferenceResult(part=p, model_id="m", model_version="1"), OcrResult(part=p, codes=[Code(text="LG-00000001")])


async def dead_reasons(bus: Bus, count: int) -> dict[str, str]:
    """The first `count` dead letters: the subject each came from -> its reason."""
    dead = await collect(bus, "lg.dead.>", stream_name("dead"), count)
    return {m.headers[DEAD_SUBJECT]: m.headers[DEAD_REASON] for m in dead}


async def test_capture_refuses_a_trigger_whose_part_names_another_station_than_its_subject(
    bus_factory, fresh_nats, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    forged, good = Trigger(part=triggered_part(station="s9")), Trigger(part=triggered_part(2))
    async with running_service("capture", LineConfig(**line_config_dict(nats_url=fresh_nats.url)), capture_setup):
        await send(bus, "trigger", forged, on="s1")
        await send(bus, "trigger", good)
        [frame] = await collect(bus, "lg.frame.l1.*", stream_name("frame"), 1)
        reasons = await dead_reasons(bus, 1)
    assert frame.headers["Nats-Msg-Id"] == f"{good.part.inspection_id}:frame"
    assert "is about a part of line 'l1' station 's9', whose subject is lg.trigger.l1.s9" in reasons["lg.trigger.l1.s1"]


async def test_decision_judges_only_triggered_parts_of_configured_stations(
    bus_factory, fresh_nats, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=400))
    wrong_subject, unconfigured, untriggered, late_trigger, good = (
        triggered_part(1, station="s9"),
        triggered_part(2, station="s9"),
        triggered_part(3, station="s1"),
        triggered_part(4, station="s1"),
        triggered_part(5, station="s1"),
    )
    disagreeing = triggered_part(6, station="s1")
    async with running_service("decision", config, decision_setup):
        await send(bus, "trigger", Trigger(part=wrong_subject), on="s1")  # the attack: s9 on s1's subject
        await send(bus, "trigger", Trigger(part=unconfigured))  # on its own subject, but no such station
        for result in results_of(unconfigured):
            await send(bus, kind_of(result), result)
        for result in results_of(untriggered):  # a frame nobody triggered went through inference and OCR
            await send(bus, kind_of(result), result)
        inference, ocr = results_of(late_trigger)  # results first, their trigger after: still judged
        await send(bus, "inference", inference)
        await send(bus, "ocr", ocr)
        await asyncio.sleep(0.1)
        await send(bus, "trigger", Trigger(part=late_trigger))
        await send(bus, "trigger", Trigger(part=good))
        for result in results_of(good):
            await send(bus, kind_of(result), result)
        claimed = Part()
        claimed.CopyFrom(disagreeing)
        claimed.sequence = 99  # its inference result says another PLC sequence than its trigger (in either order)
        await send(bus, "trigger", Trigger(part=disagreeing))
        await send(bus, "inference", InferenceResult(part=claimed))
        await send(bus, "ocr", results_of(disagreeing)[1])
        decided = await collect(bus, "lg.decision.l1.*", stream_name("decision"), 3)
        # trigger s9 (wrong subject), trigger + 2 results of s9 (unconfigured), 2 untriggered, 1 disagreeing
        dead = await collect(bus, "lg.dead.>", stream_name("dead"), 7)
        await asyncio.sleep(0.6)  # anything else would have been decided by now
        info = await bus.js.stream_info(stream_name("decision"))
    verdicts = {Decision.FromString(m.data).part.inspection_id: Decision.FromString(m.data) for m in decided}
    assert set(verdicts) == {late_trigger.inspection_id, good.inspection_id, disagreeing.inspection_id}
    assert info.state.messages == 3
    assert verdicts[late_trigger.inspection_id].verdict == Verdict.VERDICT_PASS
    assert verdicts[good.inspection_id].verdict == Verdict.VERDICT_PASS
    # The disagreeing result is not judged: the part gets FAIL / TIMEOUT without it, never a pass.
    timed_out = verdicts[disagreeing.inspection_id]
    assert (timed_out.verdict, list(timed_out.reason_codes)) == (Verdict.VERDICT_FAIL, ["NO_INFERENCE", "TIMEOUT"])
    reasons = [(m.headers[DEAD_SUBJECT], m.headers[DEAD_REASON]) for m in dead]
    assert len([r for s, r in reasons if s == "lg.trigger.l1.s1" and "whose subject is lg.trigger.l1.s9" in r]) == 1
    not_configured = [s for s, r in reasons if "station 's9', which is not configured on line 'l1'" in r]
    assert sorted(not_configured) == ["lg.inference.l1.s9", "lg.ocr.l1.s9", "lg.trigger.l1.s9"]
    untriggered_reasons = [r for _, r in reasons if f"no trigger seen for inspection {untriggered.inspection_id}" in r]
    assert len(untriggered_reasons) == 2
    disagrees = "inference result disagrees with its trigger: part.sequence is 99, its trigger's 6"
    assert any(disagrees in r for _, r in reasons)


async def test_results_writes_rows_only_for_configured_stations_on_their_own_subject(
    bus_factory, fresh_nats, line_config_dict, tmp_path: Path
) -> None:
    bus = await bus_factory("driver")
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, database_url=url))
    forged, unconfigured, other_line, good = (
        sample_decision(1, station="s9"),
        sample_decision(2, station="s9"),
        sample_decision(3),
        sample_decision(4),
    )
    other_line.part.line = "l2"
    await asyncio.to_thread(upgrade_database, url)
    async with running_service("results", config, results_setup):
        await send(bus, "decision", forged, on="s1")
        await send(bus, "decision", unconfigured)
        await bus.publish("lg.decision.l1.s1", other_line, msg_id="other-line")
        await send(bus, "decision", good)
        reasons = [m.headers[DEAD_REASON] for m in await collect(bus, dead_subject("decision"), "LG_DEAD", 3)]
        engine = make_engine(url)
        try:
            for _ in range(100):
                with engine.connect() as conn:
                    rows = conn.execute(select(Inspection.inspection_id, Inspection.station)).all()
                if rows:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            with engine.connect() as conn:
                count = conn.execute(select(func.count()).select_from(Inspection)).scalar_one()
        finally:
            engine.dispose()
    assert rows == [(good.part.inspection_id, "s1")] and count == 1
    assert any("station 's9', whose subject is lg.decision.l1.s9" in r for r in reasons)
    assert any("station 's9', which is not configured on line 'l1'" in r for r in reasons)
    assert any("line 'l2' station 's1', whose subject is lg.decision.l2.s1" in r for r in reasons)


def duplicates(service: str, kind: str, payload: str) -> float:
    labels = {"service": service, "kind": kind, "payload": payload}
    return REGISTRY.get_sample_value("lineguard_publish_duplicates_total", labels) or 0.0


async def test_a_publish_dropped_as_duplicate_is_counted_and_a_collision_is_told_from_a_retry(
    bus_factory, line_config_dict, fresh_nats, capsys
) -> None:
    bus = await bus_factory("decision")
    ctx = ServiceContext(name="dup-test", config=LineConfig(**line_config_dict(nats_url=fresh_nats.url)), bus=bus)
    real = sample_decision(1, verdict=Verdict.VERDICT_FAIL)
    forged = Decision()
    forged.CopyFrom(real)
    forged.verdict = Verdict.VERDICT_PASS
    forged.ClearField("reason_codes")
    before = {p: duplicates("dup-test", "decision", p) for p in ("same", "different")}
    await ctx.publish("decision", forged)  # the forger's, first under the real decision's id
    await ctx.publish("decision", real)  # the real one: dropped, and it must not be silent
    await ctx.publish("decision", forged)  # the same bytes again: a retry
    assert duplicates("dup-test", "decision", "different") == before["different"] + 1
    assert duplicates("dup-test", "decision", "same") == before["same"] + 1
    [held] = await stored(bus, "lg.decision.l1.s1", stream_name("decision"))
    assert Decision.FromString(held.data).verdict == Verdict.VERDICT_PASS  # what the server kept: hence the alarm
    logged = capsys.readouterr()
    assert "message id collision" in logged.out + logged.err
    assert f"{real.part.inspection_id}:decision" in logged.out + logged.err


async def test_the_decision_service_reports_a_collision_with_a_forged_decision(
    bus_factory, fresh_nats, line_config_dict
) -> None:
    bus = await bus_factory("forger")
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=300))
    p = triggered_part()
    before = duplicates("decision", "decision", "different")
    async with running_service("decision", config, decision_setup):
        await send(bus, "decision", Decision(part=p, verdict=Verdict.VERDICT_PASS))
        await send(bus, "trigger", Trigger(part=p))  # no results: the real verdict is FAIL / TIMEOUT
        for _ in range(100):
            if duplicates("decision", "decision", "different") > before:
                break
            await asyncio.sleep(0.05)
    assert duplicates("decision", "decision", "different") == before + 1
