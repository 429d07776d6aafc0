"""A decompression bomb against the inference and OCR services, run as `lineguard-<service>` runs them, on a real
nats-server: refused from its header with its sizes, the process's peak memory does not grow by the image, and the
next frame is served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lineguard.bus import DEAD_REASON
from lineguard.contracts import dead_subject, msg_id, stream_name, subject
from lineguard.imaging import encode_image
from lineguard.natsserver import EmbeddedNats
from lineguard.sim.lineconfig import write_config
from lineguard.testing.boards import board_frame
from lineguard.testing.images import decompression_bomb_png
from lineguard.testing.streams import collect
from lineguard.v1.frame_pb2 import Frame

DECODED_BOMB_MB = 12000 * 12000 * 3 / 1e6  # 432 MB, had it been decoded
# The peak may move a little with the next frames' work; a decoded bomb would move it by hundreds of MB.
ALLOWED_GROWTH_MB = 100


def good_frame(service: str, seq: int) -> Frame:
    """A frame the service serves: a board and its template for inference, for OCR the board with its code strip."""
    if service == "inference":
        return board_frame(seq)
    frame = board_frame(seq, data=encode_image(np.full((800, 640), 255, np.uint8)), reference=b"")
    frame.encoding, frame.height = "png", 800
    return frame


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise AssertionError(f"no VmHWM for process {pid}")


@pytest.mark.parametrize("service", ["ocr", "inference"])
async def test_a_decompression_bomb_is_refused_from_its_header_without_the_memory(
    service: str, fresh_nats: EmbeddedNats, bus_factory, line_config_dict, tmp_path: Path
) -> None:
    bomb = decompression_bomb_png()
    assert len(bomb) < 500_000
    raw = line_config_dict(nats_url=fresh_nats.url, model={"intra_op_threads": 1})
    config_path = write_config(tmp_path / "line.yaml", raw)
    bus = await bus_factory("driver")
    log = open(tmp_path / f"{service}.log", "wb")  # noqa: SIM115 - closed below, after the process
    process = subprocess.Popen(
        [sys.executable, "-m", f"lineguard.services.{service}", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    result_subject, result_stream = f"lg.{service}.l1.*", stream_name(service)

    async def send(frame: Frame) -> None:
        await bus.publish(subject("frame", "l1", "s1"), frame, msg_id=msg_id(frame.part.inspection_id, "frame"))

    try:
        await send(good_frame(service, 1))  # warm up: the model loaded, a frame decoded, before the peak is read
        await collect(bus, result_subject, result_stream, 1, timeout=60)
        before = peak_rss_mb(process.pid)
        bombs = [board_frame(2, data=bomb, reference=b"")]
        bombs[0].encoding = "png"
        if service == "inference":  # the reference image is the other image a frame carries
            bombs.append(board_frame(3, reference=bomb))
            bombs[1].reference_encoding = "png"
        for frame in bombs:
            await send(frame)
        await send(good_frame(service, 4))
        results = await collect(bus, result_subject, result_stream, 2, timeout=30)
        dead = await collect(bus, dead_subject("frame"), stream_name("dead"), len(bombs), timeout=30)
        after = peak_rss_mb(process.pid)
        assert process.poll() is None, "the service stopped"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert len(results) == 2  # the warm-up frame and the one after the bombs
    reasons = [d.headers[DEAD_REASON] for d in dead]
    assert all("png image is 12000 x 12000 = 144000000 pixels" in r for r in reasons), reasons
    assert all("over the limit of 50000000 pixels (max_pixels)" in r for r in reasons), reasons
    grown = f"peak RSS {before:.0f} -> {after:.0f} MB (the bomb decoded: {DECODED_BOMB_MB:.0f} MB)"
    assert after - before < ALLOWED_GROWTH_MB, grown
