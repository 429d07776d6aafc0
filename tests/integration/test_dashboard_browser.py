"""The operator dashboard in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium; Playwright's own
download cannot be reached here).

Two servers: the whole line as six processes with the dashboard in the results service (a simulated PLC triggering
parts: the last part, its overlay, the counters moving, a serial search), and the API app on its own over a SQLite
file with hostile records (bad input: stale and forged sessions, SQL and HTML in a search and a serial, a station
that does not exist, a record whose image retention deleted). On the latter, the drift banner after a forced
lighting change (the drift watch judging darkened boards). Screenshots of each view go to $LG_SCREENSHOTS
(docs/images/ for docs/dashboard.md) or the test's tmp folder."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lineguard.config import LineConfig
from lineguard.contracts import now_ns
from lineguard.imagequality import measure
from lineguard.imaging import ROI
from lineguard.localline import LocalLine
from lineguard.natsserver import free_port
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.sources.simulator import simulator_playlist
from lineguard.services.results.api.server import ApiServer
from lineguard.services.results.api.tokens import create_token, revoke_token
from lineguard.services.results.dashboard.live import LiveFeed
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.drift import DriftWatch, store_state
from lineguard.services.results.schema import InspectionImage
from lineguard.services.results.store import write_decision
from lineguard.sim.plc import SimulatedPlc
from lineguard.testing.records import sample_decision
from lineguard.testing.threaded import call_in, serving_in_thread
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.drift_pb2 import DriftLevel
from lineguard.v1.frame_pb2 import Frame

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        os.environ.get("CI") != "true" and not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (apt-get install chromium; CI runs these)",
    ),
]
FULL_HD = {"width": 1920, "height": 1080}
TABLET = {"width": 820, "height": 1180}  # a 10.9" tablet upright, CSS pixels
HOSTILE_SERIAL = '<img src=x onerror="window.__pwned=1">'
# The drift watch judges one round of the simulator's boards (the training set the baseline is taken from).
BOARDS = simulator_playlist(SAMPLE_BOARDS)
DRIFT = {"window": len(BOARDS), "min_samples": len(BOARDS)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("LG_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/dashboard")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")


def wait_until(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s"
        time.sleep(0.2)


def row_of(engine: sa.Engine, inspection_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT verdict, serial FROM inspections WHERE inspection_id = :i"), {"i": inspection_id}
        ).first()


def triggers(page: Any) -> int:
    """The line's triggers today, as the counters panel shows them now."""
    return int(page.locator("#counters td[data-counter=triggers]").last.inner_text())


