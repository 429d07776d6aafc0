"""The image archive: frames read after the fact by the results service, images kept by verdict and recipe,
retention by age and by budget, in a folder and in S3 (moto's S3 server on loopback), real nats-server and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine, select, update

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.imaging import encode_image
from lineguard.natsserver import EmbeddedNats
from lineguard.runtime.service import run_service
from lineguard.services.results.archive import ImageGone, open_store
from lineguard.services.results.archive.archiver import Archiver
from lineguard.services.results.archive.retention import expire, make_room, stored_bytes
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.schema import InspectionImage
from lineguard.services.results.service import setup
from lineguard.services.results.store import write_decision
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing.records import sample_decision
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.frame_pb2 import Frame


def frame_of(decision: Decision, size: int = 320) -> Frame:
    rng = np.random.default_rng(decision.part.sequence)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Frame(
        part=decision.part,
        camera_id="cam",
        width=size,
        height=size,
        channels=3,
        encoding="png",
        data=encode_image(pixels, "png"),
    )


def line_config(tmp_path: Path, nats_url: str = "nats://127.0.0.1:1", **archive: object) -> LineConfig:
    raw = demo_config_dict(
        nats_url=nats_url, database_url=f"sqlite:///{tmp_path / 'l.db'}", opcua_endpoint="opc.tcp://127.0.0.1:4840/"
    )
    raw["archive"] = {"kind": "folder", "path": str(tmp_path / "images"), **archive}
    raw["nats"].update(nak_delay_s=0.05)
    return LineConfig(**raw)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    upgrade_database(url)
    made = make_engine(url)
    yield made
    made.dispose()


def images_of(engine: Engine, inspection_id: str) -> list[InspectionImage]:
    with engine.connect() as conn:
        return list(conn.execute(select(InspectionImage).where(InspectionImage.inspection_id == inspection_id)))


def test_a_fail_keeps_its_frame_and_an_overlay_a_pass_a_thumbnail(tmp_path: Path, engine: Engine) -> None:
    config = line_config(tmp_path)
    archiver = Archiver(engine, open_store(config.archive), config.archive, config)
    failed, passed = sample_decision(1), sample_decision(2, verdict=Verdict.VERDICT_PASS)
    for decision in (failed, passed):
        write_decision(engine, decision)
    frame = frame_of(failed)
    assert archiver.archive(frame) == ["image", "overlay"]
    assert archiver.archive(frame) == []  # delivered again: nothing more
    assert archiver.archive(frame_of(passed)) == ["thumbnail"]
    rows = {r.kind: r for r in images_of(engine, failed.part.inspection_id)}
    full = Path(urlparse(rows["image"].uri).path).read_bytes()
    assert full == frame.data and rows["image"].sha256 == hashlib.sha256(full).hexdigest()
    overlay = cv2.imdecode(np.frombuffer(archiver.store.get(rows["overlay"].uri), np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == original.shape

    # The short's box (10, 20)-(30.5, 40): its left edge drawn red (BGR) where the frame was grey noise.
    def redness(pixels: np.ndarray) -> float:
        edge = pixels[22:38, 10].astype(float)
        return float((edge[:, 2] - edge[:, 0]).mean())

    assert redness(overlay) > 50 and abs(redness(original)) < 25
    (thumb,) = images_of(engine, passed.part.inspection_id)
    small = cv2.imdecode(np.frombuffer(archiver.store.get(thumb.uri), np.uint8), cv2.IMREAD_COLOR)
    assert max(small.shape[:2]) == config.archive.thumbnail_px


def test_a_small_budget_is_never_exceeded_and_passes_go_first(tmp_path: Path, engine: Engine) -> None:
    config = line_config(tmp_path, max_bytes=2_000_000)
    archiver = Archiver(engine, open_store(config.archive), config.archive, config)
    decisions = [sample_decision(i, verdict=Verdict.VERDICT_PASS if i % 2 else Verdict.VERDICT_FAIL) for i in range(40)]
    for decision in decisions:
        write_decision(engine, decision)
        archiver.archive(frame_of(decision))
        assert stored_bytes(engine) <= 2_000_000
        on_disk = sum(f.stat().st_size for f in (tmp_path / "images").rglob("*") if f.is_file())
        assert on_disk <= 2_000_000
    with engine.connect() as conn:
        rows = conn.execute(select(InspectionImage.id, InspectionImage.kind, InspectionImage.deleted_at)).all()
    gone_defects = [i for i, kind, deleted in rows if deleted is not None and kind != "thumbnail"]
    kept_passes = [i for i, kind, deleted in rows if deleted is None and kind == "thumbnail"]
    assert gone_defects, "the budget made nothing go"
    # Passes first: every thumbnail kept is newer than any defect image that had to go.
    assert not kept_passes or min(kept_passes) > max(gone_defects)
    assert any(kind == "image" and deleted is None for _, kind, deleted in rows)
    with pytest.raises(ValueError, match="budget"):
        make_room(engine, archiver.store, 1000, 5000)


def test_retention_by_age_deletes_the_file_and_marks_the_row(tmp_path: Path, engine: Engine) -> None:
    config = line_config(tmp_path)
    archiver = Archiver(engine, open_store(config.archive), config.archive, config)
    old, new = sample_decision(1, verdict=Verdict.VERDICT_PASS), sample_decision(2, verdict=Verdict.VERDICT_PASS)
    for decision in (old, new):
        write_decision(engine, decision)
        archiver.archive(frame_of(decision))
    with engine.begin() as conn:  # the first stored 8 days ago: past pcb-a's good_days (7)
        conn.execute(
            update(InspectionImage)
            .where(InspectionImage.inspection_id == old.part.inspection_id)
            .values(stored_at=datetime.now(UTC) - timedelta(days=8))
        )
    assert expire(engine, archiver.store, config.recipes) == 1
    (gone,) = images_of(engine, old.part.inspection_id)
    assert gone.deleted_at is not None
    with pytest.raises(ImageGone):
        archiver.store.get(gone.uri)
    (kept,) = images_of(engine, new.part.inspection_id)
    assert kept.deleted_at is None and archiver.store.get(kept.uri)


async def test_the_service_archives_the_frames_it_reads_after_their_decisions(
    fresh_nats: EmbeddedNats, tmp_path: Path
) -> None:
    config = line_config(tmp_path, nats_url=fresh_nats.url)
    upgrade_database(config.database.url)
    decisions = [sample_decision(i, triggered_ns=time.time_ns()) for i in range(5)]  # triggered now
    stopping, ready = asyncio.Event(), asyncio.Event()
    service = asyncio.create_task(run_service("results", config, setup, stopping=stopping, ready=ready))
    await wait_for(lambda: ready.is_set() or service.done(), timeout=60)
    assert not service.done(), service.exception()
    bus = await Bus.connect(config.nats, "producer")
    engine = make_engine(config.database.url)
    try:
        for decision in decisions:  # the frame first, as on a line: its decision comes after
            part = decision.part
            await bus.publish(
                subject("frame", "l1", "s1"), frame_of(decision), msg_id=msg_id(part.inspection_id, "frame")
            )
        await asyncio.sleep(0.3)
        for decision in decisions:
            part = decision.part
            await bus.publish(subject("decision", "l1", "s1"), decision, msg_id=msg_id(part.inspection_id, "decision"))

        def archived() -> bool:
            return all(len(images_of(engine, d.part.inspection_id)) == 2 for d in decisions)

        await wait_for(archived, timeout=30)
        assert (await bus.js.stream_info(stream_name("dead"))).state.messages == 0
        # Each frame waited in the service for its row: none handed back to the bus to be fetched again.
        consumer = await bus.js.consumer_info(stream_name("frame"), "results-frame")
        assert consumer.delivered.consumer_seq == len(decisions)  # one delivery a frame, redeliveries counted
    finally:
        stopping.set()
        await asyncio.wait_for(service, 30)
        await bus.close()
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server (a real HTTP server speaking the S3 API) on loopback, for this test."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def test_the_s3_kind_keeps_and_deletes_images_in_a_bucket(
    tmp_path: Path, engine: Engine, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    config = line_config(tmp_path)
    config.archive = LineConfig.model_validate(
        {
            **config.model_dump(mode="json"),
            "archive": {
                "kind": "s3",
                "bucket": "lineguard-images",
                "endpoint_url": s3_endpoint,
                "region": "us-east-1",
                "prefix": "plant-a/",
            },
        }
    ).archive
    store = open_store(config.archive)
    store.client.create_bucket(Bucket="lineguard-images")  # type: ignore[attr-defined]
    archiver = Archiver(engine, store, config.archive, config)
    decision = sample_decision(1)
    write_decision(engine, decision)
    frame = frame_of(decision)
    assert archiver.archive(frame) == ["image", "overlay"]
    rows = {r.kind: r for r in images_of(engine, decision.part.inspection_id)}
    assert rows["image"].uri.startswith("s3://lineguard-images/plant-a/l1/s1/")
    assert store.get(rows["image"].uri) == frame.data
    listed = store.client.list_objects_v2(Bucket="lineguard-images")["Contents"]  # type: ignore[attr-defined]
    assert sorted(o["Size"] for o in listed) == sorted(r.bytes for r in rows.values())
    # The API given the line serves the bucket's bytes; without the line's archive settings it cannot read s3://.
    from fastapi.testclient import TestClient

    from lineguard.services.results.api.app import create_app
    from lineguard.services.results.api.tokens import create_token

    token = {"Authorization": f"Bearer {create_token(engine, 'reader', 'mes')}"}
    served = TestClient(create_app(engine, line=config), headers=token).get(f"/v1/images/{rows['image'].id}")
    assert served.status_code == 200 and served.content == frame.data
    unknown = TestClient(create_app(engine), headers=token).get(f"/v1/images/{rows['image'].id}")
    assert unknown.status_code == 404 and "missing from the archive" in unknown.json()["detail"]
    assert make_room(engine, store, rows["image"].bytes + rows["overlay"].bytes, 1) >= 1
    with pytest.raises(ImageGone):
        store.get(rows["image"].uri)


def test_the_api_serves_an_inspections_images_and_says_when_retention_deleted_one(
    tmp_path: Path, engine: Engine
) -> None:
    from fastapi.testclient import TestClient

    from lineguard.services.results.api.app import create_app
    from lineguard.services.results.api.tokens import create_token

    config = line_config(tmp_path)
    archiver = Archiver(engine, open_store(config.archive), config.archive, config)
    decision = sample_decision(1)
    write_decision(engine, decision)
    frame = frame_of(decision)
    archiver.archive(frame)
    client = TestClient(create_app(engine))
    inspection_id = decision.part.inspection_id
    assert client.get(f"/v1/inspections/{inspection_id}/images").status_code == 401
    client.headers["Authorization"] = f"Bearer {create_token(engine, 'reader', 'mes')}"
    listed = client.get(f"/v1/inspections/{inspection_id}/images").json()
    assert [i["kind"] for i in listed] == ["image", "overlay"]
    full = client.get(listed[0]["href"])
    assert full.status_code == 200 and full.content == frame.data
    assert full.headers["content-type"] == "image/png" and full.headers["etag"] == f'"{listed[0]["sha256"]}"'
    with engine.begin() as conn:
        conn.execute(update(InspectionImage).values(stored_at=datetime.now(UTC) - timedelta(days=91)))
    assert expire(engine, archiver.store, config.recipes) == 2
    gone = client.get(listed[0]["href"])
    assert gone.status_code == 410 and "deleted by retention at" in gone.json()["detail"]
    assert all(
        i["href"] is None and i["deleted_at"] for i in client.get(f"/v1/inspections/{inspection_id}/images").json()
    )
    assert client.get("/v1/images/999999").status_code == 404
    assert client.get("/v1/inspections/00000000-0000-0000-0000-000000000000/images").status_code == 404
    assert client.get("/v1/inspections/'; DROP TABLE x/images").status_code in (404, 422)


async def test_frames_waiting_for_their_rows_at_a_stop_are_archived_after_the_restart(
    fresh_nats: EmbeddedNats, tmp_path: Path
) -> None:
    config = line_config(tmp_path, nats_url=fresh_nats.url)
    upgrade_database(config.database.url)
    decisions = [sample_decision(i, triggered_ns=time.time_ns()) for i in range(3)]
    bus = await Bus.connect(config.nats, "producer")
    engine = make_engine(config.database.url)

    async def started() -> tuple[asyncio.Event, asyncio.Task[None]]:
        stopping, ready = asyncio.Event(), asyncio.Event()
        service = asyncio.create_task(run_service("results", config, setup, stopping=stopping, ready=ready))
        await wait_for(lambda: ready.is_set() or service.done(), timeout=60)
        assert not service.done(), service.exception()
        return stopping, service

    try:
        stopping, service = await started()
        for decision in decisions:  # frames whose decisions come only after the restart
            part = decision.part
            await bus.publish(
                subject("frame", "l1", "s1"), frame_of(decision), msg_id=msg_id(part.inspection_id, "frame")
            )

        async def all_waiting() -> bool:
            info = await bus.js.consumer_info(stream_name("frame"), "results-frame")
            return info.num_ack_pending == len(decisions)

        await wait_for(all_waiting, timeout=10)
        stopping.set()
        await asyncio.wait_for(service, 30)
        stopping, service = await started()
        for decision in decisions:
            part = decision.part
            await bus.publish(subject("decision", "l1", "s1"), decision, msg_id=msg_id(part.inspection_id, "decision"))
        # Well within the consumer's ack_wait (30 s): none left unacked by a wait that the stop ended.
        await wait_for(lambda: all(len(images_of(engine, d.part.inspection_id)) == 2 for d in decisions), timeout=10)
        stopping.set()
        await asyncio.wait_for(service, 30)
    finally:
        await bus.close()
        engine.dispose()
