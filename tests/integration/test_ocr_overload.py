"""Graceful overload in the OCR service on a real nats-server: a burst of frames, more than it can read by their
parts' short deadline. The first are read; each of the others gets an OCR result refused = OVERLOAD at once
(counted), nothing read for it; one result per frame, every frame settled. How many fit depends on this box's speed:
the test asserts both kinds and their order, not a count."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from lineguard.config import LineConfig
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.imaging import encode_image
from lineguard.services.capture.stamping import stamp_serial
from lineguard.services.ocr import service as ocr_service
from lineguard.services.ocr.service import setup as ocr_setup
from lineguard.testing import running_service
from lineguard.testing.records import triggered_part
from lineguard.testing.streams import collect
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.ocr_pb2 import OcrResult

FRAMES = 200
DEADLINE_MS = 1500  # a strip read (code and printed text) takes 20-60 ms here: 200 of them do not fit


def refused_so_far() -> float:
    return REGISTRY.get_sample_value("lineguard_overload_refused_total", {"service": "ocr"}) or 0.0


async def test_a_burst_past_what_ocr_reads_by_the_deadline_is_read_as_far_as_it_fits_and_the_rest_refused(
    fresh_nats, bus_factory, line_config_dict
) -> None:
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=DEADLINE_MS))
    bus = await bus_factory("driver")
    png = encode_image(stamp_serial(np.full((640, 640), 255, np.uint8), "LG-00000003"), "png")
    before = refused_so_far()
    async with running_service("ocr", config, ocr_setup):
        for seq in range(1, FRAMES + 1):
            frame = Frame(part=triggered_part(seq), encoding="png", data=png, width=640, height=800)
            await bus.publish(subject("frame", "l1", "s1"), frame, msg_id=msg_id(frame.part.inspection_id, "frame"))
        results = [
            OcrResult.FromString(m.data) for m in await collect(bus, "lg.ocr.l1.*", stream_name("ocr"), FRAMES, 30)
        ]

        async def settled() -> bool:  # each frame is acked right after its result is published
            info = await bus.js.consumer_info(stream_name("frame"), "ocr-frame")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_for(settled, timeout=10)  # every frame settled

    assert sorted(r.part.sequence for r in results) == list(range(1, FRAMES + 1))  # one result per frame
    read = [r for r in results if not r.refused]
    refused = [r for r in results if r.refused]
    assert read and refused, f"{len(read)} read, {len(refused)} refused"
    assert all(r.refused == "OVERLOAD" and not r.codes for r in refused)
    assert all([c.text for c in r.codes] == ["LG-00000003"] for r in read)
    assert min(r.part.sequence for r in read) == 1  # arrival order: the first frame is read
    assert refused_so_far() - before == len(refused)


def skipped_so_far() -> float:
    return REGISTRY.get_sample_value("lineguard_frames_skipped_decided_total", {"service": "ocr"}) or 0.0


async def test_a_frame_whose_part_is_already_decided_is_not_read(fresh_nats, bus_factory, line_config_dict) -> None:
    """The decision of a part (say FAIL / OVERLOAD, from the model's side) came before OCR's turn: its frame is acked
    unread and unanswered; the other parts' frames are read as ever."""
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=10_000))
    bus = await bus_factory("driver")
    png = encode_image(stamp_serial(np.full((640, 640), 255, np.uint8), "LG-00000003"), "png")
    parts = [triggered_part(seq) for seq in range(1, 7)]
    decided = [p for p in parts if p.sequence % 2 == 0]
    before = skipped_so_far()
    async with running_service("ocr", config, ocr_setup):
        for part in decided:
            decision = Decision(verdict=Verdict.VERDICT_FAIL, reason_codes=["OVERLOAD"])
            decision.part.CopyFrom(part)
            await bus.publish(subject("decision", "l1", "s1"), decision, msg_id=msg_id(part.inspection_id, "decision"))
        await asyncio.sleep(0.2)  # the decisions reach the service's subscription before the frames are published
        for part in parts:
            frame = Frame(part=part, encoding="png", data=png, width=640, height=800)
            await bus.publish(subject("frame", "l1", "s1"), frame, msg_id=msg_id(part.inspection_id, "frame"))
        results = [OcrResult.FromString(m.data) for m in await collect(bus, "lg.ocr.l1.*", stream_name("ocr"), 3, 30)]

        async def settled() -> bool:
            info = await bus.js.consumer_info(stream_name("frame"), "ocr-frame")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_for(settled, timeout=10)  # the skipped frames are acked too: nothing redelivered
        await asyncio.sleep(0.3)  # a result for a skipped frame, had there been one, would be here by now
        stored = (await bus.js.stream_info(stream_name("ocr"))).state.messages

    assert sorted(r.part.sequence for r in results) == [1, 3, 5]
    assert stored == 3  # none for the decided parts
    assert all([c.text for c in r.codes] == ["LG-00000003"] for r in results)
    assert skipped_so_far() - before == len(decided)


async def test_while_the_line_refuses_parts_ocr_waits_before_a_frame_and_skips_one_decided_meanwhile(
    fresh_nats, bus_factory, line_config_dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no OVERLOAD decided, a frame is read at once. Once the line refuses parts (an OVERLOAD decision), a frame
    is read no sooner than the hold after it came (a second here, so that the test sees it): a part decided
    within the hold is skipped, unread and unanswered, one that is not is read after it."""
    monkeypatch.setattr(ocr_service, "HOLD_WHILE_REFUSING_S", 1.0)
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=10_000))
    bus = await bus_factory("driver")
    png = encode_image(stamp_serial(np.full((640, 640), 255, np.uint8), "LG-00000003"), "png")

    async def publish_frame(part) -> float:
        frame = Frame(part=part, encoding="png", data=png, width=640, height=800)
        await bus.publish(subject("frame", "l1", "s1"), frame, msg_id=msg_id(part.inspection_id, "frame"))
        return time.monotonic()

    async def publish_overload(part) -> None:
        decision = Decision(verdict=Verdict.VERDICT_FAIL, reason_codes=["OVERLOAD"])
        decision.part.CopyFrom(part)
        await bus.publish(subject("decision", "l1", "s1"), decision, msg_id=msg_id(part.inspection_id, "decision"))

    results: dict[int, float] = {}

    async def on_result(msg) -> None:
        results[OcrResult.FromString(msg.data).part.sequence] = time.monotonic()

    sub = await bus.nc.subscribe("lg.ocr.l1.*", cb=on_result)
    before = skipped_so_far()
    async with running_service("ocr", config, ocr_setup):
        at_once = await publish_frame(triggered_part(1))
        await wait_for(lambda: 1 in results, timeout=10)
        assert results[1] - at_once < 0.9  # not refusing: read at once (20-60 ms a read here)

        await publish_overload(triggered_part(2))  # the line refuses parts from now on
        await asyncio.sleep(0.2)
        decided, read = triggered_part(3), triggered_part(4)
        await publish_frame(decided)
        await asyncio.sleep(0.3)
        await publish_overload(decided)  # while its frame is held: it is skipped
        held = await publish_frame(read)
        await wait_for(lambda: 4 in results, timeout=10)
        await asyncio.sleep(0.3)
        await sub.unsubscribe()

    assert results[4] - held >= 1.0  # read, after the hold
    assert 3 not in results
    assert skipped_so_far() - before == 1
