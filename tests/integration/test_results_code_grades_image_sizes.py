"""What migration 0007 keeps: each code read's print-quality grades, from a real OCR result (the OCR service's own
ocr_frame on a stamped board), and each archived image's width and height; written by the writer and the archive,
asked for by SQL as docs/mes-schema.md gives it, the query API and `lineguard trace`, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text

from lineguard.config import LineConfig
from lineguard.imaging import encode_image
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.stamping import stamp_serial
from lineguard.services.ocr.results import ocr_frame
from lineguard.services.results.api.app import create_app
from lineguard.services.results.api.tokens import create_token
from lineguard.services.results.archive import open_store
from lineguard.services.results.archive.archiver import Archiver
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.records import LineFacts
from lineguard.services.results.schema import Code, InspectionImage
from lineguard.services.results.store import write_decision
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import throwaway_database
from lineguard.testing.records import sample_decision
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.frame_pb2 import Frame

LINEGUARD = str(Path(sys.executable).with_name("lineguard"))
BOARD_PX = 640
STRIP_START = BOARD_PX  # stamp_serial appends the code's strip below the 640 x 640 board
SHIFTS = [
    {"name": "early", "start": "06:00", "end": "14:00"},
    {"name": "late", "start": "14:00", "end": "22:00"},
    {"name": "night", "start": "22:00", "end": "06:00"},
]
HOUR_NS = 3_600_000_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lineguard.db'}"
    else:
        with throwaway_database() as pg:
            yield pg


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    upgrade_database(url)
    made = make_engine(url)
    yield made
    made.dispose()


def line(tmp_path: Path, url: str) -> LineConfig:
    raw = demo_config_dict(nats_url="nats://127.0.0.1:1", database_url=url, opcua_endpoint="opc.tcp://127.0.0.1:4840/")
    raw["archive"] = {"kind": "folder", "path": str(tmp_path / "images")}
    # The samples' parts are triggered at 20:26 UTC, 22:26 in Berlin: the night shift of 2026-05-28.
    raw["calendar"] = {"timezone": "Europe/Berlin", "shifts": SHIFTS}
    return LineConfig(**raw)


def stamped_frame(decision: Decision, contrast: float) -> Frame:
    """The demo board with the part's serial stamped below it as a DataMatrix, the strip's contrast scaled by
    `contrast` around mid-grey: a fading marker, which the grades see as a lower symbol contrast."""
    board = cv2.imread(str(SAMPLE_BOARDS / "13000000_temp.jpg"))
    pixels = stamp_serial(board, decision.serial)
    strip = pixels[STRIP_START:].astype(np.float32)
    pixels[STRIP_START:] = np.clip(128 + (strip - 128) * contrast, 0, 255).astype(np.uint8)
    height, width = pixels.shape[:2]
    return Frame(
        part=decision.part,
        camera_id="cam",
        width=width,
        height=height,
        channels=3,
        encoding="png",
        data=encode_image(pixels, "png"),
    )


def read_part(
    config: LineConfig, sequence: int, serial: str, contrast: float, verdict: Verdict, *, hours_before: int = 0
) -> tuple[Decision, Frame]:
    """A decision whose OCR result is the OCR service's own reading of the part's frame."""
    decision = sample_decision(sequence, serial=serial, verdict=verdict)
    if hours_before:
        decision.part.triggered_unix_ns -= hours_before * HOUR_NS
        decision.decided_unix_ns -= hours_before * HOUR_NS
    if verdict == Verdict.VERDICT_PASS:
        del decision.reason_codes[:]
    frame = stamped_frame(decision, contrast)
    decision.ocr.CopyFrom(ocr_frame(frame, config))
    return decision, frame


def doc_query(name: str, dialect: str) -> str:
    """The SQL block docs/mes-schema.md marks `<!-- query: name dialect -->`, as a person would paste it."""
    doc = (Path(__file__).parents[2] / "docs" / "mes-schema.md").read_text()
    found = re.search(rf"<!-- query: {name} {dialect} -->\s*```sql\n(.*?)```", doc, re.S)
    assert found, f"docs/mes-schema.md has no query {name} for {dialect}"
    return found.group(1)


def test_grades_and_sizes_are_written_queried_and_shown(tmp_path: Path, url: str, engine: Engine) -> None:
    config = line(tmp_path, url)
    faded, faded_frame = read_part(config, 1, "LG-00000021", 0.5, Verdict.VERDICT_FAIL)
    clean, clean_frame = read_part(config, 2, "LG-00000022", 1.0, Verdict.VERDICT_PASS)
    # Graded worse still, but in the late shift before: not "this shift" (the night the line's latest part is in).
    earlier, _ = read_part(config, 3, "LG-00000023", 0.3, Verdict.VERDICT_FAIL, hours_before=3)
    (faded_code,) = faded.ocr.codes
    # The real reading: the faded print grades C on symbol contrast, the clean one A throughout.
    assert (faded_code.text, faded_code.grade, faded_code.quality_grades["symbol_contrast"]) == (
        "LG-00000021",
        "C",
        "C",
    )
    assert (clean.ocr.codes[0].grade, earlier.ocr.codes[0].grade) == ("A", "D")
    for decision in (earlier, faded, clean):
        assert write_decision(engine, decision, LineFacts.of(config))
    archiver = Archiver(engine, open_store(config.archive), config.archive, config)
    assert archiver.archive(faded_frame) == ["image", "overlay"]
    assert archiver.archive(clean_frame) == ["thumbnail"]

    with engine.connect() as conn:
        stored = conn.execute(
            select(Code.grade, Code.quality, Code.quality_grades).where(Code.text == "LG-00000021")
        ).one()
        sizes = {
            r.kind: (r.width, r.height)
            for r in conn.execute(select(InspectionImage.kind, InspectionImage.width, InspectionImage.height))
        }
        shifts = conn.execute(text("SELECT serial, shift FROM inspections ORDER BY serial")).all()
        worse = conn.exec_driver_sql(doc_query("codes-graded-c-or-worse", engine.dialect.name)).all()
    assert stored.grade == "C"
    assert stored.quality_grades == dict(faded_code.quality_grades)
    assert stored.quality["symbol_contrast"] == pytest.approx(faded_code.quality["symbol_contrast"], rel=1e-6)
    frame_size = (faded_frame.width, faded_frame.height)
    thumb = config.archive.thumbnail_px
    assert sizes == {
        "image": frame_size,
        "overlay": frame_size,
        "thumbnail": (round(BOARD_PX * thumb / frame_size[1]), thumb),  # the longest side (the height) fits
    }
    assert [tuple(s) for s in shifts] == [("LG-00000021", "night"), ("LG-00000022", "night"), ("LG-00000023", "late")]
    assert [(w.serial, w.grade, w.text) for w in worse] == [("LG-00000021", "C", "LG-00000021")]
    letters = worse[0].quality_grades  # raw SQL: JSON text on SQLite, decoded by psycopg on PostgreSQL
    assert (json.loads(letters) if isinstance(letters, str) else letters) == dict(faded_code.quality_grades)

    client = TestClient(create_app(engine))
    client.headers["Authorization"] = f"Bearer {create_token(engine, 'reader', 'mes')}"
    history = client.get("/v1/history", params={"serial": "LG-00000021"})
    assert history.status_code == 200, history.text
    (code,) = history.json()["inspections"][0]["codes"]
    assert (code["grade"], code["quality_grades"]) == ("C", dict(faded_code.quality_grades))
    assert set(code["quality"]) == set(faded_code.quality)
    listed = client.get(f"/v1/inspections/{faded.part.inspection_id}/images").json()
    assert [(i["kind"], i["width"], i["height"]) for i in listed] == [
        ("image", *frame_size),
        ("overlay", *frame_size),
    ]
    # The part's history links its images as the listing does, and the link serves the stored bytes.
    assert history.json()["inspections"][0]["images"] == listed
    fetched = client.get(listed[0]["href"])
    assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == listed[0]["sha256"]
    openapi = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"grade", "quality", "quality_grades"} <= set(openapi["CodeOut"]["properties"])
    assert {"width", "height"} <= set(openapi["ImageOut"]["properties"])

    story = trace("LG-00000021", "--url", url, "--json")
    assert story.returncode == 0, story.stderr
    (inspection,) = json.loads(story.stdout)["inspections"]
    assert [(c["text"], c["grade"], c["quality_grades"]["symbol_contrast"]) for c in inspection["codes"]] == [
        ("LG-00000021", "C", "C")
    ]
    assert [(i["kind"], i["width"], i["height"]) for i in inspection["images"]] == [
        ("image", *frame_size),
        ("overlay", *frame_size),
    ]
    table = trace("LG-00000021", "--url", url)
    assert table.returncode == 0, table.stderr
    assert "DataMatrix LG-00000021 grade C (symbol_contrast C)" in table.stdout
    assert f"image {frame_size[0]}x{frame_size[1]} px" in table.stdout
    assert f"overlay {frame_size[0]}x{frame_size[1]} px" in table.stdout
    assert "grade A" in trace("LG-00000022", "--url", url).stdout


def test_trace_of_a_database_before_0007_says_to_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_database(url, "0006")
    old = trace("LG-00000001", "--url", url)
    assert old.returncode == 1 and "before migration 0007" in old.stderr and "lineguard db upgrade" in old.stderr


def trace(*args: str) -> subprocess.CompletedProcess[str]:
    # Wide enough that rich does not fold the table's cells.
    env = {"COLUMNS": "260", "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [LINEGUARD, "trace", *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )
