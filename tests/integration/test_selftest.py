"""Golden-part self-tests on a running line (the six services, a real nats-server and SQLite): `lineguard selftest`'s
request, each golden image judged through capture, inference, ocr and decision, flagged simulated; none of them is
ever a production record, and a changed outcome raises the station's drift alert."""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from lineguard.cli.drift import request_selftest
from lineguard.config import LineConfig
from lineguard.natsserver import free_port
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.service import setup as capture_setup
from lineguard.services.capture.stamping import stamp_serial
from lineguard.services.decision.service import setup as decision_setup
from lineguard.services.gateway.service import setup as gateway_setup
from lineguard.services.inference.service import setup as inference_setup
from lineguard.services.ocr.service import setup as ocr_setup
from lineguard.services.results.db import upgrade_database
from lineguard.services.results.service import setup as results_setup
from lineguard.testing import running_service
from lineguard.testing.sql import rows
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Verdict


def golden(folder: Path, board: str) -> str:
    """A sample board as the camera shows it, serial label and all: a stored golden image."""
    path = folder / f"{Path(board).stem}.png"
    cv2.imwrite(str(path), stamp_serial(cv2.imread(str(SAMPLE_BOARDS / board)), "LG-00000001"))
    return str(path)


async def test_golden_parts_are_judged_live_never_recorded_and_a_changed_outcome_alerts(
    fresh_nats, line_config_dict, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'mes.db'}"
    upgrade_database(url)
    good = golden(tmp_path, "00041000_temp.jpg")
    bad = golden(tmp_path, "00041000_test.jpg")
    reference = str(SAMPLE_BOARDS / "00041000_temp.jpg")
    cases = [
        {"name": "good", "image": good, "reference": reference, "expect": "PASS"},
        {"name": "defects", "image": bad, "reference": reference, "expect": "FAIL", "reasons": ["DEFECT_SPUR"]},
    ]
    raw = line_config_dict(
        nats_url=fresh_nats.url,
        database_url=url,
        opcua_endpoint=f"opc.tcp://127.0.0.1:{free_port()}/lineguard/",
        deadline_ms=20_000,
        drift={"publish_s": 0.5},
    )
    s1 = {**raw["stations"][0], "selftest": {"cases": cases, "interval_s": 0}}
    # s2's good part is expected to fail: the same images, an outcome that is not the one expected.
    s2 = {**s1, "id": "s2", "selftest": {"cases": [{**cases[0], "expect": "FAIL"}], "interval_s": 0}}
    config = LineConfig(**{**raw, "stations": [s1, s2]})
    async with (
        running_service("capture", config, capture_setup),
        running_service("inference", config, inference_setup),
        running_service("ocr", config, ocr_setup),
        running_service("decision", config, decision_setup),
        running_service("results", config, results_setup),
        running_service("gateway", config, gateway_setup),
    ):
        report = await request_selftest(config.nats, "l1", "s1", timeout_s=60)
        changed = await request_selftest(config.nats, "l1", "s2", timeout_s=60)
        await wait_for(lambda: rows(url, "SELECT 1 FROM drift_states WHERE station = 's2' AND level = 'ALERT'"), 15)
        await wait_for(lambda: len(rows(url, "SELECT 1 FROM selftest_runs")) == 2, 15)

    verdicts = {c.name: (c.verdict, c.changed) for c in report.cases}
    assert verdicts == {"good": (Verdict.VERDICT_PASS, False), "defects": (Verdict.VERDICT_FAIL, False)}, report
    assert not report.changed
    assert changed.changed and changed.cases[0].verdict == Verdict.VERDICT_PASS
    # Never production records: no inspection row of any golden part, nor any other.
    golden_ids = {c.inspection_id for c in (*report.cases, *changed.cases)}
    assert all(golden_ids) and len(golden_ids) == 3
    assert rows(url, "SELECT inspection_id FROM inspections") == []
    [(level, selftest)] = rows(url, "SELECT level, selftest FROM drift_states WHERE station = 's2'")
    assert level == "ALERT" and "self-test good: PASS" in selftest and "expected FAIL" in selftest
    [(s1_level,)] = rows(url, "SELECT level FROM drift_states WHERE station = 's1'")
    assert s1_level == "OK"
    runs = {
        station: (bool(changed_flag), json.loads(cases_json))
        for station, changed_flag, cases_json in rows(url, "SELECT station, changed, cases FROM selftest_runs")
    }
    assert runs["s1"][0] is False and runs["s2"][0] is True