def on_own_thread(work: Any) -> None:
    """Run `work` (which may asyncio.run) off this thread, where Playwright's sync API keeps an event loop."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - raised again here
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


# --- the whole line ---------------------------------------------------------------------------------------------


@dataclass
class RunningLine:
    line: LocalLine
    base: str
    token: str
    engine: sa.Engine


@pytest.fixture(scope="module")
def running_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLine]:
    port = free_port()
    line = LocalLine(
        workdir=tmp_path_factory.mktemp("line"),
        deadline_ms=10_000,
        config_overrides={"api": {"enabled": True, "host": "127.0.0.1", "port": port}},
    )
    on_own_thread(line.start)
    engine = make_engine(f"sqlite:///{line.database_path}")
    stop = threading.Event()

    def drive() -> None:
        # Parts at 2 a second, a few at a time, until the test is done: the line is never stopped under the PLC.
        async def parts() -> None:
            async with SimulatedPlc(line.opcua_endpoint, station="s1") as plc:
                while not stop.is_set():
                    await plc.run(4, rate_hz=2.0, result_timeout_s=60)

        asyncio.run(parts())

    plc = threading.Thread(target=drive, daemon=True)
    try:
        token = create_token(engine, "reader", "line-side screen")
        plc.start()
        yield RunningLine(line, f"http://127.0.0.1:{port}", token, engine)
    finally:
        stop.set()
        plc.join(90)
        on_own_thread(line.stop)
        engine.dispose()


def test_the_page_follows_a_running_line(browser: Any, running_line: RunningLine, screenshots: Path) -> None:
    page = browser.new_page(viewport=FULL_HD)
    sign_in(page, running_line.base, running_line.token)
    tile = page.locator("#tile-s1")
    # The tile shows the last part: its verdict, serial and link to the record, swapped in live (no reload).
    # (Waits poll from Python: the page's CSP allows no eval, which Playwright's wait_for_function needs.)
    expect(tile.locator(".verdict")).to_be_visible(timeout=60_000)
    first = tile.locator("a.inspection-link").get_attribute("href")
    assert first is not None
    expect(tile.locator("a.inspection-link")).not_to_have_attribute("href", first, timeout=30_000)
    shown_id = tile.locator("a.inspection-link").get_attribute("href").rsplit("/", 1)[1]
    # The live view shows a decision as it goes by; its row is written by the same process a moment later.
    wait_until(lambda: row_of(running_line.engine, shown_id) is not None, 20)
    row = row_of(running_line.engine, shown_id)
    with running_line.engine.connect() as conn:
        boxes = conn.execute(sa.text("SELECT count(*) FROM defects WHERE inspection_id = :i"), {"i": shown_id}).scalar()
    shown = page.locator("#tile-s1")
    assert shown.locator(".verdict").inner_text() == row.verdict
    assert shown.locator(".serial").inner_text() == (row.serial or "no serial read")
    # The overlay: the frame from the side subscription, one box per detection the row holds, coloured by verdict.
    assert shown.locator("svg rect.box").count() == boxes
    assert f"verdict-{row.verdict.lower()}" in (shown.locator("figure.overlay").get_attribute("class") or "")
    href = shown.locator("svg image").get_attribute("href")
    image = page.request.get(f"{running_line.base}{href}")
    assert image.status == 200 and image.headers["content-type"].startswith("image/")

    # The counters move while the line runs, without a reload.
    before = triggers(page)
    wait_until(lambda: triggers(page) > before, 30)
    page.wait_for_selector("#health li[data-service=inference] .state:text('ok')", timeout=30_000)
    page.wait_for_selector("#chart-hour", state="attached")
    page.wait_for_timeout(1500)  # the tile's newest frame loaded and the charts drawn, for the picture only
    page.screenshot(path=str(screenshots / "dashboard-overview-1920x1080.png"))

    tablet = browser.new_page(viewport=TABLET)
    sign_in(tablet, running_line.base, running_line.token)
    tablet.wait_for_selector("#tile-s1 .verdict")
    tablet.screenshot(path=str(screenshots / "dashboard-overview-tablet.png"), full_page=True)
    tablet.close()

    # A serial search: the part's history, each row linking to its record with the explanation.
    with running_line.engine.connect() as conn:
        serial, inspection_id = conn.execute(
            sa.text(
                "SELECT serial, inspection_id FROM inspections WHERE serial IS NOT NULL ORDER BY decided_at LIMIT 1"
            )
        ).one()
    page.fill("header input[name=q]", serial)
    page.press("header input[name=q]", "Enter")
    page.wait_for_selector("#search-count")
    assert page.locator("table.history tbody tr").count() >= 1
    assert serial in page.locator("table.history").inner_text()
    page.screenshot(path=str(screenshots / "dashboard-search.png"))
    page.click(f"a[href='/dashboard/inspections/{inspection_id}']")
    page.wait_for_selector("#record-verdict")
    assert page.locator("#explanation").count() == 1
    page.screenshot(path=str(screenshots / "dashboard-record.png"), full_page=True)
    page.goto(f"{running_line.base}/dashboard/stations/s1")
    page.wait_for_selector("#tile-s1 .verdict")
    page.screenshot(path=str(screenshots / "dashboard-station.png"))
    page.close()


# --- bad input --------------------------------------------------------------------------------------------------


@dataclass
class Served:
    base: str
    engine: sa.Engine
    feed: LiveFeed
    loop: asyncio.AbstractEventLoop
    ids: dict[str, str]
    config: LineConfig


def png(width: int, height: int) -> bytes:
    board = np.full((height, width, 3), (40, 90, 40), np.uint8)
    cv2.rectangle(board, (60, 60), (width - 60, height - 60), (60, 160, 200), 4)
    return cv2.imencode(".png", board)[1].tobytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, line_config_dict: Any) -> Iterator[Served]:
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'lineguard.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    now = now_ns()
    good = sample_decision(1, serial="LG-00000042", triggered_ns=now - 60_000_000_000)
    hostile = sample_decision(2, serial=HOSTILE_SERIAL, triggered_ns=now - 40_000_000_000)
    retained = sample_decision(3, verdict=Verdict.VERDICT_FAIL, serial="LG-00000043", triggered_ns=now - 20_000_000_000)
    for decision in (good, hostile, retained):
        write_decision(engine, decision)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(InspectionImage).values(
                inspection_id=retained.part.inspection_id,
                kind="image",
                uri="file:///archive/l1/s1/gone.png",
                content_type="image/png",
                bytes=1234,
                sha256="0" * 64,
                stored_at=datetime(2026, 1, 1, tzinfo=UTC),
                deleted_at=datetime.now(UTC),
            )
        )
    config = LineConfig(**line_config_dict(database_url=url, api={"enabled": True, "port": free_port()}, drift=DRIFT))
    server = ApiServer(engine, config.api, config)
    assert server.feed is not None
    with serving_in_thread(server) as loop:
        frame = Frame(part=good.part, width=640, height=800, encoding="png", data=png(640, 800))
        call_in(loop, lambda: server.feed.on_frame(frame))
        call_in(loop, lambda: server.feed.on_decision(good))
        ids = {"good": good.part.inspection_id, "hostile": hostile.part.inspection_id}
        ids["retained"] = retained.part.inspection_id
        yield Served(f"http://127.0.0.1:{server.port}", engine, server.feed, loop, ids, config)
    engine.dispose()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=FULL_HD)
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:  # an alert() from injected script would land here
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.dialogs = dialogs
    yield page
    context.close()


def test_a_wrong_token_is_refused_with_the_reason(page: Any, served: Served) -> None:
    page.goto(f"{served.base}/dashboard")
    assert page.locator("#token").is_visible()
    page.fill("#token", "lgt_000000000000_" + "A" * 43)
    page.click("button[type=submit]")
    assert "that token is not valid" in page.locator("#login-reason").inner_text()
    assert page.context.cookies() == []


def test_a_forged_session_cookie_signs_no_one_in(page: Any, served: Served) -> None:
    token = create_token(served.engine, "reader", "forger")
    token_id = token.split("_")[1]
    page.context.add_cookies(
        [{"name": "lg_session", "value": f"{token_id}.9999999999.{'0' * 64}", "url": f"{served.base}/dashboard"}]
    )
    response = page.goto(f"{served.base}/dashboard")
    assert response.status == 401
    assert "not one this dashboard made" in page.locator("#login-reason").inner_text()


def test_a_revoked_token_ends_its_session_at_the_next_page(page: Any, served: Served, screenshots: Path) -> None:
    token = create_token(served.engine, "quality", "shift lead")
    sign_in(page, served.base, token)
    assert page.locator("#tile-s1").count() == 1
    cookie = next(c for c in page.context.cookies() if c["name"] == "lg_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert token not in cookie["value"], "the cookie names the token, never holds it"
    revoke_token(served.engine, token.split("_")[1])
    response = page.reload()
    assert response.status == 401
    assert "revoked" in page.locator("#login-reason").inner_text()
    page.screenshot(path=str(screenshots / "dashboard-login-revoked.png"))


def test_sql_in_a_search_is_a_serial_like_any_other(page: Any, served: Served) -> None:
    sign_in(page, served.base, create_token(served.engine, "reader", "sql"))
    with served.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM inspections")).scalar()
    for attempt in ("' OR '1'='1", "LG-00000042' --", "x'; DROP TABLE inspections; --"):
        page.goto(f"{served.base}/dashboard")
        page.fill("header input[name=q]", attempt)
        page.press("header input[name=q]", "Enter")
        page.wait_for_selector("#search-empty")
        assert page.locator("#search-empty .query").inner_text() == attempt
    with served.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM inspections")).scalar() == rows


def test_html_in_a_search_or_a_serial_is_shown_as_text_and_never_runs(
    page: Any, served: Served, screenshots: Path
) -> None:
    sign_in(page, served.base, create_token(served.engine, "reader", "xss"))
    attempt = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
    page.fill("header input[name=q]", attempt)
    page.press("header input[name=q]", "Enter")
    page.wait_for_selector("#search-empty")
    assert page.locator("#search-empty .query").inner_text() == attempt
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(screenshots / "dashboard-search-html.png"))
    # A serial read off a part that holds HTML: a text in the gallery, its search, its record.
    page.goto(f"{served.base}/dashboard")
    gallery = page.locator(f"#failures a[data-inspection='{served.ids['hostile']}'] .caption")
    assert HOSTILE_SERIAL in gallery.inner_text()
    page.goto(f"{served.base}/dashboard/search?q={urllib.parse.quote(HOSTILE_SERIAL)}")
    assert page.locator("#search-count").is_visible()
    page.goto(f"{served.base}/dashboard/inspections/{served.ids['hostile']}")
    assert HOSTILE_SERIAL in page.locator("h1").inner_text()
    assert page.evaluate("window.__pwned") is None and page.dialogs == []


def test_a_station_that_does_not_exist_is_named_with_the_ones_that_do(page: Any, served: Served) -> None:
    sign_in(page, served.base, create_token(served.engine, "reader", "nope"))
    response = page.goto(f"{served.base}/dashboard/stations/s9")
    assert response.status == 404
    assert page.locator("#problem").inner_text() == "there is no station 's9' on line l1 (stations: s1)"
    response = page.goto(f"{served.base}/dashboard/inspections/not-an-inspection")
    assert response.status == 404 and "no inspection 'not-an-inspection'" in page.locator("#problem").inner_text()
    page.goto(f"{served.base}/dashboard")  # and the dashboard still serves
    assert page.locator("#tile-s1 .verdict").count() == 1


def test_a_record_whose_image_retention_deleted_says_so(page: Any, served: Served, screenshots: Path) -> None:
    sign_in(page, served.base, create_token(served.engine, "reader", "retention"))
    page.goto(f"{served.base}/dashboard/inspections/{served.ids['retained']}")
    assert "image deleted by retention" in page.locator("figure.overlay .no-image").inner_text()
    assert "image deleted by retention" in page.locator("#images").inner_text()
    assert page.locator("#explanation li").count() == 2  # the record itself is whole
    page.screenshot(path=str(screenshots / "dashboard-record-image-deleted.png"), full_page=True)
    image = page.request.get(f"{served.base}/dashboard/images/{served.ids['retained']}")
    assert image.status == 410 and image.text() == "image deleted by retention"
    page.goto(f"{served.base}/dashboard")
    kept = page.locator(f"#failures a[data-inspection='{served.ids['good']}'] svg image")
    assert kept.count() == 1  # the live frame the side subscription holds is shown
    gone = page.locator(f"#failures a[data-inspection='{served.ids['retained']}'] .no-image")
    assert "image deleted by retention" in gone.inner_text()


# --- drift ------------------------------------------------------------------------------------------------------


def judged_boards(served: Served, gain: float) -> DriftLevel:
    """The drift watch's state of s1 after one round of the boards as the camera sees them with the lights at
    `gain` (measured within the recipe's inspect_roi, as capture measures a frame), stored as the watch stores it."""
    watch = DriftWatch(served.config, served.engine)
    roi = ROI.from_list(served.config.recipes[served.config.station("s1").recipe].inspect_roi)
    for sequence, path in enumerate(BOARDS, start=1):
        pixels = cv2.convertScaleAbs(cv2.imread(str(path)), alpha=gain)
        decision = sample_decision(sequence, triggered_ns=now_ns())
        decision.inference.image_quality.CopyFrom(measure(roi.crop(pixels) if roi else pixels).to_proto())
        watch.observe(decision)
    state = watch.state("s1")
    store_state(served.engine, state)
    return state.level


def test_a_lighting_change_shows_the_drift_banner_until_the_state_is_ok(
    page: Any, served: Served, screenshots: Path
) -> None:
    sign_in(page, served.base, create_token(served.engine, "reader", "drift"))
    banner = page.locator("#drift-banner")
    expect(banner).to_be_hidden()
    assert judged_boards(served, gain=0.35) == DriftLevel.DRIFT_LEVEL_ALERT  # the lights dimmed
    # No reload: the page's own refresh of the drift panel brings the banner (out of band) and the panel's rows.
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner.locator("p[data-station=s1]")).to_have_attribute("data-level", "ALERT")
    expect(banner).to_contain_text("Drift ALERT at s1")
    assert "brightness" in banner.inner_text()  # the detail names the feature that moved
    expect(page.locator("#drift tbody[data-station=s1] [data-level]")).to_have_text("ALERT")
    page.screenshot(path=str(screenshots / "dashboard-drift.png"))
    page.reload()  # a fresh page shows it too, from the overview itself
    expect(banner).to_be_visible()
    assert judged_boards(served, gain=1.0) == DriftLevel.DRIFT_LEVEL_OK  # the lights back as trained
    expect(banner).to_be_hidden(timeout=10_000)
    expect(page.locator("#drift tbody[data-station=s1] [data-level]")).to_have_text("OK")
