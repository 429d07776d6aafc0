"""The decision service on a real nats-server: joins, deadlines, bad input."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from lineguard.bus import DEAD_REASON
from lineguard.bus.streams import line_streams, provision_streams
from lineguard.config import LineConfig
from lineguard.contracts import dead_subject, msg_id, now_ns, stream_name, subject
from lineguard.services.decision.service import setup
from lineguard.services.results.db import upgrade_database
from lineguard.services.results.service import setup as results_setup
from lineguard.testing import running_service
from lineguard.testing.records import triggered_part
from lineguard.testing.streams import collect
from lineguard.testing.waiting import wait_for
from lineguard.v1.common_pb2 import Box
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.inference_pb2 import Detection, InferenceResult
from lineguard.v1.ocr_pb2 import Code, OcrResult
from lineguard.v1.trigger_pb2 import Trigger


async def send(bus, kind: str, message) -> None:
    await bus.publish(subject(kind, "l1", "s1"), message, msg_id=msg_id(message.part.inspection_id, kind))


async def decisions(bus, count: int, timeout: float = 10) -> list[Decision]:
    return [
        Decision.FromString(m.data)
        for m in await collect(bus, "lg.decision.l1.*", stream_name("decision"), count, timeout)
    ]


async def test_joins_inference_and_ocr_into_one_verdict(bus_factory, fresh_nats, line_config_dict) -> None:
    bus = await bus_factory("driver")
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=400))
    async with running_service("decision", config, setup):
        good, bad = triggered_part(1), triggered_part(2)
        for p, dets in ((good, []), (bad, [Detection(class_name="short", score=0.9)])):
            await send(bus, "trigger", Trigger(part=p))
            await send(
                bus, "ocr", OcrResult(part=p, codes=[Code(text=f"LG-0000000{p.sequence}")], completed_unix_ns=now_ns())
            )
            await send(
                bus,
                "inference",
                InferenceResult(part=p, detections=dets, model_id="m", model_version="7", completed_unix_ns=now_ns()),
            )
        got = {d.part.inspection_id: d for d in await decisions(bus, 2)}
    assert got[good.inspection_id].verdict == Verdict.VERDICT_PASS
    failed = got[bad.inspection_id]
    assert failed.verdict == Verdict.VERDICT_FAIL and list(failed.reason_codes) == ["DEFECT_SHORT"]
    assert failed.serial == "LG-00000002"
    assert (failed.model_id, failed.model_version, failed.recipe_version) == ("m", "7", "1")
    assert len(failed.inference.detections) == 1 and failed.ocr.codes[0].text == "LG-00000002"
    assert {t.stage for t in failed.timings} >= {"total", "decision"}


async def test_missing_result_at_deadline_is_fail_timeout(bus_factory, fresh_nats, line_config_dict) -> None:
    bus = await bus_factory("driver")
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=300))
    async with running_service("decision", config, setup):
        p = triggered_part()
        await send(bus, "trigger", Trigger(part=p))
        await send(bus, "ocr", OcrResult(part=p, codes=[Code(text="LG-00000001")]))
        [decision] = await decisions(bus, 1)
        # The late inference is not judged a second time.
        await send(bus, "inference", InferenceResult(part=p))
        await asyncio.sleep(0.5)
        info = await bus.js.stream_info(stream_name("decision"))
    assert decision.verdict == Verdict.VERDICT_FAIL
    assert list(decision.reason_codes) == ["NO_INFERENCE", "TIMEOUT"]  # both FAIL: by name
    assert info.state.messages == 1


async def test_unknown_recipe_gives_error_verdict_and_dead_letter_then_keeps_serving(
    bus_factory, fresh_nats, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=400))
    async with running_service("decision", config, setup):
        stray, good = triggered_part(recipe="no-such-recipe"), triggered_part(2)
        await send(bus, "trigger", Trigger(part=stray))
        await bus.publish(subject("inference", "l1", "s1"), b"\x08\x96\x01garbage\xff", msg_id="garbage")
        await send(bus, "trigger", Trigger(part=good))
        await send(bus, "ocr", OcrResult(part=good, codes=[Code(text="LG-00000002")]))
        await send(bus, "inference", InferenceResult(part=good))
        got = {d.part.inspection_id: d for d in await decisions(bus, 2)}
        dead = await collect(bus, "lg.dead.>", stream_name("dead"), 2)
    assert got[stray.inspection_id].verdict == Verdict.VERDICT_ERROR
    assert list(got[stray.inspection_id].reason_codes) == ["UNKNOWN_RECIPE"]
    assert got[good.inspection_id].verdict == Verdict.VERDICT_PASS
    reasons = sorted(m.headers[DEAD_REASON] for m in dead)
    assert any("unknown recipe 'no-such-recipe'" in r for r in reasons)
    assert any(r.startswith("undecodable inference message") for r in reasons)
    assert {m.subject for m in dead} == {dead_subject("trigger"), dead_subject("inference")}


async def test_inputs_of_a_verdict_that_cannot_be_published_are_retried_then_dead_lettered(
    bus_factory, fresh_nats, line_config_dict
) -> None:
    # The held inputs meet the bus's one failure policy: retried, and after max_deliver dead-lettered with the cause
    # (the verdict cannot be published: its stream is gone), never nak'd until the server stops delivering them.
    bus = await bus_factory("driver")
    raw = line_config_dict(nats_url=fresh_nats.url, deadline_ms=100)
    raw["nats"].update(max_deliver=3, nak_delay_s=0.05)
    async with running_service("decision", LineConfig(**raw), setup):
        await bus.js.delete_stream(stream_name("decision"))
        await send(bus, "trigger", Trigger(part=triggered_part()))
        [dead] = await collect(bus, "lg.dead.>", stream_name("dead"), 1)
    assert dead.subject == dead_subject("trigger")
    assert dead.headers[DEAD_REASON].startswith(
        "gave up after 3 deliveries: PublishRefused: publish to lg.decision.l1.s1 refused"
    ), dead.headers[DEAD_REASON]


async def test_an_input_redelivered_while_a_failing_verdict_is_published_is_judged_again(
    bus_factory, fresh_nats, line_config_dict
) -> None:
    # The verdict's publish hangs (the decision stream is gone and a subscriber that never answers takes its subject)
    # past ack_wait, so the held inputs come back while it is in flight; then it fails. Those inputs must not be acked
    # as "already judged": once the stream is back the part is judged again with all of them, not FAIL / TIMEOUT.
    bus = await bus_factory("driver")
    raw = line_config_dict(nats_url=fresh_nats.url, deadline_ms=5000)
    raw["nats"].update(ack_wait_s=0.3, publish_timeout_s=1.0, nak_delay_s=0.5, max_deliver=20)
    config = LineConfig(**raw)
    async with running_service("decision", config, setup):
        await bus.js.delete_stream(stream_name("decision"))
        silent = await bus.nc.subscribe("lg.decision.>")  # takes the request, never replies: the publish times out
        p = triggered_part()
        await send(bus, "trigger", Trigger(part=p))
        await send(bus, "ocr", OcrResult(part=p, codes=[Code(text="LG-00000001")], completed_unix_ns=now_ns()))
        await send(bus, "inference", InferenceResult(part=p, model_id="m", model_version="7"))
        await asyncio.sleep(1.2)  # the first verdict's publish has failed; its inputs were redelivered meanwhile
        await silent.unsubscribe()
        await provision_streams(bus.js, line_streams(config.nats))
        [decision] = await decisions(bus, 1, timeout=10)
    assert decision.part.inspection_id == p.inspection_id
    assert decision.verdict == Verdict.VERDICT_PASS, list(decision.reason_codes)
    assert decision.serial == "LG-00000001"


async def test_every_verdict_is_explained_in_the_decision_the_record_and_the_trace(
    bus_factory, fresh_nats, line_config_dict, tmp_path: Path
) -> None:
    # The demo recipe with a critical zone over the pads and a tolerant one along the edge, judged by the decision
    # service, written by the results service to a SQLite file, told by `lineguard trace`.
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    upgrade_database(url)
    raw = line_config_dict(nats_url=fresh_nats.url, database_url=url, deadline_ms=2000)
    raw["recipes"]["pcb-a"].update(
        image_size={"width": 640, "height": 800},
        zones={
            "pads": {"kind": "critical", "polygon": [[100, 100], [300, 100], [300, 200], [100, 200]]},
            "edge": {"kind": "tolerant", "polygon": [[0, 600], [640, 600], [640, 640], [0, 640]], "min_score": 0.9},
        },
    )
    config = LineConfig(**raw)
    bus = await bus_factory("driver")
    p = triggered_part(7)
    spur = Detection(class_name="spur", score=0.61, box=Box(x1=150, y1=130, x2=170, y2=150), area_px=400, area_mm2=0.17)
    edge = Detection(class_name="short", score=0.85, box=Box(x1=10, y1=610, x2=20, y2=620), area_px=100, area_mm2=0.04)
    async with running_service("decision", config, setup), running_service("results", config, results_setup):
        await send(bus, "trigger", Trigger(part=p))
        await send(
            bus,
            "ocr",
            OcrResult(part=p, codes=[Code(symbology="DataMatrix", text="LG-00000007")], completed_unix_ns=now_ns()),
        )
        await send(
            bus,
            "inference",
            InferenceResult(part=p, detections=[edge, spur], image_width=640, image_height=800, model_id="m"),
        )
        [decision] = await decisions(bus, 1)
        await wait_for(lambda: _trace(url, "LG-00000007", "--json").returncode == 0)
    # A spur is rework by its class rule, but in the critical zone it fails; the short under the edge's 0.9 is not
    # judged at all.
    assert (decision.verdict, list(decision.reason_codes)) == (Verdict.VERDICT_FAIL, ["DEFECT_SPUR"])
    said = "FAIL: spur 0.61 ≥ 0.50 at (160, 140), 0.17 mm² in critical zone 'pads'"
    [finding] = decision.explanation
    assert (finding.text, finding.zone, list(finding.detections), finding.area_unit) == (said, "pads", [1], "mm2")

    story = json.loads(_trace(url, "LG-00000007", "--json").stdout)
    [inspection] = story["inspections"]
    [stored_finding] = inspection["explanation"]
    assert stored_finding["text"] == said
    assert (stored_finding["reason"], stored_finding["verdict"], stored_finding["zone"]) == (
        "DEFECT_SPUR",
        "FAIL",
        "pads",
    )
    assert (stored_finding["x"], stored_finding["y"], stored_finding["threshold"]) == (160, 140, 0.5)
    # The reason's severity is the zone's FAIL, not the class rule's REWORK.
    assert inspection["reasons"] == [{"code": "DEFECT_SPUR", "severity": "FAIL"}]
    table = _trace(url, "LG-00000007")
    assert table.returncode == 0, table.stderr
    assert "FAIL, because:" in table.stdout and said in table.stdout


def _trace(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    lineguard = str(Path(sys.executable).with_name("lineguard"))
    env = {"COLUMNS": "200", "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [lineguard, "trace", *args, "--url", url], capture_output=True, text=True, timeout=60, check=False, env=env
    )
