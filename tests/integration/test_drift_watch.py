"""The drift watch on a running line (capture, inference, ocr, decision, results) on a real nats-server and SQLite:
each frame's image quality reaches its record, and a forced lighting change (the same boards, darkened) raises the
station's drift alert: the state on the bus for the gateway, the drift_states row the API reads, the metric."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import cv2
from prometheus_client import REGISTRY

from lineguard.config import LineConfig
from lineguard.contracts import msg_id, subject
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.service import setup as capture_setup
from lineguard.services.capture.sources.simulator import simulator_playlist
from lineguard.services.decision.service import setup as decision_setup
from lineguard.services.inference.service import setup as inference_setup
from lineguard.services.ocr.service import setup as ocr_setup
from lineguard.services.results.db import upgrade_database
from lineguard.services.results.service import setup as results_setup
from lineguard.testing import running_service
from lineguard.testing.records import triggered_part
from lineguard.testing.sql import rows
from lineguard.testing.waiting import wait_for
from lineguard.v1.drift_pb2 import DriftLevel, DriftState
from lineguard.v1.trigger_pb2 import Trigger

# The window holds one round of the simulator's boards, so the lit line's window is the training set's spread.
BOARDS = len(simulator_playlist(SAMPLE_BOARDS))
DRIFT = {"window": BOARDS, "min_samples": BOARDS, "publish_s": 0.5}


def darkened_boards(folder: Path, gain: float = 0.35) -> Path:
    """The packaged boards as a camera sees them after the lights dimmed: every pixel at `gain`."""
    folder.mkdir()
    for path in SAMPLE_BOARDS.iterdir():
        if path.suffix == ".jpg":
            cv2.imwrite(str(folder / path.name), cv2.convertScaleAbs(cv2.imread(str(path)), alpha=gain))
        elif path.suffix == ".txt":
            shutil.copy(path, folder / path.name)
    return folder


async def trigger(bus, sequences: range) -> None:
    for seq in sequences:
        part = triggered_part(seq)
        await bus.publish(subject("trigger", "l1", "s1"), Trigger(part=part), msg_id=msg_id(part.inspection_id, "t"))
        await asyncio.sleep(0.15)


async def test_darkened_frames_raise_the_drift_alert(bus_factory, fresh_nats, line_config_dict, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'mes.db'}"
    upgrade_database(url)
    raw = line_config_dict(nats_url=fresh_nats.url, database_url=url, deadline_ms=20_000, drift=DRIFT)
    lit = LineConfig(**raw)
    dark_station = {**raw["stations"][0], "camera": {"kind": "simulator", "path": str(darkened_boards(tmp_path / "d"))}}
    dark = LineConfig(**{**raw, "stations": [dark_station]})
    bus = await bus_factory("driver")
    states: list[DriftState] = []

    async def on_state(msg) -> None:
        states.append(DriftState.FromString(msg.data))

    await bus.nc.subscribe("lg.drift.l1.*", cb=on_state)
    count = "SELECT COUNT(*) FROM inspections"
    async with (
        running_service("inference", lit, inference_setup),
        running_service("ocr", lit, ocr_setup),
        running_service("decision", lit, decision_setup),
        running_service("results", lit, results_setup),
    ):
        async with running_service("capture", lit, capture_setup):
            await trigger(bus, range(1, BOARDS + 1))
            await wait_for(lambda: rows(url, count)[0][0] == BOARDS, timeout=90)
        # The lit boards are the training set's own: no drift.
        judged = f"SELECT level FROM drift_states WHERE samples = {BOARDS}"
        await wait_for(lambda: rows(url, judged), timeout=10)
        [(level, detail)] = rows(url, "SELECT level, detail FROM drift_states")
        assert level == "OK", detail
        assert all(s.level == DriftLevel.DRIFT_LEVEL_OK for s in states)

        async with running_service("capture", dark, capture_setup):
            await trigger(bus, range(BOARDS + 1, 2 * BOARDS + 1))
            await wait_for(lambda: rows(url, count)[0][0] == 2 * BOARDS, timeout=90)
        await wait_for(lambda: rows(url, "SELECT 1 FROM drift_states WHERE level = 'ALERT'"), timeout=10)

    stored = "SELECT image_quality FROM inspections WHERE {} ORDER BY sequence"
    lit_quality, dark_quality = (
        [json.loads(q)["brightness"] for (q,) in rows(url, stored.format(where))]
        for where in (f"sequence <= {BOARDS}", f"sequence > {BOARDS}")
    )
    assert len(lit_quality) == len(dark_quality) == BOARDS
    # The same boards in the same order: each one darkened to about 0.35 of its brightness.
    assert all(d < 0.5 * lit for lit, d in zip(lit_quality, dark_quality, strict=True)), (lit_quality, dark_quality)

    [(features, detail)] = rows(url, "SELECT features, detail FROM drift_states")
    psi = {f["feature"]: f for f in json.loads(features)}
    assert psi["brightness"]["level"] == "ALERT" and psi["brightness"]["psi"] >= 0.25, psi
    assert "brightness PSI" in detail
    alert = [s for s in states if s.level == DriftLevel.DRIFT_LEVEL_ALERT]
    assert alert and alert[-1].part.station == "s1" and "brightness" in alert[-1].detail
    assert REGISTRY.get_sample_value("lineguard_drift_level", {"station": "s1"}) == DriftLevel.DRIFT_LEVEL_ALERT
