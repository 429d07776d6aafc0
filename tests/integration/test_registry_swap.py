"""The inference service and the model registry on a real nats-server: the promoted model at start,
a swap while frames stream in (none lost, none handled twice), and promotions that are refused."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.registry import connect_registry
from lineguard.services.inference.service import setup
from lineguard.testing import running_service
from lineguard.testing.boards import board_frame
from lineguard.testing.models import MODEL_ID, model_version
from lineguard.testing.streams import heartbeat
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.heartbeat_pb2 import HealthStatus
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.vision.model import ModelLoadError, card_path, packaged_model_path

RENAMED = ["a", "b", "c", "d", "e", "f"]
PACKAGED_VERSION = json.loads(card_path(packaged_model_path()).read_text())["version"]


@pytest.fixture
def line_config(fresh_nats: EmbeddedNats, tmp_path: Path, line_config_dict) -> Callable[..., LineConfig]:
    """`line_config(**model)`: the line on the test's server, its model cache in tmp_path, `model` added to the
    model section."""

    def make(**model: object) -> LineConfig:
        return LineConfig(
            **line_config_dict(
                nats_url=fresh_nats.url,
                model={"intra_op_threads": 1, "cache_dir": str(tmp_path / "cache"), **model},
                services={"inference": {"heartbeat_s": 0.1}},
            )
        )

    return make


def frame(seq: int) -> Frame:
    return board_frame(seq)


async def send(bus: Bus, f: Frame) -> None:
    await bus.publish(subject("frame", "l1", "s1"), f, msg_id=msg_id(f.part.inspection_id, "frame"))


class Results:
    """The service's results, read in order by one consumer: each `take` gets the next ones."""

    def __init__(self, bus: Bus):
        self.bus = bus
        self.sub = None

    async def take(self, count: int, timeout: float = 30.0) -> list[InferenceResult]:
        if self.sub is None:
            self.sub = await self.bus.js.pull_subscribe("lg.inference.l1.*", stream=stream_name("inference"))
        got: list[InferenceResult] = []
        async with asyncio.timeout(timeout):
            while len(got) < count:
                try:
                    msgs = await self.sub.fetch(count - len(got), timeout=0.5)
                    got += [InferenceResult.FromString(m.data) for m in msgs]
                except TimeoutError:
                    pass
        return got

    async def close(self) -> None:
        if self.sub is not None:  # an open pull subscription would hold up the connection's drain
            await self.sub.unsubscribe()


@pytest.fixture
async def driver(bus_factory) -> AsyncIterator[tuple[Bus, Results]]:
    """A connection of the test's own, and the service's results read through it."""
    bus = await bus_factory("driver")
    results = Results(bus)
    yield bus, results
    await results.close()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_service_starts_with_the_promoted_model(
    fresh_nats: EmbeddedNats, driver, tmp_path: Path, line_config
) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(model_version(tmp_path, "1.0.0"))
        await registry.promote(MODEL_ID, "1.0.0", "l1")
    bus, results = driver
    async with running_service("inference", line_config(), setup):
        await send(bus, frame(1))
        [result] = await results.take(1)
        beat = await heartbeat(bus, "inference", lambda b: bool(b.detail))
    assert (result.model_id, result.model_version) == (MODEL_ID, "1.0.0")
    assert (beat.status, beat.detail) == (HealthStatus.HEALTH_STATUS_OK, f"model {MODEL_ID} 1.0.0")
    assert (tmp_path / "cache" / MODEL_ID / "1.0.0" / f"{MODEL_ID}.onnx").is_file()
    assert metric("lineguard_model_serving", service="inference", model_id=MODEL_ID, version="1.0.0") == 1


