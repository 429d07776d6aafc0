"""Graceful overload in the OCR service on a real nats-server: a burst of frames, more than it can read by their
parts' short deadline. The first are read; each of the others gets an OCR result refused = OVERLOAD at once
(counted), nothing read for it; one result per frame, every frame settled. How many fit depends on this box's speed:
the test asserts both kinds and their order, not a count."""

from __future__ import annotations

import numpy as np
from prometheus_client import REGISTRY

from lineguard.config import LineConfig
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.imaging import encode_image
from lineguard.services.capture.stamping import stamp_serial
from lineguard.services.ocr.service import setup as ocr_setup
from lineguard.testing import running_service
from lineguard.testing.records import triggered_part
from lineguard.testing.streams import collect
from lineguard.testing.waiting import wait_for
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
