"""Frames over the NATS server's max_payload go through the JetStream object store (lineguard.bus.bigframes): capture
stores the image in the lg-frames bucket and the frame message carries its key; inference and OCR read it back and
judge it as any frame. An image no longer in the bucket is dead-lettered with the reason. On a secured server each
identity does only its part: capture writes, the frames' readers read, the others can do neither."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from nats.js.api import ObjectMeta

from lineguard.bus import DEAD_REASON, Bus
from lineguard.bus.bigframes import FRAMES_BUCKET, fetch_image, frames_bucket, object_name, offload
from lineguard.bus.provision import provision_line
from lineguard.config import LineConfig
from lineguard.contracts import dead_subject, msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.services.capture.service import setup as capture_setup
from lineguard.services.capture.stamping import stamp_serial
from lineguard.services.inference.service import setup as inference_setup
from lineguard.services.ocr.service import setup as ocr_setup
from lineguard.testing import running_service
from lineguard.testing.records import triggered_part
from lineguard.testing.streams import collect
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult
from lineguard.v1.trigger_pb2 import Trigger

MAX_PAYLOAD = 1024 * 1024
INLINE = 256 * 1024
SERIAL = "LG-00000007"


@pytest.fixture
def small_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A server that takes messages of 1 MiB at most."""
    server = EmbeddedNats(store_dir=tmp_path / "nats", max_payload=MAX_PAYLOAD).start()
    yield server
    server.stop()


@pytest.fixture
async def secured_small_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats.secured(tmp_path / "nats", tmp_path / "creds", "l1", max_payload=MAX_PAYLOAD).start()
    try:
        await provision_line(server.settings())
        yield server
    finally:
        server.stop()


def big_png(path: Path) -> bytes:
    """640 x 800: 640 x 640 of colour noise (PNG cannot shrink it: 1.2 MB) above the serial's strip."""
    noise = np.random.default_rng(7).integers(0, 256, (640, 640, 3), dtype=np.uint8)
    cv2.imwrite(str(path), stamp_serial(noise, SERIAL))
    return path.read_bytes()


async def test_a_frame_over_max_payload_goes_through_the_object_store_to_inference_and_ocr(
    small_nats: EmbeddedNats, line_config_dict, tmp_path: Path
) -> None:
    (tmp_path / "camera").mkdir()
    image = big_png(tmp_path / "camera" / "board.png")
    assert len(image) > MAX_PAYLOAD
    reference = tmp_path / "reference.png"  # the shipped model compares with one: flat grey, a few KB
    cv2.imwrite(str(reference), np.full((800, 640, 3), 128, np.uint8))
    raw = line_config_dict(nats_url=small_nats.url, deadline_ms=20_000, model={"intra_op_threads": 1})
    raw["nats"]["inline_image_max_bytes"] = INLINE
    raw["stations"][0]["camera"] = {"kind": "folder", "path": str(tmp_path / "camera"), "reference": str(reference)}
    config = LineConfig(**raw)
    bus = await Bus.connect(config.nats, "driver")
    trig = Trigger(part=triggered_part(7), source="plc")
    try:
        async with (
            running_service("capture", config, capture_setup),
            running_service("ocr", config, ocr_setup),
            running_service("inference", config, inference_setup),
        ):
            await bus.publish(subject("trigger", "l1", "s1"), trig, msg_id=msg_id(trig.part.inspection_id, "trigger"))
            [message] = await collect(bus, "lg.frame.l1.*", stream_name("frame"), 1)
            [ocr] = await collect(bus, "lg.ocr.l1.*", stream_name("ocr"), 1)
            [inference] = await collect(bus, "lg.inference.l1.*", stream_name("inference"), 1, timeout=60)
            # An image that is not (or no longer) in the bucket: said, not retried forever, the services serve on.
            gone = Frame(part=triggered_part(8), camera_id="folder:s1", encoding="png", object_key="l1/s1/gone/1")
            await bus.publish(subject("frame", "l1", "s1"), gone, msg_id=msg_id(gone.part.inspection_id, "frame"))
            dead = await collect(bus, dead_subject("frame"), stream_name("dead"), 2)
        stored = await (await frames_bucket(bus.js)).get(Frame.FromString(message.data).object_key)
    finally:
        await bus.close()
    frame = Frame.FromString(message.data)
    assert len(message.data) < INLINE  # the message carries the key and the small reference, not the image
    assert frame.WhichOneof("payload") == "object_key"
    assert frame.object_key == object_name(frame) == f"l1/s1/{trig.part.inspection_id}/{frame.captured_unix_ns}"
    assert stored.data == image  # the file's bytes, untouched
    assert (frame.width, frame.height, frame.encoding) == (640, 800, "png")
    read = OcrResult.FromString(ocr.data)
    assert read.part == trig.part and [c.text for c in read.codes] == [SERIAL]  # the bytes came back whole
    judged = InferenceResult.FromString(inference.data)
    assert judged.part == trig.part and not judged.refused and (judged.image_width, judged.image_height) == (640, 800)
    reasons = {d.headers[DEAD_REASON] for d in dead}
    assert reasons == {
        f"frame of inspection {gone.part.inspection_id}: its image 'l1/s1/gone/1' is not in the object store "
        f"{FRAMES_BUCKET} (older than the bucket keeps, or never stored)"
    }


async def test_on_a_secured_server_capture_writes_the_readers_read_and_no_one_else(
    secured_small_nats: EmbeddedNats,
) -> None:
    settings = secured_small_nats.settings(publish_timeout_s=2.0)
    buses = {name: await Bus.connect(settings, name) for name in ("capture", "inference", "ocr", "results", "decision")}
    try:
        data = np.random.default_rng(1).integers(0, 256, 3 * MAX_PAYLOAD // 2, dtype=np.uint8).tobytes()
        frame = Frame(part=triggered_part(1), camera_id="gige:s1", captured_unix_ns=5, encoding="png", data=data)
        await offload(await frames_bucket(buses["capture"].js), frame, INLINE)
        assert frame.object_key == f"l1/s1/{frame.part.inspection_id}/5" and not frame.data
        for reader in ("inference", "ocr", "results"):
            copy = Frame.FromString(frame.SerializeToString())
            await fetch_image(await frames_bucket(buses[reader].js), copy)
            assert copy.data == data, reader
        with pytest.raises(Exception, match=r"(?i)permissions violation|timeout"):
            copy = Frame.FromString(frame.SerializeToString())
            await fetch_image(await frames_bucket(buses["decision"].js), copy)
        # A reader cannot write: not even a new object.
        bucket = await frames_bucket(buses["inference"].js)
        with pytest.raises(Exception, match=r"(?i)permissions violation|timeout"):
            await bucket.put("l1/s1/forged/1", b"x" * 10, meta=ObjectMeta(name="l1/s1/forged/1"))
    finally:
        for bus in buses.values():
            await bus.close()