@pytest.mark.parametrize("batch_size", [1, 4])
async def test_a_promotion_swaps_models_between_frames_without_losing_or_repeating_one(
    fresh_nats: EmbeddedNats, driver, tmp_path: Path, batch_size: int, line_config
) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(model_version(tmp_path, "1.0.0"))
        await registry.push(model_version(tmp_path, "2.0.0"))
        await registry.promote(MODEL_ID, "1.0.0", "l1")
        bus, results = driver
        handled = ("lineguard_messages_total", {"service": "inference", "kind": "frame", "outcome": "ok"})
        published = ("lineguard_published_total", {"service": "inference", "subject_kind": "inference"})
        swapped = ("lineguard_model_promotions_total", {"service": "inference", "outcome": "swapped"})
        before = [metric(name, **labels) for name, labels in (handled, published, swapped)]
        frames = [frame(seq) for seq in range(1, 41)]

        async def stream_frames() -> None:
            for f in frames:
                await send(bus, f)
                await asyncio.sleep(0.02)

        async with running_service("inference", line_config(batch_size=batch_size), setup):
            streaming = asyncio.create_task(stream_frames())
            got = await results.take(5)
            await registry.promote(MODEL_ID, "2.0.0", "l1")  # while frames keep coming
            got += await results.take(35, timeout=60)
            await streaming
            await asyncio.sleep(0.5)  # time for a 41st result, were a frame handled twice
            info = await bus.js.consumer_info(stream_name("frame"), "inference-frame")
            stored = (await bus.js.stream_info(stream_name("inference"))).state.messages
        after = [metric(name, **labels) for name, labels in (handled, published, swapped)]

    by_seq = sorted(got, key=lambda r: r.part.sequence)
    assert [r.part.sequence for r in by_seq] == list(range(1, 41))  # each frame once
    assert [r.part.inspection_id for r in by_seq] == [f.part.inspection_id for f in frames]
    versions = [r.model_version for r in by_seq]
    switched = versions.index("2.0.0")
    assert 5 <= switched < 40, versions
    assert versions == ["1.0.0"] * switched + ["2.0.0"] * (40 - switched), versions
    assert stored == 40
    assert info.num_pending == 0 and info.num_ack_pending == 0 and info.num_redelivered == 0
    # Each frame handled once: no retry, no second run that the stream's deduplication would hide.
    assert [a - b for a, b in zip(after, before, strict=True)] == [40, 40, 1]


async def test_a_promoted_model_that_does_not_load_is_refused_and_the_old_one_serves(
    fresh_nats: EmbeddedNats, driver, tmp_path: Path, line_config
) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(model_version(tmp_path, "1.0.0"))
        await registry.push(model_version(tmp_path, "9.0.0-broken", data=b"not an onnx model"))
        await registry.push(model_version(tmp_path, "8.0.0-renamed", classes=RENAMED))
        await registry.promote(MODEL_ID, "1.0.0", "l1")
        bus, results = driver
        async with running_service("inference", line_config(), setup):
            await registry.promoted_kv.put("l1", b"written by hand")  # logged and skipped
            await registry.promote(MODEL_ID, "9.0.0-broken", "l1")
            broken = await heartbeat(bus, "inference", lambda b: b.status == HealthStatus.HEALTH_STATUS_DEGRADED)
            refused_gauge = metric("lineguard_model_promotion_refused", service="inference")
            await send(bus, frame(1))
            [after_broken] = await results.take(1)

            await registry.promote(MODEL_ID, "8.0.0-renamed", "l1")
            renamed = await heartbeat(bus, "inference", lambda b: "8.0.0-renamed" in b.detail)
            await send(bus, frame(2))
            [after_renamed] = await results.take(1)

            await registry.promote(MODEL_ID, "1.0.0", "l1")  # the rollback
            healthy = await heartbeat(bus, "inference", lambda b: b.status == HealthStatus.HEALTH_STATUS_OK)

    assert broken.detail.startswith(f"model {MODEL_ID} 1.0.0; promotion of {MODEL_ID} 9.0.0-broken refused: model ")
    assert "not a loadable ONNX model" in broken.detail
    assert refused_gauge == 1
    assert after_broken.model_version == "1.0.0"
    assert renamed.status == HealthStatus.HEALTH_STATUS_DEGRADED
    assert (
        "classes disagree with the recipes: recipe 'pcb-a' has rules for "
        "['open', 'short', 'mousebite', 'spur', 'copper', 'pin-hole'], which model deeppcb-yolo11n "
        "8.0.0-renamed does not detect (it detects ['a', 'b', 'c', 'd', 'e', 'f'])"
    ) in renamed.detail
    assert (after_renamed.part.sequence, after_renamed.model_version) == (2, "1.0.0")
    assert healthy.detail == f"model {MODEL_ID} 1.0.0"
    assert metric("lineguard_model_promotion_refused", service="inference") == 0


