"""The capture and OCR services on a real nats-server: trigger -> frame -> codes, and bad input."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import REGISTRY

from lineguard.bus import DEAD_REASON, DEAD_SUBJECT
from lineguard.bus.streams import line_streams, provision_streams
from lineguard.config import LineConfig
from lineguard.contracts import dead_subject, msg_id, new_inspection_id, stream_name, subject
from lineguard.imaging import decode_image, encode_image
from lineguard.natsserver import EmbeddedNats
from lineguard.services.capture.service import PayloadLimitError
from lineguard.services.capture.service import setup as capture_setup
from lineguard.services.capture.stamping import stamp_serial
from lineguard.services.ocr.service import setup as ocr_setup
from lineguard.testing import running_service
from lineguard.testing.streams import collect
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.ocr_pb2 import OcrResult
from lineguard.v1.trigger_pb2 import Trigger


def new_part(seq: int, station: str = "s1", recipe: str = "pcb-a") -> Part:
    return Part(inspection_id=new_inspection_id(), line="l1", station=station, recipe_id=recipe, sequence=seq)


async def test_capture_turns_triggers_into_frames_and_dead_letters_an_unknown_station(
    fresh_nats: EmbeddedNats, bus_factory, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    unknown = Trigger(part=new_part(1, station="s9"), source="cli")
    good = Trigger(part=new_part(42), source="cli")
    async with running_service("capture", LineConfig(**line_config_dict(nats_url=fresh_nats.url)), capture_setup):
        # s9 is not a station, but the subject is well formed: only capture can tell.
        for trig in (unknown, good):
            await bus.publish(
                subject("trigger", "l1", trig.part.station), trig, msg_id=msg_id(trig.part.inspection_id, "trigger")
            )
        frames = await collect(bus, "lg.frame.l1.*", stream_name("frame"), 1)
        dead = await collect(bus, dead_subject("trigger"), stream_name("dead"), 1)
    frame = Frame.FromString(frames[0].data)
    assert frames[0].subject == "lg.frame.l1.s1"
    assert frames[0].headers["Nats-Msg-Id"] == f"{good.part.inspection_id}:frame"
    assert frame.part == good.part
    assert (frame.width, frame.height, frame.encoding) == (640, 800, "png")
    assert decode_image(frame.data).shape == (800, 640, 3)
    assert "station 's9', which is not configured on line 'l1'" in dead[0].headers[DEAD_REASON]
    assert dead[0].headers[DEAD_SUBJECT] == "lg.trigger.l1.s9"
    assert Trigger.FromString(dead[0].data) == unknown


async def test_ocr_reads_frames_and_dead_letters_what_it_cannot_read(
    fresh_nats: EmbeddedNats, bus_factory, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    board = np.full((640, 640), 255, np.uint8)
    png = encode_image(stamp_serial(board, "LG-00000003"), "png")
    not_image = Frame(part=new_part(1), encoding="png", data=b"GIF89a not what it says")
    unknown_recipe = Frame(part=new_part(2, recipe="pcb-z"), encoding="png", data=png)
    good = Frame(part=new_part(3), encoding="png", data=png, width=640, height=800)
    async with running_service("ocr", LineConfig(**line_config_dict(nats_url=fresh_nats.url)), ocr_setup):
        for frame in (not_image, unknown_recipe, good):
            await bus.publish(subject("frame", "l1", "s1"), frame, msg_id=msg_id(frame.part.inspection_id, "frame"))
        results = await collect(bus, "lg.ocr.l1.*", stream_name("ocr"), 1)
        dead = await collect(bus, dead_subject("frame"), stream_name("dead"), 2)
    result = OcrResult.FromString(results[0].data)
    assert result.part == good.part
    assert [(c.symbology, c.text) for c in result.codes] == [("DataMatrix", "LG-00000003")]
    assert result.codes[0].box.y1 >= 640  # in full-frame pixels, inside the strip below the board
    reasons = {Frame.FromString(d.data).part.sequence: d.headers[DEAD_REASON] for d in dead}
    assert reasons[1].startswith("frame is not an image: 23 bytes")
    assert "unknown recipe 'pcb-z'" in reasons[2]


async def test_trigger_to_serial_through_capture_and_ocr(
    fresh_nats: EmbeddedNats, bus_factory, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url))
    triggers = [Trigger(part=new_part(seq), source="cli") for seq in (41, 42)]
    async with running_service("capture", config, capture_setup), running_service("ocr", config, ocr_setup):
        for trig in triggers:
            await bus.publish(subject("trigger", "l1", "s1"), trig, msg_id=msg_id(trig.part.inspection_id, "trigger"))
        results = await collect(bus, "lg.ocr.l1.*", stream_name("ocr"), 2)
    read = {
        OcrResult.FromString(r.data).part.sequence: [c.text for c in OcrResult.FromString(r.data).codes]
        for r in results
    }
    assert read == {41: ["LG-00000041"], 42: ["LG-00000042"]}


async def test_a_trigger_redelivered_after_a_failed_publish_gets_the_image_grabbed_first(
    fresh_nats: EmbeddedNats, bus_factory, line_config_dict
) -> None:
    # The simulated camera shows the next board at every grab, as a real line shows the next part: a second
    # grab for the same trigger would put the wrong part's image under this inspection.
    bus = await bus_factory("driver")
    raw = line_config_dict(nats_url=fresh_nats.url)
    raw["nats"] = {**raw.get("nats", {}), "nak_delay_s": 2.0}
    config = LineConfig(**raw)
    first, second = (Trigger(part=new_part(seq), source="cli") for seq in (51, 52))
    labels = {"service": "capture", "kind": "trigger", "outcome": "retry"}
    async with running_service("capture", config, capture_setup):
        await bus.js.delete_stream(stream_name("frame"))  # the frame's publish fails: no stream takes it
        retries = REGISTRY.get_sample_value("lineguard_messages_total", labels) or 0.0
        await bus.publish(subject("trigger", "l1", "s1"), first, msg_id=msg_id(first.part.inspection_id, "trigger"))
        async with asyncio.timeout(10):
            while (REGISTRY.get_sample_value("lineguard_messages_total", labels) or 0.0) == retries:
                await asyncio.sleep(0.02)
        await provision_streams(bus.js, line_streams(config.nats))  # back before the redelivery, 2 s on
        [redelivered] = await collect(bus, "lg.frame.l1.*", stream_name("frame"), 1)
        await bus.publish(subject("trigger", "l1", "s1"), second, msg_id=msg_id(second.part.inspection_id, "trigger"))
        frames = [Frame.FromString(m.data) for m in await collect(bus, "lg.frame.l1.*", stream_name("frame"), 2)]
    assert Frame.FromString(redelivered.data).part == first.part
    uris = {f.part.sequence: f.source_uri for f in frames}
    # The first grab (the playlist's first board) went out with the redelivery; the next trigger got the next.
    assert uris == {51: "simulator:00041000_test.jpg", 52: "simulator:00041000_test.jpg#repaired"}


async def test_capture_refuses_to_start_when_the_server_cannot_carry_its_frames(tmp_path, line_config_dict) -> None:
    with EmbeddedNats(store_dir=tmp_path / "nats", max_payload=1024 * 1024) as small:
        config = LineConfig(**line_config_dict(nats_url=small.url))
        with pytest.raises(
            PayloadLimitError,
            match=r"takes messages up to 1048576 bytes, but "
            r"nats.inline_image_max_bytes is 4194304",
        ):
            async with running_service("capture", config, capture_setup):
                pass
