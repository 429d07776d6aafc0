"""Capture from a GigE Vision camera: capture's gige source against a raw Aravis buffer loop, same fake camera,
same run.

Camera: Aravis's fake GigE Vision camera (arv-fake-gv-camera-0.8) on 127.0.0.1, real GVCP and GVSP packets over
loopback, set to --width x --height Mono8 and AcquisitionFrameRate --camera-fps. --mode freerun (the default): the
camera free-runs and each ask takes the first frame that arrives after it (the gige source's `trigger: hardware`
matching; the raw loop pops until a buffer's arrival time is after the ask). --mode software: a TriggerSoftware per
ask; Aravis 0.8.26's fake camera answers software triggers only every 40 ms whatever its frame rate, so both
sides then measure the fake's 25 Hz.

gige: `open_camera("s1", gige.Settings(...)).grab(part)`: what capture calls per trigger. Free run: the source's
reader thread pops every buffer and holds the newest in their buffers (a quarter of the pool); grab takes the
frame matching the part's trigger time, copies its pixels out (pixel format and size checked), hands the buffer
back and encodes the pixels as --encoding. Software: stale buffers back to the pool, TriggerSoftware, the buffer
waited for on the grab thread, the same checks, copy and encoding.

raw: the same camera settings and pool through Aravis directly: (TriggerSoftware,) timeout_pop_buffer, a status
check, the taken frame's pixels copied out with the same lineguard.cameras.aravis.buffer_image (a frame is no use
once its buffer is back in the pool), push_buffer: no encoding, no thread, no matching. The difference is
lineguard's own: the reader thread's handoff, the matching, the encoding, the CapturedImage.

Each sample is one trigger to its frame in hand (latency); frames/s is samples over the loop's time; lost frames
are the whole frames each side's stream lost in its run (Aravis's missing_frames: each one a 100 ms stall). Rounds
alternate which side goes first; the figures are medians over rounds with their ranges; the last line is JSON.

--encode: the BMP encoding alone, on --frames frames taken from the same fake camera (its own pattern, copied out
with buffer_image): what the gige source writes (lineguard.imaging.encode_bmp, numpy) against OpenCV's writer
(encode_image(pixels, "bmp"), what it wrote before), each frame's median CPU µs over --repeat calls, rounds
alternating which goes first; ratio_us = numpy / OpenCV.

    python benchmarks/capture.py [--frames 300] [--rounds 5] [--width 512 --height 512] [--encoding bmp]
                                 [--mode freerun|software] [--camera-fps 1000]
    python benchmarks/capture.py --encode [--frames 30] [--rounds 7] [--repeat 50]

--latency-5mp: trigger -> Frame on the bus for the biggest Mono8 frame the fake gives (2048 x 2048, 4 MiB: its
Width/Height top out at 2048, so not a 2448 x 2048 5 MP sensor), through the object store (4 MiB + the BMP header
is over nats.inline_image_max_bytes). gige: the capture service (in this process, its gige source, trigger
software) on a real nats-server; each sample is a Trigger published on the bus to the Frame message with its
object_key received. raw: the same camera settings through Aravis directly: TriggerSoftware, the buffer popped,
its pixels copied out, put into the same lg-frames bucket by bare nats-py (the same chunk size, no encoding, no
protobuf, no quality figures). Rounds alternate which side goes first, each side opening the camera afresh.
The fake starts a triggered frame only on its own 25 Hz tick (0-40 ms after the trigger) and sends some 3,000
packets from user space, so both sides carry that: the p99 target is for a camera that exposes on the trigger;
added_p50_ms and the ratios are lineguard's own share. raw_camera_* (trigger to pixels in hand) and raw_put_*
(the bucket's put alone) split the raw side.

    python benchmarks/capture.py --latency-5mp [--frames 30] [--rounds 5] [--encoding bmp|png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import nats
import numpy as np
from nats.js.api import ObjectMeta, ObjectMetaOptions
from prometheus_client import REGISTRY

from lineguard.bus import Bus
from lineguard.bus.bigframes import FRAMES_BUCKET
from lineguard.cameras import aravis
from lineguard.config import LineConfig, NatsSettings
from lineguard.contracts import msg_id, subject
from lineguard.imaging import encode_bmp, encode_image
from lineguard.natsserver import EmbeddedNats
from lineguard.services.capture.service import setup as capture_setup
from lineguard.services.capture.sources import gige
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import running_service
from lineguard.testing.fake_gige import FakeGigeCamera
from lineguard.testing.latency import latency_figures, round_line, side_by_side, timed
from lineguard.testing.records import triggered_part
from lineguard.testing.rounds import medians_and_ranges
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.trigger_pb2 import Trigger

SERIAL = "LG-BENCH-1"


def settings(args: argparse.Namespace) -> gige.Settings:
    hardware = args.mode == "freerun"
    return gige.Settings(
        serial=SERIAL,
        trigger="hardware" if hardware else "software",
        match_lead_ms=0,  # free run: the first frame that arrives after the ask
        match_window_ms=2000,
        roi={"width": args.width, "height": args.height},
        encoding=args.encoding,
        buffers=args.buffers,
        features={"AcquisitionFrameRate": float(args.camera_fps)},
        grab_timeout_ms=5000,
    )


def lost_frames(station: str) -> float:
    """Whole frames the gige source's stream lost (Aravis's missing_frames, as the source counts them)."""
    labels = {"station": station, "camera": f"gige:{station}", "outcome": "missing"}
    return REGISTRY.get_sample_value("lineguard_camera_frames_total", labels) or 0.0


def run_gige(args: argparse.Namespace) -> tuple[list[float], float]:
    before = lost_frames("s1")
    source = gige.open_camera("s1", settings(args))
    try:
        latencies = timed(lambda seq: source.grab(Part(sequence=seq, triggered_unix_ns=time.time_ns())), args.frames)
    finally:
        source.close()  # type: ignore[attr-defined]  # counts the stream's last figures
    return latencies, lost_frames("s1") - before


def run_raw(args: argparse.Namespace) -> tuple[list[float], float]:
    arv = aravis.aravis()
    s = settings(args)
    camera = aravis.open_camera(s.selector)
    aravis.configure(
        camera,
        pixel_format=s.pixel_format,
        region=aravis.Region(0, 0, args.width, args.height),
        trigger_source="Software" if args.mode == "software" else None,
        extra=s.features,
    )
    stream = camera.create_stream(None, None)
    stream.set_property("packet-resend", arv.GvStreamPacketResend.ALWAYS)
    payload = camera.get_payload()
    for _ in range(s.buffers):
        stream.push_buffer(arv.Buffer.new_allocate(payload))
    camera.start_acquisition()
    try:

        def one() -> None:
            asked = time.time_ns()
            if args.mode == "software":
                camera.software_trigger()
            while True:
                buffer = stream.timeout_pop_buffer(5_000_000)
                if buffer is None:
                    raise RuntimeError("raw loop: no frame within 5 s")
                complete = buffer.get_status() == arv.BufferStatus.SUCCESS
                arrived = buffer.get_system_timestamp()
                # Free run: the first frame that arrived after the ask, the rule the gige side applies.
                taken = complete and (args.mode == "software" or arrived >= asked)
                try:
                    if taken:
                        # Its pixels out of the buffer before it goes back to the pool: what any user of a
                        # frame must do, the same single copy the gige side makes of the frame it takes.
                        aravis.buffer_image(buffer, s.pixel_format)
                finally:
                    stream.push_buffer(buffer)
                if taken:
                    return
                if not complete and args.mode == "software":  # the gige side fails that grab too
                    raise RuntimeError("raw loop: the triggered frame is incomplete")
                # Free run: an incomplete frame skipped, as the gige side's reader does.

        latencies = timed(lambda _: one(), args.frames)
        return latencies, float(aravis.stream_counters(stream).get("missing_frames", 0))
    finally:
        camera.stop_acquisition()


def camera_frames(args: argparse.Namespace) -> list[np.ndarray]:
    """--frames frames from the fake camera, free-running, each copied out of its buffer."""
    arv = aravis.aravis()
    s = settings(args)
    camera = aravis.open_camera(s.selector)
    aravis.configure(
        camera, pixel_format=s.pixel_format, region=aravis.Region(0, 0, args.width, args.height), extra=s.features
    )
    stream = camera.create_stream(None, None)
    for _ in range(s.buffers):
        stream.push_buffer(arv.Buffer.new_allocate(camera.get_payload()))
    camera.start_acquisition()
    frames: list[np.ndarray] = []
    try:
        while len(frames) < args.frames:
            buffer = stream.timeout_pop_buffer(5_000_000)
            if buffer is None:
                raise RuntimeError("no frame from the fake camera within 5 s")
            try:
                if buffer.get_status() == arv.BufferStatus.SUCCESS:
                    frames.append(aravis.buffer_image(buffer, s.pixel_format))
            finally:
                stream.push_buffer(buffer)
    finally:
        camera.stop_acquisition()
    return frames


ENCODERS = {"numpy": encode_bmp, "opencv": lambda pixels: encode_image(pixels, "bmp")}


def encode_us(encode: Any, frames: list[np.ndarray], repeat: int) -> float:
    """The median over frames of each frame's median CPU µs to encode."""
    per_frame = []
    for pixels in frames:
        samples = []
        for _ in range(repeat):
            started = time.thread_time_ns()
            encode(pixels)
            samples.append((time.thread_time_ns() - started) / 1000)
        per_frame.append(statistics.median(samples))
    return statistics.median(per_frame)


