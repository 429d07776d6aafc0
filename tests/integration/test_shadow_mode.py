"""Shadow mode on a real nats-server: a candidate from the registry runs beside the live model in the inference
service, its results on lg.shadow (never lg.inference); a candidate whose classes are not the live model's is
refused with SHADOW_CLASSES_DIFFER while the live model serves on; the decision service judges the candidate's
results into lg.shadow_verdict with the live part's OCR, and the results service writes them beside the row."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import heartbeat_subject, msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.registry import SHADOW_CLASSES_DIFFER, RegistryError, connect_registry
from lineguard.services.inference.service import setup as inference_setup
from lineguard.services.inference.shadow import sampled
from lineguard.testing import running_service
from lineguard.testing.boards import board_frame
from lineguard.testing.models import MODEL_ID, model_version, tiny_model
from lineguard.v1.heartbeat_pb2 import Heartbeat
from lineguard.v1.inference_pb2 import InferenceResult

SIX = ("open", "short", "mousebite", "spur", "copper", "pin-hole")


def passing_candidate(folder: Path, version: str = "1") -> Path:
    """A candidate with the live model's six classes that never finds a defect (every score 0.05)."""
    folder.mkdir(parents=True, exist_ok=True)
    return tiny_model(folder / "pass.onnx", batch=1, scores=(0.05,) * 6, classes=SIX, model_id="never", version=version)


