"""Capture from an RTSP camera: capture's rtsp source against a bare OpenCV reader, same server, same run.

Server: GStreamer's gst-rtsp-server on 127.0.0.1 (lineguard.testing.rtsp) streaming live H.264 at --width x --height,
--fps frames/s, over RTSP/TCP.

rtsp: `open_camera("s1", rtsp.Settings(url=...)).grab(part)`: what capture calls per trigger. Its reader thread reads
and decodes every frame (OpenCV's FFMPEG backend) and keeps the newest; grab waits for a frame that arrived after
the part's trigger time and encodes it as --encoding; the watchdog runs beside.

raw: the same stream opened by cv2.VideoCapture, a bare thread reading into one slot, and each ask waiting for a frame
that arrived after it: the least any reader must do for latest-frame semantics. No encoding, no watchdog.

Each sample is one ask to its frame in hand (latency: the wait for the stream's next frame, about half a frame
interval, plus the source's own work); frames/s is samples over the loop's time. Rounds alternate which side goes
first; the figures are medians over rounds with their ranges; the last line is JSON.

    python benchmarks/capture_rtsp.py [--frames 100] [--rounds 5] [--width 1280 --height 720] [--fps 25]
                                      [--encoding jpeg]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import cv2

from lineguard.services.capture.sources import rtsp
from lineguard.testing.latency import latency_figures, round_line, side_by_side, timed
from lineguard.testing.rounds import medians_and_ranges
from lineguard.testing.rtsp import RtspTestServer
from lineguard.v1.common_pb2 import Part


def run_rtsp(args: argparse.Namespace, url: str) -> list[float]:
    source = rtsp.open_camera("s1", rtsp.Settings(url=url, encoding=args.encoding, grab_timeout_ms=5000))
    try:
        return timed(lambda seq: source.grab(Part(sequence=seq, triggered_unix_ns=time.time_ns())), args.frames)
    finally:
        source.close()  # type: ignore[attr-defined]


def run_raw(args: argparse.Namespace, url: str) -> list[float]:
    os.environ[rtsp.FFMPEG_OPTIONS] = "rtsp_transport;tcp"
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise RuntimeError(f"raw: {url} did not open")
    slot: list[int] = [0]  # the newest frame's arrival
    arrived = threading.Condition()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            ok, _ = capture.read()
            if not ok:
                return
            with arrived:
                slot[0] = time.time_ns()
                arrived.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def one() -> None:
        asked = time.time_ns()
        with arrived:
            if not arrived.wait_for(lambda: slot[0] >= asked, timeout=5):
                raise RuntimeError("raw: no frame within 5 s")

    try:
        return timed(lambda _: one(), args.frames)
    finally:
        stop.set()
        reader.join(timeout=5)
        capture.release()


def main(args: argparse.Namespace) -> None:
    rounds: list[dict[str, float]] = []
    with RtspTestServer(width=args.width, height=args.height, fps=args.fps) as server:
        for r in range(args.rounds):
            order = [("rtsp", run_rtsp), ("raw", run_raw)]
            if r % 2:
                order.reverse()
            flat = side_by_side({name: latency_figures(run(args, server.url)) for name, run in order}, "rtsp")
            rounds.append(flat)
            print(round_line(r + 1, flat, "rtsp"), flush=True)
    summary: dict[str, Any] = {
        "benchmark": "capture_rtsp",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "frames": args.frames,
        "rounds": args.rounds,
        "stream": f"{args.width}x{args.height} H.264 {args.fps} frames/s, gst-rtsp-server on 127.0.0.1, RTSP/TCP",
        "encoding": args.encoding,
        "load": round(os.getloadavg()[0], 2),
        **medians_and_ranges(rounds, digits=3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="asks per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--encoding", choices=["bmp", "png", "jpeg"], default="jpeg")
    main(parser.parse_args())