def main_encode(args: argparse.Namespace) -> None:
    with FakeGigeCamera(SERIAL):
        frames = camera_frames(args)
    for pixels in frames:  # what each consumer decodes is the frame, whichever writer wrote it
        if not all(np.array_equal(cv2.imdecode(np.frombuffer(e(pixels), np.uint8), -1), pixels)
                   for e in ENCODERS.values()):  # fmt: skip
            raise AssertionError("a BMP did not decode to the frame's pixels")
    rounds = []
    for r in range(args.rounds):
        order = list(ENCODERS) if r % 2 == 0 else list(reversed(ENCODERS))
        got = {name: encode_us(ENCODERS[name], frames, args.repeat) for name in order}
        row = {"numpy_us": got["numpy"], "opencv_us": got["opencv"], "ratio_us": got["numpy"] / got["opencv"]}
        rounds.append(row)
        print(json.dumps({"round": r + 1, **{k: round(v, 3) for k, v in row.items()}}), flush=True)
    summary = {
        "benchmark": "capture --encode",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "frames": len(frames),
        "size": f"{args.width}x{args.height} Mono8",
        "load": round(os.getloadavg()[0], 2),
        **medians_and_ranges(rounds, digits=3),
    }
    print(json.dumps(summary))


def one_round(args: argparse.Namespace, order: list[tuple[str, Any]]) -> dict[str, float]:
    """Both sides once in `order`: their latency figures, the ratio, and the whole frames each stream lost."""
    figures, lost = {}, {}
    for name, run in order:
        latencies, lost[name] = run(args)
        figures[name] = latency_figures(latencies)
    flat = side_by_side(figures, "gige")
    flat.update({f"{name}_lost_frames": value for name, value in lost.items()})
    return flat


