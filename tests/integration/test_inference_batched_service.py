"""The inference service with micro-batching on a real nats-server: every good frame gets exactly one
result (the same as unbatched), bad frames in a batch are dead-lettered one by one, nothing is left unacked."""

from __future__ import annotations

import asyncio

from lineguard.bus import DEAD_REASON
from lineguard.config import LineConfig
from lineguard.contracts import dead_subject, msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.services.inference.detect import infer_frame
from lineguard.services.inference.service import setup
from lineguard.testing import running_service
from lineguard.testing.boards import board_bytes, board_frame
from lineguard.testing.streams import collect
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.vision.model import load_model

STEMS = ("00041000", "50600001")
BOARDS = [board_bytes(stem) for stem in STEMS]


def frame(seq: int, data: bytes, recipe: str = "pcb-a") -> Frame:
    # The board's own template as its reference, whichever board the bytes are (bad bytes: the first's).
    stem = STEMS[BOARDS.index(data)] if data in BOARDS else STEMS[0]
    return board_frame(seq, stem, data=data, recipe=recipe)


async def test_batched_frames_get_one_result_each_and_bad_ones_are_dead_lettered(
    fresh_nats: EmbeddedNats, bus_factory, line_config_dict
) -> None:
    config = LineConfig(
        **line_config_dict(
            nats_url=fresh_nats.url, model={"intra_op_threads": 1, "batch_size": 4, "batch_wait_ms": 200}
        )
    )
    bus = await bus_factory("driver")
    frames = [
        frame(1, BOARDS[0]),
        frame(2, b"\x00\x01 not an image at all"),
        frame(3, BOARDS[1]),
        frame(4, BOARDS[0], recipe="pcb-z"),
        frame(5, BOARDS[1]),
        frame(6, BOARDS[0]),
    ]
    async with running_service("inference", config, setup):
        for f in frames:  # all at once: they queue up and run in batches
            await bus.publish(subject("frame", "l1", "s1"), f, msg_id=msg_id(f.part.inspection_id, "frame"))
        results = await collect(bus, "lg.inference.l1.*", stream_name("inference"), 4)
        dead = await collect(bus, dead_subject("frame"), stream_name("dead"), 2)
        await asyncio.sleep(0.5)
        info = await bus.js.consumer_info(stream_name("frame"), "inference-frame")
        stored = (await bus.js.stream_info(stream_name("inference"))).state.messages

    served = {r.part.sequence: r for r in (InferenceResult.FromString(m.data) for m in results)}
    assert sorted(served) == [1, 3, 5, 6] and stored == 4  # one result per good frame, no more
    assert info.num_ack_pending == 0 and info.num_pending == 0  # every frame settled
    reasons = {Frame.FromString(d.data).part.sequence: d.headers[DEAD_REASON] for d in dead}
    assert reasons[2].startswith("frame is not an image: 22 bytes")
    assert "unknown recipe 'pcb-z' (known: pcb-a)" in reasons[4]

    detector = load_model(intra_op_threads=1)
    for sent in frames:
        if sent.part.sequence in served:
            alone = infer_frame(sent, config, detector)
            got = served[sent.part.sequence]
            assert got.part == sent.part
            assert [t.stage for t in got.timings] == ["preprocess", "infer", "postprocess"]
            assert [(d.class_id, round(d.score, 4), round(d.box.x1, 1)) for d in got.detections] == [
                (d.class_id, round(d.score, 4), round(d.box.x1, 1)) for d in alone.detections
            ]
