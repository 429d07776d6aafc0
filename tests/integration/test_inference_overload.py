"""Graceful overload on a real nats-server: a burst of parts for a model too slow to judge them all by their deadline.

The model is slowed (lineguard.testing.slow_backend: every run 400 ms more), so the overload is the model's own
pace, not a timed burst. The inference and decision services run in-process; every part's trigger, OCR result and
frame come at once. The parts the model can judge in time are judged; each of the others fails at once with reason
OVERLOAD (counted), decided before its deadline, never a pass and never a TIMEOUT; one decision per part, every
frame settled."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from lineguard.config import BACKENDS, LineConfig
from lineguard.contracts import msg_id, now_ns, stream_name, subject
from lineguard.services.decision.service import setup as decision_setup
from lineguard.services.inference.service import setup as inference_setup
from lineguard.testing import running_service, slow_backend
from lineguard.testing.boards import board_frame
from lineguard.testing.records import triggered_part
from lineguard.testing.streams import collect, stored
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import Code, OcrResult
from lineguard.v1.trigger_pb2 import Trigger

PARTS = 14
DEADLINE_MS = 3000
DELAY_MS = 400  # about 7 of the 14 fit in the deadline
NOT_JUDGED = {"TIMEOUT", "NO_INFERENCE", "NO_OCR", "OVERLOAD"}


@pytest.fixture(scope="module", autouse=True)
def slowed_backend() -> Iterator[None]:
    BACKENDS.register(slow_backend)
    yield
    BACKENDS.unregister(slow_backend.KEY)


def refused_so_far() -> float:
    return REGISTRY.get_sample_value("lineguard_overload_refused_total", {"service": "inference"}) or 0.0


async def send(bus, kind: str, message) -> None:
    await bus.publish(subject(kind, "l1", "s1"), message, msg_id=msg_id(message.part.inspection_id, kind))


async def test_a_burst_past_the_model_is_judged_as_far_as_it_fits_and_the_rest_fails_at_once_with_overload(
    fresh_nats, bus_factory, line_config_dict
) -> None:
    model = {"backend": {"kind": "slowed", "delay_ms": DELAY_MS}, "intra_op_threads": 1, "registry": False}
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=DEADLINE_MS, model=model))
    bus = await bus_factory("driver")
    refused_before = refused_so_far()
    async with (
        running_service("decision", config, decision_setup),
        running_service("inference", config, inference_setup),
    ):
        parts = [triggered_part(seq) for seq in range(1, PARTS + 1)]
        for part in parts:
            frame = board_frame(part.sequence)
            frame.part.CopyFrom(part)
            await send(bus, "trigger", Trigger(part=part))
            code = Code(text=f"LG-{part.sequence:08d}")
            await send(bus, "ocr", OcrResult(part=part, codes=[code], completed_unix_ns=now_ns()))
            await send(bus, "frame", frame)
        decisions = [
            Decision.FromString(m.data)
            for m in await collect(bus, "lg.decision.l1.*", stream_name("decision"), PARTS, timeout=30)
        ]

        async def settled() -> bool:  # each frame is acked right after its result is published
            info = await bus.js.consumer_info(stream_name("frame"), "inference-frame")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_for(settled, timeout=10)  # every frame settled
        await asyncio.sleep(0.5)  # a second decision for any part would be stored by now
        all_stored = await stored(bus, "lg.decision.l1.*", stream_name("decision"))

    by_part = {d.part.inspection_id: d for d in decisions}
    assert set(by_part) == {p.inspection_id for p in parts} and len(all_stored) == PARTS  # one decision each
    overloaded = [d for d in decisions if "OVERLOAD" in d.reason_codes]
    judged = [d for d in decisions if not NOT_JUDGED & set(d.reason_codes)]
    # Both kinds, and nothing else: no part waited for its deadline to fail.
    assert len(judged) >= 2 and len(overloaded) >= 3, [list(d.reason_codes) for d in decisions]
    assert len(judged) + len(overloaded) == PARTS, [list(d.reason_codes) for d in decisions]
    for d in overloaded:
        assert d.verdict == Verdict.VERDICT_FAIL and list(d.reason_codes) == ["OVERLOAD"]
        assert d.inference.refused == "OVERLOAD" and not d.inference.detections
        assert "could not judge it by the recipe's 3000 ms deadline" in d.explanation[0].text
        # Failed when refused, not at the deadline.
        assert d.decided_unix_ns < d.part.triggered_unix_ns + DEADLINE_MS * 1_000_000
    for d in judged:  # judged by the model and its OCR, each in time
        assert d.inference.detections and d.serial == f"LG-{d.part.sequence:08d}"
    # The parts judged are the first ones: admission is in arrival order.
    assert max(d.part.sequence for d in judged) < max(d.part.sequence for d in overloaded)
    assert refused_so_far() - refused_before == len(overloaded)


async def test_frames_are_admitted_by_the_deadline_their_part_carries_not_the_yamls(
    fresh_nats, bus_factory, line_config_dict
) -> None:
    """The gateway stamps each part with its recipe version's deadline: a version activated with 20 s is judged by
    20 s though the YAML says 1 s (less than one run of the model slowed to 1.5 s); a part stamped with none (a
    tool's trigger) is held to the YAML's. The YAML's second leaves the unstamped frame time to arrive on a loaded
    box: one past its deadline on arrival is skipped as stale, with no result to assert on."""
    model = {"backend": {"kind": "slowed", "delay_ms": 1500}, "intra_op_threads": 1, "registry": False}
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=1000, model=model))
    bus = await bus_factory("driver")
    async with running_service("inference", config, inference_setup):
        unstamped = triggered_part(1)
        stamped = [triggered_part(seq) for seq in (2, 3, 4)]
        for part in stamped:
            part.deadline_ms = 20_000
        for part in (unstamped, *stamped):
            frame = board_frame(part.sequence)
            frame.part.CopyFrom(part)
            await send(bus, "frame", frame)
        results = [
            InferenceResult.FromString(m.data)
            for m in await collect(bus, "lg.inference.l1.*", stream_name("inference"), 4, timeout=30)
        ]
    by_sequence = {r.part.sequence: r for r in results}
    assert by_sequence[1].refused == "OVERLOAD"
    for seq in (2, 3, 4):
        assert not by_sequence[seq].refused and by_sequence[seq].detections, seq