# --- --latency-5mp: trigger -> Frame on the bus, the biggest frame the fake gives, through the object store

BIG = (2048, 2048)  # the fake's Width and Height bounds


def big_camera(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kind": "gige",
        "serial": SERIAL,
        "trigger": "software",
        "roi": {"width": BIG[0], "height": BIG[1]},
        "encoding": args.encoding,
        "buffers": args.buffers,
        "grab_timeout_ms": 5000,
    }


async def gige_triggers(args: argparse.Namespace, config: LineConfig, url: str) -> list[float]:
    bus = await Bus.connect(NatsSettings(url=url), "bench-driver")
    frames: asyncio.Queue[bytes] = asyncio.Queue()

    async def arrived(msg: Any) -> None:
        await frames.put(msg.data)

    sub = await bus.nc.subscribe(subject("frame", "l1", "s1"), cb=arrived)
    latencies, offloaded = [], 0
    try:
        async with running_service("capture", config, capture_setup):
            for n in range(args.frames + 1):  # the first one warms up (lazy imports, the bucket's first put)
                trig = Trigger(part=triggered_part(n + 1), source="plc")
                started = time.perf_counter()
                await bus.publish(subject("trigger", "l1", "s1"), trig, msg_id=msg_id(trig.part.inspection_id, "t"))
                frame = Frame.FromString(await asyncio.wait_for(frames.get(), 30))
                took = time.perf_counter() - started
                if frame.part.inspection_id != trig.part.inspection_id:
                    raise AssertionError(f"frame of {frame.part.inspection_id}, not of the trigger's part")
                if n:
                    latencies.append(took)
                    offloaded += frame.WhichOneof("payload") == "object_key"
    finally:
        await sub.unsubscribe()
        await bus.close()
    # A PNG of the fake's smooth ramp is some 32 KB: inline, not through the object store (say so, not hide it).
    print(f"gige: {offloaded} of {len(latencies)} frames through the object store", flush=True)
    return latencies


