"""The inference service on a real nats-server: frames in, results out, bad frames dead-lettered."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lineguard.bus import DEAD_REASON, DEAD_SUBJECT
from lineguard.config import LineConfig
from lineguard.contracts import dead_subject, msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.services.inference.service import setup
from lineguard.sim.lineconfig import write_config
from lineguard.testing import running_service
from lineguard.testing.boards import board_bytes, board_frame, template_bytes
from lineguard.testing.models import tiny_model
from lineguard.testing.streams import collect
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.vision.model import ModelLoadError

BOARD, TEMPLATE = board_bytes(), template_bytes()


@pytest.fixture
def config_dict(fresh_nats: EmbeddedNats, line_config_dict) -> dict:
    """The line on the test's own server, the model on one thread."""
    return line_config_dict(nats_url=fresh_nats.url, model={"intra_op_threads": 1})


def frame(seq: int, data: bytes = BOARD, recipe: str = "pcb-a") -> Frame:
    return board_frame(seq, data=data, recipe=recipe)


async def test_frames_become_results_and_bad_frames_go_to_dead_letters(config_dict: dict, bus_factory) -> None:
    bus = await bus_factory("driver")
    frames = [
        frame(1),
        frame(2, data=b"\x00\x01 not an image at all"),
        frame(3, data=BOARD[:5000]),
        frame(4, recipe="pcb-z"),
        board_frame(5, reference=b""),  # the shipped model compares with the reference: none, no verdict
        board_frame(6, reference=TEMPLATE[:4000]),
        frame(7),  # still served after five bad ones
    ]
    async with running_service("inference", LineConfig(**config_dict), setup):
        for f in frames:
            await bus.publish(subject("frame", "l1", "s1"), f, msg_id=msg_id(f.part.inspection_id, "frame"))
        results = await collect(bus, "lg.inference.l1.*", stream_name("inference"), 2)
        dead = await collect(bus, dead_subject("frame"), stream_name("dead"), 5)

    served = [InferenceResult.FromString(r.data) for r in results]
    assert [r.part.sequence for r in served] == [1, 7]
    assert results[1].subject == "lg.inference.l1.s1"
    assert results[1].headers["Nats-Msg-Id"] == f"{frames[6].part.inspection_id}:inference"
    for result, sent in zip(served, (frames[0], frames[6]), strict=True):
        assert result.part == sent.part
        assert result.model_id == "deeppcb-yolo11n" and result.model_version
        assert (result.image_width, result.image_height) == (640, 640)
        assert [t.stage for t in result.timings] == ["preprocess", "infer", "postprocess"]
    # The same board twice: the same defects.
    assert [(d.class_id, round(d.score, 4)) for d in served[0].detections] == [
        (d.class_id, round(d.score, 4)) for d in served[1].detections
    ]

    reasons = {Frame.FromString(d.data).part.sequence: d.headers[DEAD_REASON] for d in dead}
    assert reasons[2].startswith("frame is not an image: 22 bytes")
    assert reasons[3] == "truncated jpeg: 5000 bytes without the end-of-image marker"
    assert "unknown recipe 'pcb-z' (known: pcb-a)" in reasons[4]
    assert reasons[5].endswith("compares each image with the part's reference image, and none was given")
    assert reasons[6] == "reference image: truncated jpeg: 4000 bytes without the end-of-image marker"
    assert {d.headers[DEAD_SUBJECT] for d in dead} == {"lg.frame.l1.s1"}


async def test_a_model_that_does_not_load_stops_the_service(config_dict: dict, tmp_path: Path) -> None:
    config = config_dict
    config["model"]["path"] = str(tmp_path / "missing.onnx")
    with pytest.raises(ModelLoadError, match=r"missing\.onnx: file not found"):
        async with running_service("inference", LineConfig(**config), setup):
            pass


def test_the_console_script_exits_with_the_models_error(config_dict: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    config = config_dict
    config["model"]["path"] = str(broken)
    config["model"]["allow_unsigned"] = True  # past the signature check: the file itself is what is refused
    path = write_config(tmp_path / "line.yaml", config)
    run = subprocess.run(
        [sys.executable, "-m", "lineguard.services.inference", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LINEGUARD_LOG_LEVEL": "info"},
    )
    assert run.returncode != 0
    logged = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    errors = [e for e in logged if e["level"] == "error"]
    assert errors[0]["event"] == "cannot load the model; the inference service cannot run"
    assert errors[0]["error"].startswith(f"model {broken}: not a loadable ONNX model")


async def test_a_frame_whose_verdict_is_already_due_is_skipped_and_the_next_served(
    config_dict: dict, bus_factory
) -> None:
    bus = await bus_factory("driver")
    stale, fresh = frame(1), frame(2)
    # Triggered a minute ago: the decision service gave FAIL / TIMEOUT long since.
    stale.part.triggered_unix_ns = time.time_ns() - 60 * 10**9
    fresh.part.triggered_unix_ns = time.time_ns()
    async with running_service("inference", LineConfig(**config_dict), setup):
        for f in (stale, fresh):
            await bus.publish(subject("frame", "l1", "s1"), f, msg_id=msg_id(f.part.inspection_id, "frame"))
        results = await collect(bus, "lg.inference.l1.*", stream_name("inference"), 1)
        await asyncio.sleep(0.3)
        info = await bus.js.consumer_info(stream_name("frame"), "inference-frame")
    assert [InferenceResult.FromString(r.data).part.sequence for r in results] == [2]
    assert info.num_ack_pending == 0 and info.num_pending == 0  # the stale frame was acked, not left behind


async def test_a_model_output_that_is_not_a_number_dead_letters_the_frame(
    config_dict: dict, bus_factory, tmp_path: Path
) -> None:
    # NaN scores read as "nothing found" would pass the part: the frame is dead-lettered with the cause instead,
    # and the decision fails the part for want of a result. The service goes on serving.
    config = config_dict
    config["model"]["path"] = str(tiny_model(tmp_path / "nan.onnx", batch=1, scores=(float("nan"), 0.9)))
    config["recipes"]["pcb-a"]["classes"] = {}
    bus = await bus_factory("driver")
    frames = [frame(1), frame(2)]
    async with running_service("inference", LineConfig(**config), setup):
        for f in frames:
            await bus.publish(subject("frame", "l1", "s1"), f, msg_id=msg_id(f.part.inspection_id, "frame"))
        dead = await collect(bus, dead_subject("frame"), stream_name("dead"), 2)
    for sent, letter in zip(frames, dead, strict=True):
        assert letter.headers[DEAD_REASON] == (
            f"part {sent.part.inspection_id}: model tiny 1 gave 16 values that are "
            "not numbers (NaN / inf) for this image: it cannot be judged"
        )
