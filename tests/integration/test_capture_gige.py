"""The gige camera kind and `lineguard camera` against Aravis's own fake GigE Vision camera on loopback (real GVCP
control and GVSP stream packets), through the capture service on a real nats-server: discovery, a trigger
becoming a frame, settings read back, the camera killed and started again mid-run, a camera that is not there,
a feature it does not have, lost packets resent and counted.

Skipped on a development machine without Aravis; in CI (CI=true) a missing Aravis fails them instead."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from lineguard.bus import DEAD_REASON
from lineguard.cameras import aravis
from lineguard.cli import app
from lineguard.config import LineConfig
from lineguard.contracts import dead_subject, msg_id, stream_name, subject
from lineguard.imaging import decode_image
from lineguard.natsserver import EmbeddedNats
from lineguard.services.capture.frames import CaptureError, StationCameras
from lineguard.services.capture.service import setup as capture_setup
from lineguard.services.capture.sources import CameraError, gige
from lineguard.testing import running_service
from lineguard.testing.fake_gige import FakeGigeCamera, fake_camera_installed
from lineguard.testing.records import triggered_part
from lineguard.testing.streams import collect, heartbeat
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.heartbeat_pb2 import HealthStatus, Heartbeat
from lineguard.v1.trigger_pb2 import Trigger


def _aravis_present() -> bool:
    if not fake_camera_installed() or importlib.util.find_spec("gi") is None:
        return False
    try:
        aravis.aravis()
    except aravis.AravisUnavailable:
        return False
    return True


pytestmark = [
    pytest.mark.gige,
    pytest.mark.skipif(
        os.environ.get("CI") != "true" and not _aravis_present(),
        reason=f"Aravis is not installed here (CI runs these): {aravis.INSTALL_HINT}",
    ),
]
SERIAL = "LG-FAKE-1"


@pytest.fixture
def fake() -> Iterator[FakeGigeCamera]:
    with FakeGigeCamera(SERIAL) as camera:
        yield camera


def gige_line(line_config_dict: Any, nats_url: str, **camera: Any) -> LineConfig:
    raw = line_config_dict(nats_url=nats_url, deadline_ms=10_000)
    raw["stations"][0]["camera"] = {"kind": "gige", "serial": SERIAL, **camera}
    raw["services"] = {"capture": {"heartbeat_s": 0.2}}
    return LineConfig(**raw)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_discovery_finds_the_camera_and_opens_it_by_serial_user_id_and_address(fake: FakeGigeCamera) -> None:
    found = {d.serial: d for d in aravis.discover()}
    assert found[SERIAL].address == "127.0.0.1"
    assert found[SERIAL].device_id == f"Aravis-Fake-{SERIAL}"
    aravis.write_user_id(aravis.open_camera(aravis.Selector(serial=SERIAL)), "cell3-top")
    for selector in (
        aravis.Selector(serial=SERIAL),
        aravis.Selector(user_id="cell3-top"),
        aravis.Selector(address="127.0.0.1"),
    ):
        assert aravis.open_camera(selector).get_device_serial_number() == SERIAL, selector
    assert [d.user_id for d in aravis.with_user_ids(aravis.discover()) if d.serial == SERIAL] == ["cell3-top"]


async def test_a_trigger_becomes_a_frame_through_the_capture_service(
    fake: FakeGigeCamera, fresh_nats: EmbeddedNats, bus_factory, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    config = gige_line(line_config_dict, fresh_nats.url, roi={"x": 16, "y": 8, "width": 320, "height": 240})
    labels = {"station": "s1", "camera": "gige:s1"}
    received = sample("lineguard_camera_packets_total", **labels, outcome="received")
    trig = Trigger(part=triggered_part(7), source="plc")
    async with running_service("capture", config, capture_setup):
        assert sample("lineguard_camera_connected", **labels) == 1
        await bus.publish(subject("trigger", "l1", "s1"), trig, msg_id=msg_id(trig.part.inspection_id, "trigger"))
        [message] = await collect(bus, "lg.frame.l1.*", stream_name("frame"), 1)
    frame = Frame.FromString(message.data)
    assert frame.part == trig.part
    assert (frame.camera_id, frame.width, frame.height, frame.channels, frame.encoding) == (
        "gige:s1",
        320,
        240,
        1,
        "png",
    )
    assert frame.source_uri.startswith(f"gige://127.0.0.1:3956/{SERIAL}#frame=")
    assert decode_image(frame.data, grey=True).shape == (240, 320)
    # The frame was exposed after the trigger reached capture, not taken from an earlier buffer.
    assert frame.captured_unix_ns > trig.part.triggered_unix_ns
    assert sample("lineguard_camera_packets_total", **labels, outcome="received") > received


def test_settings_are_set_at_open_and_read_back(fake: FakeGigeCamera) -> None:
    settings = gige.Settings(serial=SERIAL, exposure_us=1234.0, gain=3.0, roi={"width": 200, "height": 100})
    source = gige.open_camera("s1", settings)
    try:
        image = source.grab(triggered_part(1))
        assert (image.width, image.height) == (200, 100)
        # Read back by another client, as a controls engineer would (`lineguard camera features`).
        result = CliRunner().invoke(app, ["camera", "features", "127.0.0.1"])
        assert result.exit_code == 0, result.output
        values = {line.split()[0]: line.split()[2] for line in result.output.splitlines()[1:] if len(line.split()) > 2}
        assert values["ExposureTimeAbs"] == "1234"
        assert (values["Width"], values["Height"]) == ("200", "100")
        assert values["TriggerMode"] == "On" and values["TriggerSource"] == "Software"
    finally:
        source.close()


def test_the_cli_lists_and_grabs(fake: FakeGigeCamera, tmp_path: Path) -> None:
    listed = CliRunner().invoke(app, ["camera", "list"])
    assert listed.exit_code == 0, listed.output
    assert SERIAL in listed.output and "127.0.0.1" in listed.output
    out = tmp_path / "x.png"
    grabbed = CliRunner().invoke(app, ["camera", "grab", "--camera", SERIAL, "--out", str(out)])
    assert grabbed.exit_code == 0, grabbed.output
    image = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape == (512, 512)
    missing = CliRunner().invoke(app, ["camera", "grab", "--camera", "NOPE", "--out", str(out)])
    assert missing.exit_code == 1
    assert f"no GigE Vision camera with serial 'NOPE' on the network (found: Aravis-Fake-{SERIAL}" in missing.output


async def test_the_camera_killed_and_started_again_mid_run(
    fake: FakeGigeCamera, fresh_nats: EmbeddedNats, bus_factory, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    config = gige_line(line_config_dict, fresh_nats.url, grab_timeout_ms=500, reconnect_min_s=0.2, reconnect_max_s=1)
    labels = {"station": "s1", "camera": "gige:s1"}
    reconnects = sample("lineguard_camera_reconnects_total", **labels)
    before, during, after = (Trigger(part=triggered_part(seq), source="plc") for seq in (1, 2, 3))

    async def send(trig: Trigger) -> None:
        await bus.publish(subject("trigger", "l1", "s1"), trig, msg_id=msg_id(trig.part.inspection_id, "trigger"))

    async def health(status: int) -> Heartbeat:
        return await heartbeat(bus, "capture", lambda beat: beat.status == status)

    async with running_service("capture", config, capture_setup):
        await send(before)
        await collect(bus, "lg.frame.l1.*", stream_name("frame"), 1)
        fake.kill()
        started = time.monotonic()
        await send(during)
        [dead] = await collect(bus, dead_subject("trigger"), stream_name("dead"), 1)
        # Not a stall: the trigger is refused within the grab's timeout, naming the camera.
        assert time.monotonic() - started < 5
        assert "camera gige:s1 (serial 'LG-FAKE-1')" in dead.headers[DEAD_REASON]
        assert Trigger.FromString(dead.data) == during
        degraded = await health(HealthStatus.HEALTH_STATUS_DEGRADED)
        assert degraded.detail.startswith("station s1: camera gige:s1 (serial 'LG-FAKE-1') disconnected: ")
        assert sample("lineguard_camera_connected", **labels) == 0
        await asyncio.to_thread(fake.start)
        await health(HealthStatus.HEALTH_STATUS_OK)
        assert sample("lineguard_camera_connected", **labels) == 1
        await send(after)
        frames = await collect(bus, "lg.frame.l1.*", stream_name("frame"), 2)
    assert [Frame.FromString(m.data).part.sequence for m in frames] == [1, 3]
    assert sample("lineguard_camera_reconnects_total", **labels) == reconnects + 1


async def test_a_camera_that_is_not_there_is_reported_and_refused_while_the_line_runs(
    fake: FakeGigeCamera, fresh_nats: EmbeddedNats, bus_factory, line_config_dict
) -> None:
    bus = await bus_factory("driver")
    config = gige_line(line_config_dict, fresh_nats.url, serial="NOPE")
    trig = Trigger(part=triggered_part(1), source="plc")
    async with running_service("capture", config, capture_setup):
        await bus.publish(subject("trigger", "l1", "s1"), trig, msg_id=msg_id(trig.part.inspection_id, "trigger"))
        [dead] = await collect(bus, dead_subject("trigger"), stream_name("dead"), 1)
    reason = dead.headers[DEAD_REASON]
    assert "camera gige:s1 (serial 'NOPE') disconnected: no GigE Vision camera with serial 'NOPE'" in reason
    assert f"(found: Aravis-Fake-{SERIAL} at 127.0.0.1)" in reason


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"features": {"Gamma": 0.8}}, "the Aravis Fake has no feature 'Gamma'"),
        ({"pixel_format": "Mono12"}, "the Aravis Fake has no pixel format 'Mono12' (it has: BayerBG8"),
        ({"exposure_us": 5e7}, "the Aravis Fake takes ExposureTime 10 to 1e+07 µs, not 5e+07"),
        ({"trigger": "hardware", "hardware_source": "Line3"}, "the Aravis Fake has no TriggerSource 'Line3'"),
        ({"roi": {"x": 2000, "width": 100, "height": 100}}, "lies outside the Aravis Fake's 2048x2048 sensor"),
    ],
)
def test_a_setting_the_camera_does_not_have_is_an_error_at_open(
    fake: FakeGigeCamera, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(CameraError) as err:
        gige.open_camera("s1", gige.Settings(serial=SERIAL, **settings))
    assert str(err.value).startswith("camera gige:s1 (serial 'LG-FAKE-1'): ")
    assert message in str(err.value)


def test_hardware_trigger_takes_the_first_frame_after_the_trigger(fake: FakeGigeCamera) -> None:
    # The fake has no trigger line: free run (no hardware_source) stands in for frames a line triggers.
    # The fake sends a frame every 40 ms; the window leaves room for a busy machine.
    settings = gige.Settings(serial=SERIAL, trigger="hardware", match_lead_ms=0, match_window_ms=500)
    source = gige.open_camera("s1", settings)
    try:
        parts, images = [], []
        for seq in range(3):
            parts.append(triggered_part(seq))  # triggered now
            images.append(source.grab(parts[-1]))
        assert all(image.captured_unix_ns >= p.triggered_unix_ns for image, p in zip(images, parts, strict=True))
        assert len({image.source_uri for image in images}) == 3  # each trigger its own frame
        late = triggered_part(9)
        late.triggered_unix_ns -= 2_000_000_000  # a trigger whose frame went by long ago
        with pytest.raises(CameraError, match=r"no frame arrived within 500 ms after the trigger"):
            source.grab(late)
    finally:
        source.close()


def test_free_run_keeps_the_pool_going_between_triggers_and_serves_the_lead(fake: FakeGigeCamera) -> None:
    # Frames no trigger takes stay in their buffers (a quarter of the pool) and go back unread: the camera does not
    # run out of buffers while the line is idle, and a trigger still finds a frame of its lead time.
    labels = {"station": "s5", "camera": "gige:s5"}
    underruns = sample("lineguard_camera_frames_total", **labels, outcome="underruns")
    settings = gige.Settings(serial=SERIAL, trigger="hardware", buffers=8, match_lead_ms=300, match_window_ms=500)
    source = gige.open_camera("s5", settings)
    try:
        time.sleep(1.0)  # some 25 frames at the fake's 25 frames/s, none taken
        part = triggered_part(1, station="s5")
        image = source.grab(part)
        # The earliest frame still held (2 buffers of 8: up to 80 ms old), from before the trigger, within its lead.
        assert part.triggered_unix_ns - 300_000_000 <= image.captured_unix_ns < part.triggered_unix_ns
        assert decode_image(image.data, grey=True).shape == (image.height, image.width)
        after = triggered_part(2, station="s5")
        later = source.grab(after)
        assert later.captured_unix_ns > image.captured_unix_ns
        assert later.source_uri != image.source_uri
    finally:
        source.close()
    # A source that kept its buffers would have lost the 17 frames after the pool ran dry; a busy machine may
    # stall the reader (or a frame waiting for a resend) long enough to lose one or two.
    assert sample("lineguard_camera_frames_total", **labels, outcome="underruns") - underruns <= 3


def test_a_trigger_line_keeps_every_frame_for_triggers_that_lag_behind(fake: FakeGigeCamera) -> None:
    # The fake's Line0 never fires; its Software source stands in for the line, pulsed here through the source's
    # own control channel (the only one that may write) as a sensor would. With a trigger line every frame is
    # some part's: frames beyond the held quarter of the pool are copied out, not dropped.
    settings = gige.Settings(
        serial=SERIAL, trigger="hardware", hardware_source="Software", buffers=4, match_lead_ms=0, match_window_ms=1500
    )
    source = gige.open_camera("s6", settings)
    try:
        since = time.time_ns()
        conn = source._conn  # type: ignore[attr-defined]
        for _ in range(8):  # the PLC's triggers come late: all the frames before the first grab
            conn.camera.software_trigger()
            time.sleep(0.08)  # the fake answers one trigger per 40 ms
        ids = []
        with pytest.raises(CameraError, match="no frame arrived within 1500 ms"):
            for seq in range(20):
                part = triggered_part(seq, station="s6")
                part.triggered_unix_ns = since
                image = source.grab(part)
                assert image.captured_unix_ns >= since
                ids.append(int(image.source_uri.rsplit("=", 1)[1]))
        # Each frame the camera delivered whole reached a trigger, in order, once (a trigger the busy fake missed
        # sends no frame).
        assert len(ids) == aravis.stream_counters(conn.stream)["completed_buffers"] >= 5
        assert ids == sorted(set(ids))
    finally:
        source.close()


def test_a_frame_with_lost_packets_is_refused_naming_it_and_the_losses_are_counted() -> None:
    # The fake drops 2% of its stream packets and does not answer resend requests (Aravis 0.8.26): a 512x512
    # frame (228 packets) is then as good as never whole, a truncated frame as a bad cable gives.
    labels = {"station": "s7", "camera": "gige:s7"}
    missing = sample("lineguard_camera_packets_total", **labels, outcome="missing")
    requests = sample("lineguard_camera_packets_total", **labels, outcome="resend_requests")
    failures = sample("lineguard_camera_frames_total", **labels, outcome="failures")
    with FakeGigeCamera(SERIAL, lost_per_thousand=20):
        source = gige.open_camera("s7", gige.Settings(serial=SERIAL, grab_timeout_ms=2000))
        try:
            with pytest.raises(CameraError, match=r"camera gige:s7 \(serial 'LG-FAKE-1'\): frame \d+ is incomplete"):
                for seq in range(5):
                    source.grab(triggered_part(seq, station="s7"))
            assert source.problem() is None  # a lossy stream is not a lost camera
        finally:
            source.close()
    assert sample("lineguard_camera_packets_total", **labels, outcome="missing") > missing
    assert sample("lineguard_camera_packets_total", **labels, outcome="resend_requests") > requests
    assert sample("lineguard_camera_frames_total", **labels, outcome="failures") > failures


def test_a_product_change_sets_the_recipes_exposure_and_gain_between_parts(
    fake: FakeGigeCamera, line_config_dict: Any
) -> None:
    raw = line_config_dict(deadline_ms=10_000)
    raw["stations"][0]["camera"] = {"kind": "gige", "serial": SERIAL, "exposure_us": 1500.0, "gain": 1.0}
    raw["recipes"]["pcb-a"]["camera"] = {"exposure_us": 2500.0, "gain": 4.0}
    raw["recipes"]["bright"] = {**raw["recipes"]["pcb-a"], "camera": {"exposure_us": 800.0}}  # gain: the station's
    raw["recipes"]["too-long"] = {**raw["recipes"]["pcb-a"], "camera": {"exposure_us": 9e9}}
    cameras = StationCameras.from_config(LineConfig(**raw))

    def read_back() -> tuple[float, float]:
        # By another client of the camera (as `lineguard camera features` reads it), not the source's own objects.
        other = aravis.open_camera(aravis.Selector(address="127.0.0.1"))
        return other.get_exposure_time(), other.get_gain()

    try:
        assert read_back() == (1500.0, 1.0)  # the station's, set at open
        cameras.capture(Trigger(part=triggered_part(1, recipe="pcb-a")))
        assert read_back() == (2500.0, 4.0)
        cameras.capture(Trigger(part=triggered_part(2, recipe="bright")))
        assert read_back() == (800.0, 1.0)
        # A setting the camera cannot take fails that part, naming it; the settings in force stay, the next is served.
        with pytest.raises(CaptureError, match=r"product's camera settings: .* takes ExposureTime 10 to 1e\+07 µs"):
            cameras.capture(Trigger(part=triggered_part(3, recipe="too-long")))
        assert read_back() == (800.0, 1.0)
        frame = cameras.capture(Trigger(part=triggered_part(4, recipe="pcb-a")))
        assert frame.width > 0 and read_back() == (2500.0, 4.0)
    finally:
        cameras.close()


@pytest.mark.parametrize("trigger", ["software", "hardware"])
def test_a_bmp_frame_holds_the_pixels_the_camera_sent(fake: FakeGigeCamera, trigger: str) -> None:
    # BMP is written by numpy on the gige path (rows top-down): the same frame as OpenCV's BMP for every consumer.
    # The first frame after the stream starts may come late on a busy machine: a wide window for the hardware one.
    settings = gige.Settings(
        serial=SERIAL, encoding="bmp", trigger=trigger, roi={"width": 203, "height": 101}, match_window_ms=2000
    )
    source = gige.open_camera("s1", settings)
    try:
        image = source.grab(triggered_part(1))
    finally:
        source.close()
    assert image.pixels is not None and image.pixels.shape == (101, 203)
    assert (image.encoding, image.width, image.height, image.channels) == ("bmp", 203, 101, 1)
    assert np.array_equal(decode_image(image.data, grey=True, expected_encoding="bmp"), image.pixels)
    assert np.array_equal(cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_GRAYSCALE), image.pixels)