async def raw_triggers(args: argparse.Namespace, url: str, chunk: int) -> tuple[list[float], list[float], list[float]]:
    """Each trigger to its pixels in the bucket, to its pixels in hand (the camera's share), and the put alone."""
    arv = aravis.aravis()
    nc = await nats.connect(url)
    bucket = await nc.jetstream().object_store(FRAMES_BUCKET)
    camera = aravis.open_camera(aravis.Selector(serial=SERIAL))
    aravis.configure(
        camera, pixel_format="Mono8", region=aravis.Region(0, 0, *BIG), trigger_source="Software", extra={}
    )
    stream = camera.create_stream(None, None)
    stream.set_property("packet-resend", arv.GvStreamPacketResend.ALWAYS)
    for _ in range(args.buffers):
        stream.push_buffer(arv.Buffer.new_allocate(camera.get_payload()))
    camera.start_acquisition()
    latencies, in_hand, puts = [], [], []
    try:
        for n in range(args.frames + 1):
            started = time.perf_counter()
            camera.software_trigger()
            buffer = stream.timeout_pop_buffer(5_000_000)
            if buffer is None:
                raise RuntimeError("raw: no frame within 5 s of the software trigger")
            try:
                complete = buffer.get_status() == arv.BufferStatus.SUCCESS
                pixels = aravis.buffer_image(buffer, "Mono8") if complete else None
            finally:
                stream.push_buffer(buffer)
            if pixels is None:
                # Packets lost beyond resend on a loaded loopback: no sample (the gige side would FAIL that part).
                print("raw: a triggered frame came incomplete, not counted", flush=True)
                continue
            popped = time.perf_counter()
            name = f"raw/{n}/{time.time_ns()}"
            await bucket.put(
                name, pixels.tobytes(), meta=ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=chunk))
            )
            if n:
                latencies.append(time.perf_counter() - started)
                in_hand.append(popped - started)
                puts.append(latencies[-1] - in_hand[-1])
    finally:
        camera.stop_acquisition()
        await nc.close()
    return latencies, in_hand, puts