async def test_at_start_a_refused_promotion_falls_back_to_the_one_before(
    fresh_nats: EmbeddedNats, driver, tmp_path: Path, line_config
) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(model_version(tmp_path, "1.0.0"))
        await registry.push(model_version(tmp_path, "9.0.0-broken", data=b"not an onnx model"))
        await registry.promote(MODEL_ID, "1.0.0", "l1")
        await registry.promote(MODEL_ID, "9.0.0-broken", "l1")
        await registry.promoted_kv.put("l1", b"written by hand")  # unreadable: the record before it counts
    bus, results = driver
    async with running_service("inference", line_config(), setup):
        await send(bus, frame(1))
        [result] = await results.take(1)
        beat = await heartbeat(bus, "inference", lambda b: bool(b.detail))
    assert result.model_version == "1.0.0"
    assert beat.status == HealthStatus.HEALTH_STATUS_DEGRADED
    assert beat.detail.startswith(f"model {MODEL_ID} 1.0.0; promotion of {MODEL_ID} 9.0.0-broken refused")


async def test_without_the_registry_the_configured_model_serves(
    fresh_nats: EmbeddedNats, driver, tmp_path: Path, line_config
) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(model_version(tmp_path, "1.0.0"))
        await registry.promote(MODEL_ID, "1.0.0", "l1")
    bus, results = driver
    async with running_service("inference", line_config(registry=False), setup):
        await send(bus, frame(1))
        [result] = await results.take(1)
    assert result.model_version == PACKAGED_VERSION


async def test_a_model_whose_classes_disagree_with_the_recipe_stops_the_service(
    fresh_nats: EmbeddedNats, tmp_path: Path, line_config
) -> None:
    config = line_config()
    config.recipes["pcb-a"].classes["scratch"] = config.recipes["pcb-a"].classes["open"]
    with pytest.raises(
        ModelLoadError,
        match=r"recipe 'pcb-a' has rules for \['scratch'\], which model "
        rf"deeppcb-yolo11n {re.escape(PACKAGED_VERSION)} does not detect "
        r"\(it detects \['open', ",
    ):
        async with running_service("inference", config, setup):
            pass


async def test_a_swapped_out_model_is_closed_at_the_next_swap_and_a_refused_one_at_once(
    fresh_nats: EmbeddedNats, tmp_path: Path, line_config
) -> None:
    from lineguard.runtime.service import ServiceContext
    from lineguard.services.inference.holder import ModelHolder, load_for_line

    config = line_config()
    async with connect_registry(fresh_nats.url) as registry:
        for version in ("2.0.0", "3.0.0"):
            await registry.push(model_version(tmp_path, version))
        bus = await Bus.connect(config.nats, "inference")
        try:
            first = load_for_line(config)
            holder = ModelHolder(ServiceContext(name="inference", config=config, bus=bus), first, registry)
            assert await holder.apply(await registry.promote(MODEL_ID, "2.0.0", "l1"))
            second = holder.current()
            assert first.runner.session is not None  # frames that took it may still be running
            assert await holder.apply(await registry.promote(MODEL_ID, "3.0.0", "l1"))
            assert first.runner.session is None and second.runner.session is not None
        finally:
            await bus.close()
    renamed = model_version(tmp_path, "9.0.0", classes=RENAMED)
    with pytest.raises(ModelLoadError, match="classes disagree with the recipes"):
        load_for_line(config, renamed)


async def test_a_pushed_card_changed_under_its_old_signature_is_refused_and_the_old_model_serves(
    fresh_nats: EmbeddedNats, driver, tmp_path: Path, line_config
) -> None:
    # The attack of issue 13: the shipped weights pushed with permuted class names, keeping the project's signature.
    card = json.loads(card_path(packaged_model_path()).read_text())
    card.update(version="7.0.0-permuted", classes=card["classes"][1:] + card["classes"][:1])
    async with connect_registry(fresh_nats.url) as registry:
        await registry.push(model_version(tmp_path, "1.0.0"))
        await registry.push(packaged_model_path(), card)
        await registry.promote(MODEL_ID, "1.0.0", "l1")
        bus, results = driver
        async with running_service("inference", line_config(), setup):
            await registry.promote(MODEL_ID, "7.0.0-permuted", "l1")
            refused = await heartbeat(bus, "inference", lambda b: b.status == HealthStatus.HEALTH_STATUS_DEGRADED)
            await send(bus, frame(1))
            [after] = await results.take(1)
    assert f"promotion of {MODEL_ID} 7.0.0-permuted refused" in refused.detail
    assert "signature does not verify" in refused.detail and "changed after signing" in refused.detail
    assert after.model_version == "1.0.0"