def two_class_candidate(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return tiny_model(folder / "two.onnx", batch=1, model_id="two-classes", version="1")


@pytest.fixture
def line_config(fresh_nats: EmbeddedNats, tmp_path: Path, line_config_dict) -> Callable[..., LineConfig]:
    def make(**model: object) -> LineConfig:
        return LineConfig(
            **line_config_dict(
                nats_url=fresh_nats.url,
                model={"intra_op_threads": 1, "cache_dir": str(tmp_path / "cache"), "registry": True, **model},
                services={"inference": {"heartbeat_s": 0.1}},
            )
        )

    return make


async def take(bus: Bus, kind: str, count: int, timeout: float = 30.0) -> list[InferenceResult]:
    """The first `count` results of `kind` on the stream (every call reads from its start)."""
    sub = await bus.js.pull_subscribe(f"lg.{kind}.l1.*", stream=stream_name(kind))
    got: list[InferenceResult] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < count:
                with contextlib.suppress(TimeoutError):
                    got += [InferenceResult.FromString(m.data) for m in await sub.fetch(count - len(got), timeout=0.5)]
    finally:
        await sub.unsubscribe()
    return got


async def heartbeat(bus: Bus, until: Callable[[Heartbeat], bool], timeout: float = 30.0) -> Heartbeat:
    async with asyncio.timeout(timeout):
        while True:
            try:
                msg = await bus.js.get_last_msg(stream_name("heartbeat"), heartbeat_subject("l1", "inference"))
                beat = Heartbeat.FromString(msg.data)
                if until(beat):
                    return beat
            except Exception:  # noqa: BLE001 - no heartbeat yet
                pass
            await asyncio.sleep(0.05)


async def send(bus: Bus, seq: int) -> str:
    frame = board_frame(seq)
    await bus.publish(subject("frame", "l1", "s1"), frame, msg_id=msg_id(frame.part.inspection_id, "frame"))
    return frame.part.inspection_id


def test_a_share_is_picked_by_the_inspection_id_the_same_every_time() -> None:
    ids = [f"0190a0b0-0000-7000-8000-{i:012d}" for i in range(4000)]
    picked = [i for i in ids if sampled(i, 0.25)]
    assert 850 < len(picked) < 1150
    assert picked == [i for i in ids if sampled(i, 0.25)]
    assert all(sampled(i, 1.0) for i in ids[:10])


async def test_the_registry_refuses_a_candidate_whose_classes_are_not_the_promoted_models(
    fresh_nats: EmbeddedNats, tmp_path: Path
) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(model_version(tmp_path / "live", "1.0.0"))
        await registry.promote(MODEL_ID, "1.0.0", "l1")
        await registry.push(two_class_candidate(tmp_path / "two"))
        with pytest.raises(RegistryError, match=SHADOW_CLASSES_DIFFER) as refused:
            await registry.start_shadow("two-classes", "1", "l1")
        with pytest.raises(RegistryError, match="share"):
            await registry.start_shadow(MODEL_ID, "1.0.0", "l1", share=0)
        assert await registry.shadow("l1") is None
    assert refused.value.reason == SHADOW_CLASSES_DIFFER
    assert "['open', 'short']" in str(refused.value) and "'pin-hole'" in str(refused.value)


async def test_the_candidate_runs_beside_the_live_model_and_one_with_other_classes_is_refused(
    fresh_nats: EmbeddedNats, bus_factory, tmp_path: Path, line_config
) -> None:
    bus = await bus_factory("driver")
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(passing_candidate(tmp_path / "never"))
        await registry.push(two_class_candidate(tmp_path / "two"))
        async with running_service("inference", line_config(), inference_setup):
            await registry.start_shadow("never", "1", "l1")
            await heartbeat(bus, lambda b: "shadow never 1" in b.detail)
            sent = [await send(bus, seq) for seq in (1, 2, 3)]
            live = await take(bus, "inference", 3)
            shadow = await take(bus, "shadow", 3)

            # The bad input: the live model keeps serving, the candidate is refused with the reason code.
            await registry.start_shadow("two-classes", "1", "l1")
            refused = await heartbeat(bus, lambda b: SHADOW_CLASSES_DIFFER in b.detail)
            fourth = await send(bus, 4)
            [after] = [r for r in await take(bus, "inference", 4) if r.part.inspection_id == fourth]
            await asyncio.sleep(0.5)
            shadow_stored = (await bus.js.stream_info(stream_name("shadow"))).state.messages

            await registry.stop_shadow("l1")
            stopped = await heartbeat(bus, lambda b: "shadow" not in b.detail)

    assert sorted(r.part.inspection_id for r in live) == sorted(sent)
    assert {(r.model_id, len(r.detections) > 0) for r in live} == {(MODEL_ID, True)}
    assert sorted(r.part.inspection_id for r in shadow) == sorted(sent)
    assert {(r.model_id, r.model_version, len(r.detections)) for r in shadow} == {("never", "1", 0)}
    assert "detects ['open', 'short']" in refused.detail and refused.detail.startswith(f"model {MODEL_ID}")
    assert after.part.inspection_id == fourth and after.model_id == MODEL_ID
    assert shadow_stored == 3  # nothing for the fourth part
    assert stopped.detail.startswith(f"model {MODEL_ID}")


async def test_the_candidates_verdict_is_judged_and_written_beside_the_live_row(
    fresh_nats: EmbeddedNats, bus_factory, tmp_path: Path, line_config_dict
) -> None:
    """Decision + results services: the candidate's results judged with the live part's OCR into shadow_verdicts;
    lg.decision, what the gateway reads, carries only the live model's verdicts."""
    from lineguard.services.decision.service import setup as decision_setup
    from lineguard.services.results.db import upgrade_database
    from lineguard.services.results.service import setup as results_setup
    from lineguard.testing.records import sample_decision
    from lineguard.v1.decision_pb2 import Decision, Verdict
    from lineguard.v1.ocr_pb2 import OcrResult
    from lineguard.v1.trigger_pb2 import Trigger

    url = f"sqlite:///{tmp_path / 'mes.db'}"
    upgrade_database(url)
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, database_url=url))
    bus = await bus_factory("driver")
    decisions = []
    async with running_service("decision", config, decision_setup), running_service("results", config, results_setup):
        for seq in (1, 2):
            live = sample_decision(seq, triggered_ns=time.time_ns())
            part = live.part
            candidate = InferenceResult(part=part, model_id="never", model_version="1", image_width=640)
            await bus.publish(
                subject("trigger", "l1", "s1"), Trigger(part=part), msg_id=msg_id(part.inspection_id, "trigger")
            )
            # The candidate's result first: it waits for the live verdict, which never waits for it.
            await bus.publish(subject("shadow", "l1", "s1"), candidate, msg_id=msg_id(part.inspection_id, "shadow"))
            await bus.publish(
                subject("inference", "l1", "s1"), live.inference, msg_id=msg_id(part.inspection_id, "inference")
            )
            ocr = OcrResult(part=part, codes=live.ocr.codes)
            await bus.publish(subject("ocr", "l1", "s1"), ocr, msg_id=msg_id(part.inspection_id, "ocr"))
            decisions.append(part.inspection_id)
        engine = sa.create_engine(url)
        try:
            async with asyncio.timeout(30):
                while True:
                    with engine.connect() as conn:
                        rows = conn.execute(
                            sa.text(
                                "SELECT s.inspection_id, s.model_id, s.verdict, s.reason_codes, i.verdict AS live "
                                "FROM shadow_verdicts s JOIN inspections i USING (inspection_id) ORDER BY i.sequence"
                            )
                        ).all()
                    if len(rows) == 2:
                        break
                    await asyncio.sleep(0.1)
        finally:
            engine.dispose()
        sub = await bus.js.pull_subscribe("lg.decision.l1.*", stream=stream_name("decision"))
        on_decision = [Decision.FromString(m.data) for m in await sub.fetch(10, timeout=2)]
        await sub.unsubscribe()
    assert [r.inspection_id for r in rows] == decisions
    assert {(r.model_id, r.verdict, r.reason_codes, r.live) for r in rows} == {("never", "PASS", "", "FAIL")}
    assert {(d.model_id, d.verdict) for d in on_decision} == {("deeppcb-yolo11n", Verdict.VERDICT_FAIL)}