async def main_latency_5mp(args: argparse.Namespace) -> None:
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="lg-capture-5mp-") as tmp, FakeGigeCamera(SERIAL):
        server = EmbeddedNats(store_dir=Path(tmp) / "nats").start()
        try:
            raw = demo_config_dict(
                nats_url=server.url,
                database_url="sqlite://",
                opcua_endpoint="opc.tcp://127.0.0.1:1/",
                deadline_ms=10_000,
            )
            raw["stations"][0]["camera"] = big_camera(args)
            raw["archive"] = {"kind": "folder", "path": str(Path(tmp) / "images"), "enabled": False}
            config = LineConfig(**raw)
            chunk = config.nats.inline_image_max_bytes
            await (await Bus.connect(NatsSettings(url=server.url), "bench-setup")).close()  # the line's streams
            for r in range(args.rounds):
                figures = {}
                for name in ("gige", "raw") if r % 2 == 0 else ("raw", "gige"):
                    if name == "gige":
                        figures["gige"] = latency_figures(await gige_triggers(args, config, server.url))
                    else:
                        total, in_hand, puts = await raw_triggers(args, server.url, chunk)
                        figures["raw"], camera_only, put_only = map(latency_figures, (total, in_hand, puts))
                flat = side_by_side(figures, "gige")
                # The fake's own share: trigger to pixels in hand, no bus.
                flat.update({f"raw_camera_{k}": v for k, v in camera_only.items() if k != "fps"})
                flat.update({f"raw_put_{k}": v for k, v in put_only.items() if k != "fps"})
                flat["ratio_p50"] = flat["gige_p50_ms"] / flat["raw_p50_ms"]
                flat["ratio_p99"] = flat["gige_p99_ms"] / flat["raw_p99_ms"]
                rounds.append(flat)
                print(f"{round_line(r + 1, flat, 'gige')} | p99 ratio {flat['ratio_p99']:.3f}", flush=True)
        finally:
            server.stop()
    summary: dict[str, Any] = {
        "benchmark": "capture --latency-5mp",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "frames": args.frames,
        "rounds": args.rounds,
        "size": f"{BIG[0]}x{BIG[1]} Mono8 ({BIG[0] * BIG[1]} bytes), object store",
        "encoding": args.encoding,
        "uptime": os.popen("uptime").read().strip(),
        **medians_and_ranges(rounds, digits=3),
    }
    print(json.dumps(summary))


def main(args: argparse.Namespace) -> None:
    if args.latency_5mp:
        asyncio.run(main_latency_5mp(args))
        return
    if args.encode:
        main_encode(args)
        return
    rounds: list[dict[str, float]] = []
    with FakeGigeCamera(SERIAL):
        for r in range(args.rounds):
            order = [("gige", run_gige), ("raw", run_raw)]
            if r % 2:
                order.reverse()
            flat = one_round(args, order)
            rounds.append(flat)
            lost = f"lost frames gige {flat['gige_lost_frames']:g} raw {flat['raw_lost_frames']:g}"
            print(f"{round_line(r + 1, flat, 'gige')} | {lost}", flush=True)
    summary: dict[str, Any] = {
        "benchmark": "capture",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "frames": args.frames,
        "rounds": args.rounds,
        "size": f"{args.width}x{args.height} Mono8",
        "fake_camera": "arv-fake-gv-camera-0.8 on 127.0.0.1",
        "encoding": args.encoding,
        "mode": args.mode,
        "camera_fps": args.camera_fps,
        "load": round(os.getloadavg()[0], 2),
        **medians_and_ranges(rounds, digits=3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="triggers per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--encoding", choices=["bmp", "png", "jpeg"], default="bmp")
    parser.add_argument("--buffers", type=int, default=8)
    parser.add_argument("--camera-fps", type=float, default=1000.0, help="the fake's AcquisitionFrameRate")
    parser.add_argument(
        "--mode",
        choices=["freerun", "software"],
        default="freerun",
        help="freerun: trigger hardware, the camera free-running (the fake answers a software trigger only at 25 Hz)",
    )
    parser.add_argument("--encode", action="store_true", help="the BMP encoding alone: numpy's against OpenCV's")
    parser.add_argument("--repeat", type=int, default=50, help="--encode: calls per frame per figure (their median)")
    parser.add_argument(
        "--latency-5mp", action="store_true", help="trigger -> Frame on the bus, 2048x2048 Mono8, against raw Aravis"
    )
    main(parser.parse_args())
