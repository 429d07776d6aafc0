"""The query API on real SQLite and PostgreSQL databases: filters, pagination, auth, bad input, the CSV export."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, insert, select

from lineguard.config import LineConfig
from lineguard.config.model import ApiSettings
from lineguard.services.results.api.app import create_app
from lineguard.services.results.api.filters import PAGE_SIZE_MAX
from lineguard.services.results.api.tokens import create_token, revoke_token
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.drift import store_selftest, store_state
from lineguard.services.results.records import LineFacts, from_unix_ns
from lineguard.services.results.schema import Inspection, InspectionImage
from lineguard.services.results.store import record_plc_ack, write_decision
from lineguard.testing.postgres import empty_database
from lineguard.testing.records import T0_NS, sample_ack, sample_decision
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.drift_pb2 import DriftLevel, DriftState, SelfTestReport

PARTS = 12
ODD_SERIALS = ("'; DROP TABLE inspections; --", "Ünïcødé-序列-🔧", "100%_LIKE\\_this", 'a"b`c')
START = from_unix_ns(T0_NS).replace(microsecond=0)
DAY = timedelta(days=1)
LINEGUARD = str(Path(sys.executable).with_name("lineguard"))


@dataclass
class Api:
    client: TestClient
    engine: Engine
    url: str
    reader: str
    admin: str
    decisions: list[Any]

    def get(self, path: str, token: str | None = "reader", **params: Any) -> Any:
        headers = {} if token is None else {"Authorization": f"Bearer {getattr(self, token, token)}"}
        return self.client.get(path, params=params, headers=headers)


def _facts(line_config_dict) -> LineFacts:
    raw = line_config_dict()
    next(iter(raw["recipes"].values())).update(product="PCB-A", classes={"spur": {"verdict": "rework"}})
    raw["calendar"] = {
        "timezone": "UTC",
        "shifts": [
            {"name": "day", "start": "06:00", "end": "18:00"},
            {"name": "night", "start": "18:00", "end": "06:00"},
        ],
    }
    return LineFacts.of(LineConfig(**raw))


def _fill(engine: Engine, facts: LineFacts) -> list[Any]:
    """PARTS decisions an hour apart, alternating verdicts, stations and lots, and the odd serials after them."""
    decisions = []
    for i in range(PARTS):
        verdict = (Verdict.VERDICT_PASS, Verdict.VERDICT_FAIL, Verdict.VERDICT_REWORK)[i % 3]
        decision = sample_decision(
            i, verdict=verdict, station=("s1", "s2")[i % 2], serial=f"LG-{i:08d}", triggered_ns=T0_NS + i * 3600 * 10**9
        )
        decision.decided_unix_ns = decision.part.triggered_unix_ns + 50_000_000
        decision.part.lot = f"LOT-{i // 6}"
        decision.model_version = "3" if i < 8 else "4"
        decision.reason_codes[:] = (
            []
            if verdict == Verdict.VERDICT_PASS
            else ["DEFECT_SPUR"] + (["DEFECT_SHORT"] if verdict == Verdict.VERDICT_FAIL else [])
        )
        if verdict == Verdict.VERDICT_FAIL:
            decision.explanation.add(
                verdict=Verdict.VERDICT_FAIL, reason="DEFECT_SHORT", rule="score", text="FAIL: short 0.90 >= 0.50"
            )
        decisions.append(decision)
    for j, serial in enumerate(ODD_SERIALS):
        decisions.append(sample_decision(PARTS + j, serial=serial, triggered_ns=T0_NS + (PARTS + j) * 3600 * 10**9))
    for decision in decisions:
        assert write_decision(engine, decision, facts)
    return decisions


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, line_config_dict) -> Iterator[Api]:
    with empty_database(request.param, tmp_path_factory.mktemp("api")) as url:
        upgrade_database(url)
        engine = make_engine(url)
        decisions = _fill(engine, _facts(line_config_dict))
        reader, admin = create_token(engine, "reader", "mes"), create_token(engine, "admin", "ops")
        with TestClient(create_app(engine, ApiSettings(rate_per_s=1000, burst=1000))) as client:
            yield Api(client, engine, url, reader, admin, decisions)
        engine.dispose()


def serials(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["serial"] for item in response.json()["items"]]


# --- auth


def test_no_token_no_data_and_a_bad_one_is_refused(api: Api) -> None:
    # One character of the secret changed, inside it: the last of 43 base64 characters carries 4 bits of the 32
    # bytes, and a token that already ended in the character put there was the real one (a failure 1 run in 64).
    at = len(api.reader) - 10
    tampered = api.reader[:at] + ("A" if api.reader[at] != "A" else "B") + api.reader[at + 1 :]
    for token in (None, "lgt_000000000000_" + "x" * 43, "not-a-token", tampered):
        response = api.get("/v1/inspections", token=token)
        assert response.status_code == 401, token
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_reader_cannot_reach_admin_routes_an_admin_can(api: Api) -> None:
    refused = api.get("/v1/tokens")
    assert refused.status_code == 403 and "needs an admin token" in refused.json()["detail"]
    listed = api.get("/v1/tokens", token="admin")
    assert listed.status_code == 200
    assert {t["role"] for t in listed.json()} >= {"reader", "admin"}
    assert all(set(t) == {"token_id", "name", "role", "created_at", "revoked_at"} for t in listed.json())


def test_a_revoked_token_is_refused_at_once(api: Api) -> None:
    token = create_token(api.engine, "reader", "short-lived")
    assert api.get("/v1/inspections", token=token).status_code == 200
    assert revoke_token(api.engine, token.split("_")[1])
    assert api.get("/v1/inspections", token=token).status_code == 401


def test_a_token_past_its_rate_is_told_when_to_come_back(api: Api) -> None:
    with TestClient(create_app(api.engine, ApiSettings(rate_per_s=0.2, burst=3))) as client:
        headers = {"Authorization": f"Bearer {api.reader}"}
        codes = [client.get("/v1/inspections", params={"limit": 1}, headers=headers).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/v1/inspections", headers=headers)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another token has a bucket of its own.
        other = {"Authorization": f"Bearer {api.admin}"}
        assert client.get("/v1/inspections", params={"limit": 1}, headers=other).status_code == 200


# --- filters and pages


def test_each_filter_narrows_to_its_parts(api: Api) -> None:
    everything = serials(api.get("/v1/inspections", limit=PAGE_SIZE_MAX))
    assert len(everything) == PARTS + len(ODD_SERIALS)
    assert serials(api.get("/v1/inspections", station="s2")) == [f"LG-{i:08d}" for i in range(1, PARTS, 2)]
    assert serials(api.get("/v1/inspections", verdict="PASS")) == [f"LG-{i:08d}" for i in range(0, PARTS, 3)]
    assert serials(api.get("/v1/inspections", reason="DEFECT_SHORT", lot="LOT-0")) == ["LG-00000001", "LG-00000004"]
    assert serials(api.get("/v1/inspections", lot="LOT-1", verdict="REWORK")) == ["LG-00000008", "LG-00000011"]
    assert len(serials(api.get("/v1/inspections", product="PCB-A"))) == PARTS + len(ODD_SERIALS)
    assert serials(api.get("/v1/inspections", model_version="4", lot="LOT-1")) == [f"LG-{i:08d}" for i in range(8, 12)]
    assert serials(api.get("/v1/inspections", recipe_version="nope")) == []
    # T0 is 20:26 UTC: the first ten hours are the night shift that began on T0's day.
    night = serials(api.get("/v1/inspections", shift="night", lot="LOT-0"))
    assert night == [f"LG-{i:08d}" for i in range(6)]
    window = api.get(
        "/v1/inspections", start=(START + timedelta(hours=2)).isoformat(), end=(START + timedelta(hours=4)).isoformat()
    )
    assert serials(window) == ["LG-00000002", "LG-00000003"]
    assert serials(api.get("/v1/inspections", serial="LG-00000005")) == ["LG-00000005"]


def test_serials_with_sql_metacharacters_and_unicode_are_just_text(api: Api) -> None:
    for serial in ODD_SERIALS:
        assert serials(api.get("/v1/inspections", serial=serial)) == [serial]
        history = api.get("/v1/history", serial=serial)
        assert history.status_code == 200 and history.json()["serial"] == serial
    assert serials(api.get("/v1/inspections", serial="100%")) == []  # no LIKE: % is a character
    with api.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Inspection)).scalar_one() == PARTS + len(ODD_SERIALS)


def test_pages_cover_every_part_once_in_order(api: Api) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/inspections", **params).json()
        seen += [item["inspection_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = [d.part.inspection_id for d in sorted(api.decisions, key=lambda d: d.decided_unix_ns)]
    assert seen == expected and pages == 4


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": PAGE_SIZE_MAX + 1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "lots"}, "limit"),
        ({"colour": "red"}, "colour"),
        ({"start": "2026-05-28T20:00:00"}, "start"),  # no time zone
        ({"start": "9999-12-31T23:59:59+00:00"}, "start"),
        ({"end": "0001-01-01T00:00:00-12:00"}, "end"),
        ({"start": "yesterday"}, "start"),
        ({"verdict": "MAYBE"}, "verdict"),
        ({"reason": "defect short"}, "reason"),
        ({"serial": "x" * 129}, "serial"),
        ({"serial": "LG\x00-1"}, "serial"),
        ({"line": "l1; DROP TABLE inspections"}, "line"),
        ({"start": "2026-05-29T00:00:00Z", "end": "2026-05-28T00:00:00Z"}, "end"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(api: Api, params: dict[str, Any], field: str) -> None:
    response = api.get("/v1/inspections", **params)
    assert response.status_code == 422, response.text
    assert field in response.text


def test_a_station_neither_configured_nor_recorded_is_a_404_naming_it(api: Api, line_config_dict) -> None:
    # The demo line configures s1 alone; s2 has records (a station taken out of the line keeps its history).
    app = create_app(api.engine, ApiSettings(rate_per_s=1000, burst=1000), LineConfig(**line_config_dict()))
    window = {"start": START.isoformat(), "end": (START + DAY).isoformat(), "by": "hour"}
    with TestClient(app, headers={"Authorization": f"Bearer {api.reader}"}) as client:
        for path, params in (("/v1/inspections", {}), ("/v1/yield", window), ("/v1/pareto", window)):
            unknown = client.get(path, params={**params, "station": "s9"})
            assert unknown.status_code == 404, (path, unknown.text)
            assert unknown.json()["detail"] == (
                "station: 's9' is not configured on line 'l1' (configured: s1), nor recorded"
            )
            assert client.get(path, params={**params, "station": "s2"}).status_code == 200
            other = client.get(path, params={**params, "station": "s1", "line": "l2"})
            assert other.status_code == 404
            assert other.json()["detail"] == "station: line 'l2' has no record of station 's1'"
        assert len(client.get("/v1/inspections", params={"station": "s2"}).json()["items"]) == PARTS // 2
    # Without the line's settings nothing is checked: an empty answer, as before.
    assert api.get("/v1/inspections", station="s9").json()["items"] == []


def test_a_cursor_not_from_the_api_is_a_400_naming_it(api: Api) -> None:
    for cursor in ("garbage", "W10", "eyJ4IjoxfQ"):
        response = api.get("/v1/inspections", cursor=cursor)
        assert response.status_code == 400 and response.json()["detail"].startswith("cursor:")


# --- history, aggregates, export


def test_a_parts_history_has_every_inspection_with_why_and_what_judged_it(api: Api) -> None:
    history = api.get("/v1/history", serial="LG-00000001").json()
    (only,) = history["inspections"]
    assert only["verdict"] == "FAIL" and only["reason_codes"] == ["DEFECT_SPUR", "DEFECT_SHORT"]  # as decided
    assert [r["reason_code"] for r in only["reasons"]] == ["DEFECT_SHORT", "DEFECT_SPUR"]
    assert [r["severity"] for r in only["reasons"]] == ["FAIL", "REWORK"]
    assert [d["class_name"] for d in only["defects"]] == ["short", "spur"]
    assert only["codes"][0]["text"] == "LG-00000001"
    assert (only["model_id"], only["model_version"], only["recipe_id"], only["recipe_version"]) == (
        "deeppcb-yolo11n",
        "3",
        "pcb-a",
        "1",
    )
    missing = api.get("/v1/history", serial="LG-99999999")
    assert missing.status_code == 404 and "serial" in missing.json()["detail"]


def test_one_inspection_by_its_id_is_its_whole_record_as_the_history_gives_it(api: Api) -> None:
    decision = api.decisions[1]  # LG-00000001: a FAIL with reasons, defects, a code and an explanation
    inspection_id = decision.part.inspection_id
    assert record_plc_ack(api.engine, sample_ack(decision))
    with api.engine.begin() as conn:
        conn.execute(
            insert(InspectionImage).values(
                inspection_id=inspection_id,
                kind="image",
                uri="file:///archive/one.png",
                content_type="image/png",
                bytes=3,
                sha256="0" * 64,
                width=640,
                height=800,
                stored_at=START,
            )
        )
    found = api.get(f"/v1/inspections/{inspection_id}")
    assert found.status_code == 200, found.text
    record = found.json()
    (in_history,) = api.get("/v1/history", serial="LG-00000001").json()["inspections"]
    assert record == in_history  # one way to build an inspection's JSON
    assert record["inspection_id"] == inspection_id and record["verdict"] == "FAIL"
    assert [r["reason_code"] for r in record["reasons"]] == ["DEFECT_SHORT", "DEFECT_SPUR"]
    assert [d["class_name"] for d in record["defects"]] == ["short", "spur"]
    assert record["codes"][0]["text"] == "LG-00000001"
    assert (record["model_id"], record["recipe_id"]) == ("deeppcb-yolo11n", "pcb-a")
    assert record["plc_verdict"] == "FAIL" and record["plc_delivered_at"] is not None
    assert [e["text"] for e in record["explanation"]] == ["FAIL: short 0.90 >= 0.50"]
    assert [(m["kind"], m["width"], m["href"] is not None) for m in record["images"]] == [("image", 640, True)]
    assert api.get(f"/v1/inspections/{api.decisions[0].part.inspection_id}").json()["explanation"] is None

    assert api.get(f"/v1/inspections/{inspection_id}", token=None).status_code == 401
    unknown = "0190a0b0-0000-7000-8000-000000000000"
    missing = api.get(f"/v1/inspections/{unknown}")
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"inspection_id: no inspection has the id '{unknown}'"
    for malformed in ("nope", "LG-00000001", inspection_id + "0", inspection_id.replace("-", "_")):
        refused = api.get(f"/v1/inspections/{malformed}")
        assert refused.status_code == 422, malformed
        assert refused.json()["detail"][0]["loc"] == ["path", "inspection_id"]


def test_yield_and_pareto_by_hour_shift_and_day(api: Api) -> None:
    window = {"start": START.isoformat(), "end": (START + 2 * DAY).isoformat()}
    hourly = api.get("/v1/yield", by="hour", **window).json()
    assert sum(b["parts"] for b in hourly) == PARTS + len(ODD_SERIALS)
    assert hourly[0]["bucket"] == "2026-05-28T20:00:00Z" and hourly[0]["yield"] == 1.0
    shifts = api.get("/v1/yield", by="shift", station="s1", **window).json()
    # s1's parts: hours 0-9 after 20:26 UTC are the 28th's night shift, hour 10 and the odd serials the 29th's day.
    assert [(b["bucket"], b["shift"], b["parts"]) for b in shifts] == [
        ("2026-05-28", "night", 5),
        ("2026-05-29", "day", 5),
    ]
    daily = api.get("/v1/yield", by="day", **window).json()
    assert {b["bucket"] for b in daily} == {"2026-05-28", "2026-05-29"}
    pareto = api.get("/v1/pareto", by="day", **window).json()
    spur = sum(b["parts"] for b in pareto if b["reason_code"] == "DEFECT_SPUR")
    assert spur == sum(1 for d in api.decisions if "DEFECT_SPUR" in d.reason_codes)
    assert api.get("/v1/pareto", by="week", **window).status_code == 422
    too_long = api.get("/v1/yield", by="hour", start=START.isoformat(), end=(START + 90 * DAY).isoformat())
    assert too_long.status_code == 422 and "end" in too_long.text
    assert api.get("/v1/yield", by="day").status_code == 422  # a range is required


def test_the_csv_export_streams_every_part_of_the_range(api: Api) -> None:
    end = START + 2 * DAY
    with api.client.stream(
        "GET",
        "/v1/export.csv",
        params={"start": START.isoformat(), "end": end.isoformat()},
        headers={"Authorization": f"Bearer {api.reader}"},
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        body = "".join(response.iter_text())
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == PARTS + len(ODD_SERIALS)
    assert rows[0]["serial"] == "LG-00000000" and {r["serial"] for r in rows} >= set(ODD_SERIALS)
    # The times as the JSON routes write them (T0 and 50 ms after), not Python's str() of a datetime.
    assert (rows[0]["triggered_at"], rows[0]["decided_at"]) == (
        "2026-05-28T20:26:40.123456Z",
        "2026-05-28T20:26:40.173456Z",
    )
    for row in rows:
        assert UTC_Z.match(row["decided_at"]) and UTC_Z.match(row["triggered_at"]), row
        assert row["plc_delivered_at"] == "" or UTC_Z.match(row["plc_delivered_at"]), row


# --- timestamps

# lineguard's one printed form of a time (lineguard.timestamps, docs/api.md): UTC, Z, always six fraction digits.
UTC_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def _times(value: Any) -> dict[str, list[str]]:
    """Every non-null `*_at` value in a JSON document, by key."""
    found: dict[str, list[str]] = {}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        if isinstance(key, str) and key.endswith("_at") and item is not None:
            found.setdefault(key, []).append(item)
        for inner, values in _times(item).items():
            found.setdefault(inner, []).extend(values)
    return found


def test_every_time_the_api_writes_is_iso_8601_utc_with_a_z(
    api: Api, monkeypatch: pytest.MonkeyPatch, line_config_dict
) -> None:
    decision = api.decisions[2]
    inspection_id = decision.part.inspection_id
    assert record_plc_ack(api.engine, sample_ack(decision))
    with api.engine.begin() as conn:
        for kind, deleted_at in (("image", None), ("overlay", START + timedelta(hours=1))):
            conn.execute(
                insert(InspectionImage).values(
                    inspection_id=inspection_id,
                    kind=kind,
                    uri=f"file:///archive/{kind}.png",
                    content_type="image/png",
                    bytes=3,
                    sha256="0" * 64,
                    stored_at=START,  # no microseconds: written .000000 all the same
                    deleted_at=deleted_at,
                )
            )
    store_state(
        api.engine,
        DriftState(
            part=Part(station="s1"), level=DriftLevel.DRIFT_LEVEL_OK, baseline="training", computed_unix_ns=T0_NS
        ),
    )
    store_selftest(
        api.engine, SelfTestReport(part=Part(station="s1"), started_unix_ns=T0_NS, finished_unix_ns=T0_NS + 10**9)
    )
    revoked = create_token(api.engine, "reader", "revoked")
    assert revoke_token(api.engine, revoked.split("_")[1])
    confirmed = api.client.post(
        f"/v1/inspections/{inspection_id}/confirmations",
        json={"verdict": "REWORK", "comment": "a spur"},
        headers={"Authorization": f"Bearer {api.admin}"},
    )
    assert confirmed.status_code == 201, confirmed.text

    # A reader whose PostgreSQL session is in the plant's zone gets its times back as +01:00 / +02:00 values.
    monkeypatch.setenv("PGTZ", "Europe/Berlin")
    engine = make_engine(api.url)
    try:
        with TestClient(
            create_app(engine, ApiSettings(rate_per_s=1000, burst=1000)),
            headers={"Authorization": f"Bearer {api.admin}"},
        ) as client:
            documents = [confirmed.json()] + [
                client.get(path, params=params).json()
                for path, params in (
                    ("/v1/inspections", {"serial": "LG-00000002"}),
                    ("/v1/history", {"serial": "LG-00000002"}),
                    (f"/v1/inspections/{inspection_id}", {}),
                    (f"/v1/inspections/{inspection_id}/images", {}),
                    (f"/v1/inspections/{inspection_id}/confirmations", {}),
                    ("/v1/tokens", {}),
                    ("/v1/drift", {}),
                )
            ]
            images = client.get(f"/v1/inspections/{inspection_id}/images").json()
            gone = client.get(f"/v1/images/{images[1]['id']}")
    finally:
        engine.dispose()
    times = _times(documents)
    assert set(times) == {
        "decided_at",
        "triggered_at",
        "plc_delivered_at",
        "stored_at",
        "deleted_at",
        "confirmed_at",
        "created_at",
        "revoked_at",
        "computed_at",
        "started_at",
        "finished_at",
    }
    for key, values in times.items():
        assert all(UTC_Z.match(v) for v in values), (key, values)
    assert set(times["computed_at"]) == {"2026-05-28T20:26:40.123456Z"}  # T0, through plain SQL
    assert set(times["stored_at"]) == {"2026-05-28T20:26:40.000000Z"}
    assert gone.status_code == 410
    assert gone.json()["detail"].endswith("was deleted by retention at 2026-05-28T21:26:40.000000Z")


# --- the command line


def test_lineguard_api_token_create_prints_a_working_reader_token(api: Api) -> None:
    made = subprocess.run(
        [
            str(Path(sys.executable).with_name("lineguard")),
            "api",
            "token",
            "create",
            "--role",
            "reader",
            "--url",
            api.url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("lgt_") and "shown once" in made.stderr
    assert api.get("/v1/inspections", token=token, limit=1).status_code == 200
    assert api.get("/v1/tokens", token=token).status_code == 403
    # The secret is urlsafe base64 and holds "_" at times: split("_")[2] was then a short piece of it, which the
    # stored hash could contain (a CI failure).
    secret = token.split("_", 2)[2]
    assert len(secret) == 43
    with api.engine.connect() as conn:  # only its hash is kept
        assert secret not in str(conn.exec_driver_sql("SELECT * FROM api_tokens").all())
